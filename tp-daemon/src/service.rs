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
use vtp_device::{DeviceError, KeyId, TrustedParty};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::{Claim, VerifiedClaim};
use vtp_protocol::envelope::check_group_policy;
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
            KeyId(live.tp.card().body().current_key.0).to_string(),
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
        z: Digest32,
    ) -> Response {
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
        let Some(embedded) = claim
            .body
            .envelope
            .tp_cards
            .iter()
            .find(|c| c.id() == live.tp.card().id())
        else {
            return refusal();
        };
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
        let slot_key = header.trustees[slot].key_id;
        let requested = claim.body.requested;
        let key = KeyId(slot_key.0);
        match live.ring.get(key) {
            Some(k) if k.state == KeyState::Retired => {
                return self
                    .claim_for_retired_key(&live, &claim, key, k.retired_at.unwrap_or(0), z)
                    .await;
            }
            Some(_) => {}
            None if live.tp.card().key(slot_key).is_err() => {
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

        // Everything from here to the queued record is blocking work (the
        // journal, the token) and runs as one job on the device threads.
        let job = ClaimJob {
            live: Arc::clone(&live),
            journal: self.journal.clone(),
            writer: Arc::clone(&self.writer),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
            z,
            envelope_id,
            deadline,
        };
        let ticket = match self.pool.run(move || job.run(verified)).await {
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

        // Commit before release (DESIGN.md §3 step 3).
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
        let env = match req.verify(live.tp.card(), self.clock.now()) {
            Ok(env) => env,
            Err(e) => {
                info!(error = %e, "unclaimed request refused");
                return protocol_refusal(&e);
            }
        };
        let h = env.header();
        let z = h.trustees[h
            .slot_of(&live.tp.card().id())
            .expect("a verified request names this TP")]
        .z_hash;
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
        let writer = Arc::clone(&self.writer);
        let queued = self
            .pool
            .run(move || {
                writer.append(|at| {
                    let started = Instant::now();
                    let affidavit: Affidavit = tp.unclaimed(&env, now, at)?;
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

/// What the journal already says about a claim (lives for one request;
/// boxing the outcome would buy nothing).
#[allow(clippy::large_enum_variant)]
enum Recorded {
    Outcome(ClaimOutcome),
    /// z was declared unclaimed at this time.
    Unclaimed(u64),
    Nothing,
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
/// lock held: the journal lookup, the checks that depend on it, the token's
/// decision, the affidavit's signature and the queued record. One job, so a
/// claim changes threads once on its way in and once on its way out.
struct ClaimJob {
    live: Arc<Live>,
    journal: Journal,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
    clock: Clock,
    z: Digest32,
    envelope_id: Digest32,
    deadline: u64,
}

impl ClaimJob {
    fn run(self, verified: VerifiedClaim) -> Step {
        let z = self.z;
        let envelope_id = self.envelope_id;
        // Answered before? The same answer, whatever the clock says now.
        let recorded = (|| {
            let j = &self.journal;
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
        })();
        match recorded {
            Err(e) => return Step::Answer(journal_refusal(&z, &e)),
            Ok(Recorded::Outcome(o)) => {
                self.metrics.resolution(outcome_name(&o), true);
                info!(z = %short(&z), outcome = outcome_name(&o), "claim answered from the journal");
                return Step::Answer(Response::Claim(o));
            }
            Ok(Recorded::Unclaimed(at)) => {
                // Only possible if the clock went backwards since: the TP
                // already promised this z will never be resolved.
                info!(z = %short(&z), "claim refused: z was declared unclaimed");
                return Step::Answer(refuse(
                    ErrorCode::Deadline,
                    format!(
                        "the TP certified at {} that this envelope was never claimed; \
                         it will not resolve it",
                        rfc3339(at)
                    ),
                ));
            }
            Ok(Recorded::Nothing) => {}
        }

        // Seed 001's subscription model: the TP helps only its subscribers.
        // Checked after the journal, so a recorded answer is never withheld.
        if self.live.require_subscription {
            let recipient = verified.envelope().header().recipient;
            let now = self.clock.now();
            match self.journal.subscriber(&recipient) {
                Err(e) => return Step::Answer(journal_refusal(&z, &e)),
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
                    return Step::Answer(refuse(
                        ErrorCode::NotAuthorized,
                        format!(
                            "this TP resolves claims for its subscribers only, and identity {} \
                             (the recipient) {why}; contact the TP's operator",
                            recipient.0.to_hex()
                        ),
                    ));
                }
            }
        }

        // A trustee acts only in groups its card allows (seed 002 §7).
        let tp = &self.live.tp;
        let h = verified.envelope().header();
        if let Err(e) = check_group_policy(tp.card(), h.threshold(), h.trustees.len()) {
            info!(z = %short(&z), "claim refused: group outside this trustee's policy");
            return Step::Answer(protocol_refusal(&e));
        }

        // Read the clock again: we may have waited for the lock and for a
        // device thread.
        let now = self.clock.now();
        if let Err(e) = verified.check_deadline(now) {
            info!(z = %short(&z), deadline = self.deadline, now, "claim refused: deadline passed");
            return Step::Answer(protocol_refusal(&e));
        }

        // Decrypt and check (in parallel with the other device threads),
        // then sign at the next journal position and queue for the writer
        // (in order).
        let started = Instant::now();
        let decision = match tp.decide(&verified, now) {
            Ok(d) => d,
            Err(e) => return Step::Answer(device_refusal(&z, &e)),
        };
        let decided = started.elapsed();
        let receipt = verified.receipt().receipt().clone();
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
