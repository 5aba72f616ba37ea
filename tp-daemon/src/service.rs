//! The TP's rules, independent of sockets: one decoded [`Request`] in, one
//! [`Response`] out.
//!
//! The order of checks in a claim is the heart of fairness (DESIGN.md §2-§3):
//! authenticate → take the per-z lock → answer from the journal if the
//! question was answered before (even after the deadline: Bob re-asking gets
//! the same answer) → only then the deadline → resolve in the token → commit
//! to the journal → release. Nothing leaves the daemon that is not committed,
//! and a failure before the commit leaves nothing behind, so the claim can be
//! retried.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tracing::{info, warn};
use vtp_device::{DeviceError, KeyId, TrustedParty};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::Claim;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    ClaimOutcome, ErrorCode, FetchRequest, Request, Response, UnclaimedRequest, WireError,
};
use vtp_protocol::{Digest32, ProtocolError};

use crate::clock::{rfc3339, Clock};
use crate::journal::{Journal, JournalError};
use crate::keyring::{KeyRing, KeyState};
use crate::metrics::Metrics;
use crate::single_flight::SingleFlight;

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
    clock: Clock,
    flights: SingleFlight<Digest32>,
    metrics: Arc<Metrics>,
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
    let code = match e {
        ProtocolError::Malformed { .. }
        | ProtocolError::WrongKind { .. }
        | ProtocolError::UnsupportedVersion { .. } => ErrorCode::Malformed,
        ProtocolError::BadSignature { .. }
        | ProtocolError::Mismatch { .. }
        | ProtocolError::DoesNotDecrypt => ErrorCode::Rejected,
        ProtocolError::Deadline(_) => ErrorCode::Deadline,
        ProtocolError::UnknownKey(_) => ErrorCode::UnknownKey,
        ProtocolError::Refused(_) => ErrorCode::NotAuthorized,
    };
    refuse(code, e.to_string())
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

