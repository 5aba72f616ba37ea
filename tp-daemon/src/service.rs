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

use std::sync::Arc;

use tracing::{info, warn};
use vtp_device::{DeviceError, TrustedParty};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::Claim;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    ClaimOutcome, ErrorCode, FetchRequest, Request, Response, UnclaimedRequest, WireError,
};
use vtp_protocol::{Digest32, ProtocolError};

use crate::clock::{rfc3339, Clock};
use crate::journal::{Journal, JournalError};
use crate::single_flight::SingleFlight;

/// Shared state of the daemon. Cheap to share behind an `Arc`.
pub struct Service {
    tp: Arc<TrustedParty>,
    journal: Journal,
    clock: Clock,
    flights: SingleFlight<Digest32>,
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

impl Service {
    pub fn new(tp: Arc<TrustedParty>, journal: Journal, clock: Clock) -> Service {
        Service {
            tp,
            journal,
            clock,
            flights: SingleFlight::new(),
        }
    }

    pub fn card(&self) -> &TpCard {
        self.tp.card()
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Answer one request.
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::GetCard => Response::Card(self.card().clone()),
            Request::Claim(claim) => self.claim(claim).await,
            Request::Unclaimed(req) => self.unclaimed(req).await,
            Request::FetchReceipts(req) => self.fetch_receipts(req).await,
        }
    }

    async fn claim(&self, claim: Claim) -> Response {
        let z = claim.z_hash();
        let requested = claim.body.requested;
        let verified = match claim.verify_authentic(self.card(), self.clock.now()) {
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

        // Read the clock again: we may have waited for the lock.
        let now = self.clock.now();
        if let Err(e) = verified.check_deadline(now) {
            info!(z = %short(&z), deadline, now, "claim refused: deadline passed");
            return protocol_refusal(&e);
        }

        let tp = Arc::clone(&self.tp);
        let resolved = tokio::task::spawn_blocking(move || {
            let outcome = tp.resolve(&verified, now);
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
        let recorded = self
            .journal
            .blocking(move |j| j.record_claim(&outcome, &receipt, now))
            .await;
        match recorded {
            Ok(o) => {
                info!(z = %short(&z), outcome = outcome_name(&o), "claim resolved and recorded");
                Response::Claim(o)
            }
            Err(e) => journal_refusal(&z, &e),
        }
    }

    async fn unclaimed(&self, req: UnclaimedRequest) -> Response {
        let z = req.body.envelope.header.z_hash;
        let env = match req.verify(self.card(), self.clock.now()) {
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
            info!(z = %short(&z), "unclaimed certificate answered from the journal");
            return Response::Unclaimed(a);
        }

        let tp = Arc::clone(&self.tp);
        let signed: Result<Result<Affidavit, DeviceError>, _> =
            tokio::task::spawn_blocking(move || tp.unclaimed(&env, now)).await;
        let affidavit = match signed {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return device_refusal(&z, &e),
            Err(e) => {
                warn!(z = %short(&z), error = %e, "unclaimed task failed");
                return refuse(ErrorCode::Unavailable, "the TP failed; retry");
            }
        };
        match self
            .journal
            .blocking(move |j| j.record_unclaimed(&affidavit, now))
            .await
        {
            Ok(a) => {
                info!(z = %short(&z), "unclaimed certificate issued and recorded");
                Response::Unclaimed(a)
            }
            Err(e) => journal_refusal(&z, &e),
        }
    }

    async fn fetch_receipts(&self, req: FetchRequest) -> Response {
        let sender = match req.verify(self.card(), self.clock.now()) {
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
