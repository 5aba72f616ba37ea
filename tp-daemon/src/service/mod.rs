//! The TP's request handling, independent of sockets: one decoded
//! [`Request`] in, one [`Response`] out. The rules themselves live in the
//! decision core, `vtp_protocol::decide`; this module keeps the locks, the
//! pools, the journal and the metrics around it. One file per request kind:
//! `claim.rs` (Bob's claim and its device-thread job), `unclaimed.rs`,
//! `receipts.rs`; a new role adds its own file here.
//!
//! A claim: authenticate (`Claim::authenticate`) → take the per-z lock →
//! look up what the journal holds about this z under this header
//! (`Journal::recorded`) → the decision core answers from the journal,
//! refuses, or hands back a `ResolvableClaim` (deadline checked last, on a
//! clock read after any waiting) → resolve in the token → commit to the
//! journal → release. Nothing leaves the daemon that is not committed, and a
//! failure before the commit leaves nothing behind, so the claim can be
//! retried. An unclaimed request goes the same way with
//! `AuthenticUnclaimed::decide` and a `CertifiableUnclaimed`.
//!
//! "Resolve in the token → commit" in detail (see [`crate::journal::writer`]): after
//! authentication and the per-z lock, everything blocking (the journal
//! lookup, the token) runs as one job on the device threads
//! ([`crate::service::device_pool`]: one per CPU by default, claims served in arrival
//! order); the device decrypts and checks ([`TrustedParty::decide`], the
//! expensive RSA half, one claim per device thread); the sequencer assigns the next journal
//! chain position and the device signs the affidavit at it
//! ([`TrustedParty::sign_decision`], one at a time); the record is queued
//! for the single journal writer, which commits queued records in batches
//! (group commit); only then does the claim get its answer. A device error
//! or a failed batch answers `Unavailable`: nothing was released, nothing
//! (or, for a failed batch, nothing that will be served) was recorded, and
//! the client retries.
//!
//! Labelled test fault points (see [`crate::faults`]): `after-sign` (in the
//! sequencer), `after-commit` (in the writer), `before-reply` (here).

mod claim;
pub mod commit_hold;
pub mod device_pool;
mod receipts;
pub mod single_flight;
mod unclaimed;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::warn;
use vtp_device::{DeviceError, TrustedParty};
use vtp_protocol::decide::Refusal;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, ErrorCode, Request, Response, WireError};
use vtp_protocol::{Digest32, ProtocolError};

use crate::clock::{rfc3339, Clock};
use crate::journal::keyring::KeyRing;
use crate::journal::writer::{AppendError, CommitError, Writer};
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::service::commit_hold::OpTime;
use crate::service::device_pool::DevicePool;
use crate::service::single_flight::SingleFlight;

/// What a configuration reload (SIGHUP) replaces: the TP with its card, the
/// key ring it was built from, and the subscription policy.
pub struct Live {
    pub tp: Arc<TrustedParty>,
    pub ring: KeyRing,
    pub require_subscription: bool,
}

/// Shared state of the daemon. Cheap to share behind an `Arc`.
pub struct Service {
    live: RwLock<Arc<Live>>,
    journal: Journal,
    writer: Arc<Writer>,
    clock: Clock,
    flights: SingleFlight<Digest32>,
    metrics: Arc<Metrics>,
    /// Where claims' blocking work runs (see [`crate::service::device_pool`]).
    pool: DevicePool,
    /// How long the device's operations take (sets the commit hold).
    op_time: Arc<OpTime>,
}

/// First 16 hex digits of a hash: enough to find it in logs.
fn short(d: &Digest32) -> String {
    d.to_hex()[..16].to_owned()
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(WireError {
        code,
        message: message.into(),
    })
}

/// A protocol check failed: tell the client which, in the protocol's words.
pub fn protocol_refusal(e: &ProtocolError) -> Response {
    refuse(e.wire_code(), e.to_string())
}

/// The decision core said no: its code and one line, times in RFC 3339.
fn decided_refusal(r: &Refusal) -> Response {
    refuse(r.code(), r.message(rfc3339))
}

/// The token failed: nothing was released or recorded; the client may retry.
/// The device's message goes to the operator's log only.
fn device_refusal(z: &Digest32, e: &DeviceError) -> Response {
    if let DeviceError::KeyNotFound { id_hex, .. } = e {
        warn!(z = %short(z), key = %id_hex, "refused: unknown or retired TP key");
        return refuse(
            ErrorCode::UnknownKey,
            format!("the TP no longer holds (or never held) encryption key {id_hex}"),
        );
    }
    warn!(z = %short(z), error = %e, "device failure; nothing released, client may retry");
    refuse(
        ErrorCode::Unavailable,
        "the TP's secure device failed; nothing was released or recorded: retry later",
    )
}

