//! An unclaimed certificate after the deadline: authenticate, take the
//! per-z lock, look up the subject, let the decision core decide, sign in
//! the token, commit, answer.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::decide::UnclaimedDecision;
use vtp_protocol::wire::{ErrorCode, Response, UnclaimedRequest};

use super::device_pool::PoolStopped;
use super::{
    append_refusal, commit_refusal, decided_refusal, journal_refusal, protocol_refusal, refuse,
    short, Service,
};
use crate::journal::chain::JournalRecord;

impl Service {
    pub(super) async fn unclaimed(&self, req: UnclaimedRequest) -> Response {
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
}
