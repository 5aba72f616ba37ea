//! Bob's claim: authenticate, take the per-z lock, then one job on a device
//! thread (journal lookup, the decision core, the token, the sequencer), and
//! the answer only after the journal commit.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use vtp_protocol::claim::{AuthenticClaim, Claim};
use vtp_protocol::decide::{
    ClaimContext, ClaimDecision, KeyStatus, Refusal, Subject, Subscription,
};
use vtp_protocol::wire::{ErrorCode, Response};
use vtp_protocol::ProtocolError;

use super::commit_hold::OpTime;
use super::device_pool::PoolStopped;
use super::{
    append_refusal, commit_refusal, decided_refusal, device_refusal, journal_refusal, outcome_name,
    protocol_refusal, refuse, short, Live, Service,
};
use crate::clock::Clock;
use crate::faults;
use crate::journal::chain::JournalRecord;
use crate::journal::keyring::KeyState;
use crate::journal::writer::{Ticket, Writer};
use crate::journal::Journal;
use crate::metrics::Metrics;

impl Service {
    pub(super) async fn claim(&self, claim: Claim) -> Response {
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
            op_time: Arc::clone(&self.op_time),
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
    op_time: Arc<OpTime>,
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
        let op_time = &self.op_time;
        match self.writer.append(|at| {
            let signing = Instant::now();
            let outcome = tp.sign_decision(decision, at)?;
            let took = decided + signing.elapsed();
            metrics.device_op("resolve", took);
            op_time.observe(took);
            Ok(JournalRecord::Claim { outcome, receipt })
        }) {
            Ok(t) => Step::Queued(t),
            Err(e) => Step::Answer(append_refusal(&z, e)),
        }
    }
}