/// The record's batch was not committed: nothing was released.
fn commit_refusal(z: &Digest32, e: &CommitError) -> Response {
    warn!(z = %short(z), error = %e, "journal commit failed; nothing released, client may retry");
    refuse(
        ErrorCode::Unavailable,
        "the TP could not record its answer in its journal; nothing was released: retry later",
    )
}

/// The sequencer refused (device error while signing, writer stopped).
fn append_refusal(z: &Digest32, e: AppendError<DeviceError>) -> Response {
    match e {
        AppendError::Make(e) => device_refusal(z, &e),
        AppendError::Stopped => {
            warn!(z = %short(z), "journal writer stopped (shutting down); nothing released");
            refuse(
                ErrorCode::Unavailable,
                "the TP is shutting down; nothing was released: retry later",
            )
        }
        AppendError::Misplaced(why) => {
            warn!(z = %short(z), error = %why, "sequencer refused a record; nothing released");
            refuse(
                ErrorCode::Unavailable,
                "the TP failed while recording; nothing was released: retry",
            )
        }
    }
}

fn journal_refusal(z: &Digest32, e: &JournalError) -> Response {
    warn!(z = %short(z), error = %e, "journal failure; nothing released, client may retry");
    refuse(
        ErrorCode::Unavailable,
        "the TP could not read or record its journal; nothing was released: retry later",
    )
}

fn outcome_name(o: &ClaimOutcome) -> &'static str {
    match o {
        ClaimOutcome::Resolved { .. } => "resolved",
        ClaimOutcome::InvalidEnvelope { .. } => "invalid-envelope",
    }
}

/// The metrics name of a request.
pub fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::GetCard => "card",
        Request::Claim(_) => "claim",
        Request::Unclaimed(_) => "unclaimed",
        Request::FetchReceipts(_) => "receipts",
    }
}

impl Service {
    /// Record the card being served (for `journal verify`) and start the
    /// journal writer (blocking; call before or outside the runtime). Claims
    /// run their blocking work on `pool`; while claims wait for it, the
    /// writer holds a batch open for about two device operations, at most
    /// `commit_delay` (group commit, [`commit_hold`]; zero: never).
    pub fn new(
        live: Live,
        journal: Journal,
        clock: Clock,
        metrics: Arc<Metrics>,
        pool: DevicePool,
        commit_delay: Duration,
    ) -> Result<Service, JournalError> {
        journal.record_card(live.tp.card(), clock.now())?;
        let writer = Arc::new(Writer::start(&journal, Arc::clone(&metrics))?);
        let op_time = OpTime::new();
        writer.hold_batches(commit_hold::probe(
            commit_delay,
            Arc::clone(&op_time),
            pool.backlog_probe(),
        ));
        metrics.serving_card(
            live.tp.card().id().0.to_hex(),
            live.tp.card().body().current_key.to_string(),
        );
        Ok(Service {
            live: RwLock::new(Arc::new(live)),
            journal,
            writer,
            clock,
            flights: SingleFlight::new(),
            metrics,
            pool,
            op_time,
        })
    }

    /// Finish the device jobs already queued, commit what is queued and
    /// stop the journal writer (after the server drained). Blocking. Later
    /// claims are answered `Unavailable`.
    pub fn shutdown(&self) {
        self.pool.shutdown();
        self.writer.shutdown();
    }

    /// The journal's sequencer and writer.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The TP, card and key ring being served now.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serve a new card / key ring / policy from now on (SIGHUP). Requests
    /// already running finish with the state they started with.
    pub fn replace_live(&self, live: Live) {
        if let Err(e) = self.journal.record_card(live.tp.card(), self.clock.now()) {
            warn!(error = %e, "cannot record the new TP card in the journal (journal verify needs it)");
        }
        self.metrics.serving_card(
            live.tp.card().id().0.to_hex(),
            live.tp.card().body().current_key.to_string(),
        );
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// The card being served now.
    pub fn card(&self) -> TpCard {
        self.live().tp.card().clone()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answer one request.
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::GetCard => Response::Card(self.card()),
            Request::Claim(claim) => self.claim(claim).await,
            Request::Unclaimed(req) => self.unclaimed(req).await,
            Request::FetchReceipts(req) => self.fetch_receipts(req).await,
        }
    }
}
