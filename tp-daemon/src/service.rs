//! The TP's request handling, independent of sockets: one decoded
//! [`Request`] in, one [`Response`] out. The rules themselves live in the
//! decision core, `vtp_protocol::decide`; this module keeps the locks, the
//! pools, the journal and the metrics around it.
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
//! "Resolve in the token → commit" in detail (see [`crate::writer`]): after
//! authentication and the per-z lock, everything blocking (the journal
//! lookup, the token) runs as one job on the device threads
//! ([`crate::device_pool`]: one per CPU by default, claims served in arrival
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

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vtp_device::{DeviceError, TrustedParty};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::{AuthenticClaim, Claim};
use vtp_protocol::decide::{
    ClaimContext, ClaimDecision, KeyStatus, Refusal, Subject, Subscription, UnclaimedDecision,
};
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    ClaimOutcome, ErrorCode, FetchRequest, Request, Response, UnclaimedRequest, WireError,
};
use vtp_protocol::{Digest32, ProtocolError};

use crate::chain::JournalRecord;
use crate::clock::{rfc3339, Clock};
use crate::device_pool::{DevicePool, PoolStopped};
use crate::faults;
use crate::journal::{Journal, JournalError};
use crate::keyring::{KeyRing, KeyState};
use crate::metrics::Metrics;
use crate::single_flight::SingleFlight;
use crate::writer::{AppendError, CommitError, Ticket, Writer};

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
    /// Where claims' blocking work runs (see [`crate::device_pool`]).
    pool: DevicePool,
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
    /// writer holds a batch open for up to `commit_delay` (group commit;
    /// zero: never).
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
        writer.hold_batches(commit_delay, pool.backlog_probe());
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

    async fn claim(&self, claim: Claim) -> Response {
        self.metrics.claim();
        let live = self.live();
        // With a group of trustees, this TP handles its own slot's z only.
        let header = &claim.body.envelope.header;
        let Some(slot) = header.slot_of(&live.tp.card().id()) else {
            info!("claim refused: the envelope does not name this TP");
            return protocol_refusal(&ProtocolError::Mismatch {
                what: "envelope",
                detail: "it is addressed to another TP than this one".into(),
            });
        };
        let z = header.trustees[slot].z_hash;
        let key = header.trustees[slot].key_id;
        let requested = claim.body.requested;
        // Which card authenticates the claim, and the state of its key.
        let (card, key_status) = match live.ring.get(key) {
            Some(k) if k.state == KeyState::Retired => {
                let at = k.retired_at.unwrap_or(0);
                // The envelope carries the card it was made with; if it is
                // this TP's card (same signing key, self-signed), it
                // authenticates the claim as well as the current card would.
                match claim
                    .body
                    .envelope
                    .tp_cards
                    .iter()
                    .find(|c| c.id() == live.tp.card().id())
                {
                    Some(embedded) => (embedded, KeyStatus::Retired { at }),
                    None => {
                        info!(z = %short(&z), key = %key, "claim refused: the envelope's TP key is retired");
                        return decided_refusal(&Refusal::RetiredKey { key, at });
                    }
                }
            }
            Some(_) => (live.tp.card(), KeyStatus::Held),
            None if live.tp.card().key(key).is_err() => {
                info!(z = %short(&z), key = %key, "claim refused: unknown TP key");
                return refuse(
                    ErrorCode::UnknownKey,
                    format!(
                        "the TP has no encryption key {key}; envelopes must be made with the TP's \
                         current card (fetch it again)"
                    ),
                );
            }
            None => (live.tp.card(), KeyStatus::Held),
        };
        let authentic = match claim.authenticate(card, self.clock.now()) {
            Ok(c) => c,
            Err(e) => {
                info!(z = %short(&z), error = %e, "claim refused: not authentic");
                return match key_status {
                    KeyStatus::Retired { at } => decided_refusal(&Refusal::RetiredKey { key, at }),
                    KeyStatus::Held => protocol_refusal(&e),
                };
            }
        };
        let subject = authentic.subject();
        info!(z = %short(&z), envelope = %short(&subject.envelope_id), requested, "claim received");

        let _flight = self.flights.lock(z).await;

        // Everything from here to the queued record is blocking work (the
        // journal, the token) and runs as one job on the device threads.
        let job = ClaimJob {
            live: Arc::clone(&live),
            journal: self.journal.clone(),
            writer: Arc::clone(&self.writer),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
            subject,
            key: key_status,
        };
        let ticket = match self.pool.run(move || job.run(authentic)).await {
            Ok(Step::Answer(r)) => return r,
            Ok(Step::Queued(t)) => t,
            Err(PoolStopped) => {
                warn!(z = %short(&z), "resolve job failed or the daemon is stopping; nothing released");
                return refuse(
                    ErrorCode::Unavailable,
                    "the TP failed while resolving; nothing was released: retry",
                );
            }
        };

        // Commit before release: an answer only ever leaves after its record.
        let seq = ticket.position().seq;
        let started = Instant::now();
        let committed = ticket.committed().await;
        self.metrics.journal_commit(started.elapsed());
        match committed {
            Ok(JournalRecord::Claim { outcome, .. }) => {
                self.metrics.resolution(outcome_name(&outcome), false);
                info!(z = %short(&z), outcome = outcome_name(&outcome), seq, "claim resolved and recorded");
                // TEST HOOK: crash point `before-reply`.
                faults::point(faults::Point::BeforeReply);
                Response::Claim(outcome)
            }
            Ok(JournalRecord::Unclaimed { .. }) => {
                unreachable!("a claim's ticket holds its claim record")
            }
            Err(e) => commit_refusal(&z, &e),
        }
    }

    async fn unclaimed(&self, req: UnclaimedRequest) -> Response {
        let live = self.live();
        let authentic = match req.authenticate(live.tp.card(), self.clock.now()) {
            Ok(a) => a,
            Err(e) => {
                info!(error = %e, "unclaimed request refused");
                return protocol_refusal(&e);
            }
        };
        let subject = authentic.subject();
        let z = subject.z_hash;
        info!(z = %short(&z), envelope = %short(&subject.envelope_id), "unclaimed request received");

        let _flight = self.flights.lock(z).await;
        let recorded = match self.journal.blocking(move |j| j.recorded(&subject)).await {
            Ok(r) => r,
            Err(e) => return journal_refusal(&z, &e),
        };
        let cert = match authentic.decide(&recorded, self.clock.now()) {
            UnclaimedDecision::Answer(a) => {
                self.metrics.unclaimed(true);
                info!(z = %short(&z), "unclaimed certificate answered from the journal");
                return Response::Unclaimed(a);
            }
            UnclaimedDecision::Refuse(r) => {
                info!(z = %short(&z), refusal = r.kind(), "unclaimed request refused");
                return decided_refusal(&r);
            }
            UnclaimedDecision::Certify(cert) => cert,
        };

        let tp = Arc::clone(&live.tp);
        let metrics = Arc::clone(&self.metrics);
        let writer = Arc::clone(&self.writer);
        let queued = self
            .pool
            .run(move || {
                writer.append(|at| {
                    let started = Instant::now();
                    let affidavit: Affidavit = tp.unclaimed(&cert, at)?;
                    metrics.device_op("unclaimed", started.elapsed());
                    Ok(JournalRecord::Unclaimed { affidavit })
                })
            })
            .await;
        let ticket = match queued {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return append_refusal(&z, e),
            Err(PoolStopped) => {
                warn!(z = %short(&z), "unclaimed job failed or the daemon is stopping");
                return refuse(ErrorCode::Unavailable, "the TP failed; retry");
            }
        };
        let seq = ticket.position().seq;
        let started = Instant::now();
        let committed = ticket.committed().await;
        self.metrics.journal_commit(started.elapsed());
        match committed {
            Ok(JournalRecord::Unclaimed { affidavit }) => {
                self.metrics.unclaimed(false);
                info!(z = %short(&z), seq, "unclaimed certificate issued and recorded");
                Response::Unclaimed(affidavit)
            }
            Ok(JournalRecord::Claim { .. }) => {
                unreachable!("an unclaimed ticket holds its certificate")
            }
            Err(e) => commit_refusal(&z, &e),
        }
    }

    /// One page of the sender's receipts: those after the request's
    /// `after_seq`, as many as fit one
    /// [`vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME`]
    /// response (the client asks again for the rest).
    async fn fetch_receipts(&self, req: FetchRequest) -> Response {
        let sender = match req.verify(self.live().tp.card(), self.clock.now()) {
            Ok(id) => id,
            Err(e) => {
                info!(error = %e, "receipt request refused");
                return protocol_refusal(&e);
            }
        };
        let after_seq = req.body.after_seq;
        let page = vtp_protocol::wire::PageBuilder::new(
            vtp_protocol::wire::RECEIPTS_PAGE_MAX_FRAME,
            req.body.max_receipts,
        );
        match self
            .journal
            .blocking(move |j| j.receipts_for_sender(&sender, after_seq, page))
            .await
        {
            Ok(page) => {
                info!(
                    sender = %short(&sender.0),
                    after_seq,
                    count = page.receipts.len(),
                    more = page.more,
                    "receipts fetched"
                );
                Response::Receipts(page)
            }
            Err(e) => journal_refusal(&sender.0, &e),
        }
    }
}