fn affidavit_at(o: &ClaimOutcome) -> u64 {
    match o {
        ClaimOutcome::Resolved { affidavit, .. } | ClaimOutcome::InvalidEnvelope { affidavit } => {
            affidavit.body.at
        }
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
    pub fn new(live: Live, journal: Journal, clock: Clock, metrics: Arc<Metrics>) -> Service {
        metrics.serving_card(
            live.tp.card().id().0.to_hex(),
            KeyId(live.tp.card().body().current_key.0).to_string(),
        );
        Service {
            live: RwLock::new(Arc::new(live)),
            journal,
            clock,
            flights: SingleFlight::new(),
            metrics,
        }
    }

    /// The TP, card and key ring being served now.
    pub fn live(&self) -> Arc<Live> {
        Arc::clone(&self.live.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serve a new card / key ring / policy from now on (SIGHUP). Requests
    /// already running finish with the state they started with.
    pub fn replace_live(&self, live: Live) {
        self.metrics.serving_card(
            live.tp.card().id().0.to_hex(),
            KeyId(live.tp.card().body().current_key.0).to_string(),
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

    /// A claim for an envelope made for a key the TP retired: answer from
    /// the journal if it was resolved before, else refuse, saying so.
    async fn claim_for_retired_key(
        &self,
        live: &Live,
        claim: &Claim,
        key: KeyId,
        retired_at: u64,
    ) -> Response {
        let z = claim.z_hash();
        let refusal = || {
            info!(z = %short(&z), key = %key, "claim refused: the envelope's TP key is retired");
            refuse(
                ErrorCode::UnknownKey,
                format!(
                    "the TP retired encryption key {key} at {}: it no longer resolves envelopes \
                     made for that key (the sender must send again using the TP's current card)",
                    rfc3339(retired_at)
                ),
            )
        };
        // The envelope carries the card it was made with; if it is this
        // TP's card (same signing key, self-signed), it authenticates the
        // claim as well as the current card would.
        let embedded = &claim.body.envelope.tp_card;
        if embedded.id() != live.tp.card().id() {
            return refusal();
        }
        let Ok(verified) = claim.verify_authentic(embedded, self.clock.now()) else {
            return refusal();
        };
        let envelope_id = verified.envelope().header().envelope_id();
        let recorded = self
            .journal
            .blocking(move |j| match j.resolved(&z)? {
                Some(o) => Ok(Some(o)),
                None => j.invalid_verdict(&envelope_id),
            })
            .await;
        match recorded {
            Ok(Some(o)) => {
                self.metrics.resolution(outcome_name(&o), true);
                info!(z = %short(&z), outcome = outcome_name(&o), "claim answered from the journal (retired key)");
                Response::Claim(o)
            }
            Ok(None) => refusal(),
            Err(e) => journal_refusal(&z, &e),
        }
    }

    async fn claim(&self, claim: Claim) -> Response {
        self.metrics.claim();
        let live = self.live();
        let z = claim.z_hash();
        let requested = claim.body.requested;
        let key = KeyId(claim.body.envelope.header.key_id.0);
        match live.ring.get(key) {
            Some(k) if k.state == KeyState::Retired => {
                return self
                    .claim_for_retired_key(&live, &claim, key, k.retired_at.unwrap_or(0))
                    .await;
            }
            Some(_) => {}
            None if live
                .tp
                .card()
                .key(claim.body.envelope.header.key_id)
                .is_err() =>
            {
                info!(z = %short(&z), key = %key, "claim refused: unknown TP key");
                return refuse(
                    ErrorCode::UnknownKey,
                    format!(
                        "the TP has no encryption key {key}; envelopes must be made with the TP's \
                         current card (fetch it again)"
                    ),
                );
            }
            None => {}
        }
        let verified = match claim.verify_authentic(live.tp.card(), self.clock.now()) {
            Ok(v) => v,
            Err(e) => {
                info!(z = %short(&z), error = %e, "claim refused: not authentic");
                return protocol_refusal(&e);
            }
        };
        let envelope_id = verified.envelope().header().envelope_id();
        let deadline = verified.envelope().header().deadline;
        info!(z = %short(&z), envelope = %short(&envelope_id), requested, "claim received");

        let _flight = self.flights.lock(z).await;

        // Answered before? The same answer, whatever the clock says now.
        let recorded = self
            .journal
            .blocking(move |j| {
                if let Some(o) = j.resolved(&z)? {
                    return Ok(Recorded::Outcome(o));
                }
                if let Some(o) = j.invalid_verdict(&envelope_id)? {
                    return Ok(Recorded::Outcome(o));
                }
                Ok(match j.unclaimed_since(&z)? {
                    Some(t) => Recorded::Unclaimed(t),
                    None => Recorded::Nothing,
                })
            })
            .await;
        match recorded {
            Err(e) => return journal_refusal(&z, &e),
            Ok(Recorded::Outcome(o)) => {
                self.metrics.resolution(outcome_name(&o), true);
                info!(z = %short(&z), outcome = outcome_name(&o), "claim answered from the journal");
                return Response::Claim(o);
            }
            Ok(Recorded::Unclaimed(at)) => {
                // Only possible if the clock went backwards since: the TP
                // already promised this z will never be resolved.
                info!(z = %short(&z), "claim refused: z was declared unclaimed");
                return refuse(
                    ErrorCode::Deadline,
                    format!(
                        "the TP certified at {} that this envelope was never claimed; \
                         it will not resolve it",
                        rfc3339(at)
                    ),
                );
            }
            Ok(Recorded::Nothing) => {}
        }

        // Seed 001's subscription model: the TP helps only its subscribers.
        // Checked after the journal, so a recorded answer is never withheld.
        if live.require_subscription {
            let recipient = verified.envelope().header().recipient;
            let now = self.clock.now();
            let sub = self
                .journal
                .blocking(move |j| j.subscriber(&recipient))
                .await;
            match sub {
                Err(e) => return journal_refusal(&z, &e),
                Ok(Some(s)) if s.active_at(now) => {}
                Ok(found) => {
                    let why = match found {
                        Some(s) => format!(
                            "its subscription expired at {}",
                            rfc3339(s.expires_at.unwrap_or(0))
                        ),
                        None => "it is not subscribed".to_owned(),
                    };
                    info!(z = %short(&z), recipient = %short(&recipient.0), "claim refused: not a subscriber");
                    return refuse(
                        ErrorCode::NotAuthorized,
                        format!(
                            "this TP resolves claims for its subscribers only, and identity {} \
                             (the recipient) {why}; contact the TP's operator",
                            recipient.0.to_hex()
                        ),
                    );
                }
            }
        }

        // Read the clock again: we may have waited for the lock.
        let now = self.clock.now();
        if let Err(e) = verified.check_deadline(now) {
            info!(z = %short(&z), deadline, now, "claim refused: deadline passed");
            return protocol_refusal(&e);
        }

        let tp = Arc::clone(&live.tp);
        let metrics = Arc::clone(&self.metrics);
        let resolved = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outcome = tp.resolve(&verified, now);
            metrics.device_op("resolve", started.elapsed());
            (outcome, verified)
        })
        .await;
        let (outcome, verified) = match resolved {
            Ok((Ok(o), v)) => (o, v),
            Ok((Err(e), _)) => return device_refusal(&z, &e),
            Err(e) => {
                warn!(z = %short(&z), error = %e, "resolve task failed; nothing released");
                return refuse(
                    ErrorCode::Unavailable,
                    "the TP failed while resolving; nothing was released: retry",
                );
            }
        };

        // Commit before release (DESIGN.md §3 step 3).
        let receipt = verified.receipt().receipt().clone();
        let started = Instant::now();
        let recorded = self
            .journal
            .blocking(move |j| j.record_claim(&outcome, &receipt, now))
            .await;
        self.metrics.journal_commit(started.elapsed());
        match recorded {
            Ok(o) => {
                self.metrics.resolution(outcome_name(&o), false);
                info!(z = %short(&z), outcome = outcome_name(&o), "claim resolved and recorded");
                Response::Claim(o)
            }
            Err(e) => journal_refusal(&z, &e),
        }
    }

    async fn unclaimed(&self, req: UnclaimedRequest) -> Response {
        let live = self.live();
        let z = req.body.envelope.header.z_hash;
        let env = match req.verify(live.tp.card(), self.clock.now()) {
            Ok(env) => env,
            Err(e) => {
                info!(z = %short(&z), error = %e, "unclaimed request refused");
                return protocol_refusal(&e);
            }
        };
        let envelope_id = env.header().envelope_id();
        let deadline = env.header().deadline;
        info!(z = %short(&z), envelope = %short(&envelope_id), "unclaimed request received");

        let _flight = self.flights.lock(z).await;
        let now = self.clock.now();
        let recorded = self
            .journal
            .blocking(move |j| Ok((j.resolved(&z)?, j.unclaimed(&z, &envelope_id)?)))
            .await;
        let (resolved, unclaimed) = match recorded {
            Ok(r) => r,
            Err(e) => return journal_refusal(&z, &e),
        };
        if let Some(o) = resolved {
            info!(z = %short(&z), "unclaimed refused: z was resolved");
            return refuse(
                ErrorCode::NotAuthorized,
                format!(
                    "this envelope was resolved at {}; no unclaimed certificate",
                    rfc3339(affidavit_at(&o))
                ),
            );
        }
        if now < deadline {
            return refuse(
                ErrorCode::Deadline,
                format!(
                    "too early: the deadline is {} ({} s from now on the TP's clock)",
                    rfc3339(deadline),
                    deadline - now
                ),
            );
        }
        if let Some(a) = unclaimed {
            self.metrics.unclaimed(true);
            info!(z = %short(&z), "unclaimed certificate answered from the journal");
            return Response::Unclaimed(a);
        }

        let tp = Arc::clone(&live.tp);
        let metrics = Arc::clone(&self.metrics);
        let signed: Result<Result<Affidavit, DeviceError>, _> =
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let r = tp.unclaimed(&env, now);
                metrics.device_op("unclaimed", started.elapsed());
                r
            })
            .await;
        let affidavit = match signed {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return device_refusal(&z, &e),
            Err(e) => {
                warn!(z = %short(&z), error = %e, "unclaimed task failed");
                return refuse(ErrorCode::Unavailable, "the TP failed; retry");
            }
        };
        let started = Instant::now();
        let recorded = self
            .journal
            .blocking(move |j| j.record_unclaimed(&affidavit, now))
            .await;
        self.metrics.journal_commit(started.elapsed());
        match recorded {
            Ok(a) => {
                self.metrics.unclaimed(false);
                info!(z = %short(&z), "unclaimed certificate issued and recorded");
                Response::Unclaimed(a)
            }
            Err(e) => journal_refusal(&z, &e),
        }
    }

    async fn fetch_receipts(&self, req: FetchRequest) -> Response {
        let sender = match req.verify(self.live().tp.card(), self.clock.now()) {
            Ok(id) => id,
            Err(e) => {
                info!(error = %e, "receipt request refused");
                return protocol_refusal(&e);
            }
        };
        match self
            .journal
            .blocking(move |j| j.receipts_for_sender(&sender))
            .await
        {
            Ok(receipts) => {
                info!(sender = %short(&sender.0), count = receipts.len(), "receipts fetched");
                Response::Receipts(receipts)
            }
            Err(e) => journal_refusal(&sender.0, &e),
        }
    }
}

/// What the journal already says about a claim (lives for one request;
/// boxing the outcome would buy nothing).
#[allow(clippy::large_enum_variant)]
enum Recorded {
    Outcome(ClaimOutcome),
    /// z was declared unclaimed at this time.
    Unclaimed(u64),
    Nothing,
}