/// Where a claim's blocking job ended (lives for one request; boxing the
/// larger variant would buy nothing).
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Answered without the device (from the journal, or refused).
    Answer(Response),
    /// Resolved, signed and queued for the journal: redeem the ticket.
    Queued(Ticket),
}

/// The blocking half of a claim, run on a device thread with the per-z
/// lock held: the journal lookup, the decision core's verdict on it, the
/// token's decision, the affidavit's signature and the queued record. One
/// job, so a claim changes threads once on its way in and once on its way
/// out.
struct ClaimJob {
    live: Arc<Live>,
    journal: Journal,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    clock: Clock,
    subject: Subject,
    key: KeyStatus,
}

impl ClaimJob {
    fn run(self, claim: AuthenticClaim) -> Step {
        let z = self.subject.z_hash;
        let recorded = match self.journal.recorded(&self.subject) {
            Ok(r) => r,
            Err(e) => return Step::Answer(journal_refusal(&z, &e)),
        };
        // Micali's virtual-TP paper's subscription model: the TP helps only its subscribers
        // (the decision core weighs this after the journal, so a recorded
        // answer is never withheld).
        let subscription = if self.live.require_subscription {
            let recipient = claim.envelope().header().recipient;
            match self.journal.subscriber(&recipient) {
                Err(e) => return Step::Answer(journal_refusal(&z, &e)),
                Ok(Some(s)) if s.active_at(self.clock.now()) => Subscription::Active,
                Ok(Some(s)) => Subscription::Expired {
                    at: s.expires_at.unwrap_or(0),
                },
                Ok(None) => Subscription::Missing,
            }
        } else {
            Subscription::NotRequired
        };
        let context = ClaimContext {
            subscription,
            key: self.key,
        };
        let tp = &self.live.tp;
        // Read the clock here: we may have waited for the lock and for a
        // device thread.
        let resolvable = match claim.decide(tp.card(), &recorded, &context, self.clock.now()) {
            ClaimDecision::Answer(o) => {
                self.metrics.resolution(outcome_name(&o), true);
                info!(z = %short(&z), outcome = outcome_name(&o), "claim answered from the journal");
                return Step::Answer(Response::Claim(o));
            }
            ClaimDecision::Refuse(r) => {
                info!(z = %short(&z), refusal = r.kind(), "claim refused");
                return Step::Answer(decided_refusal(&r));
            }
            ClaimDecision::Resolve(c) => c,
        };

        // Decrypt and check (in parallel with the other device threads),
        // then sign at the next journal position and queue for the writer
        // (in order).
        let started = Instant::now();
        let decision = match tp.decide(&resolvable) {
            Ok(d) => d,
            Err(e) => return Step::Answer(device_refusal(&z, &e)),
        };
        let decided = started.elapsed();
        let receipt = resolvable.claim().receipt().receipt().clone();
        let metrics = &self.metrics;
        match self.writer.append(|at| {
            let signing = Instant::now();
            let outcome = tp.sign_decision(decision, at)?;
            metrics.device_op("resolve", decided + signing.elapsed());
            Ok(JournalRecord::Claim { outcome, receipt })
        }) {
            Ok(t) => Step::Queued(t),
            Err(e) => Step::Answer(append_refusal(&z, e)),
        }
    }
}
