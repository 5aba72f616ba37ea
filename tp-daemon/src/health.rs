//! What `/healthz` reports beyond "serving": whether the token still signs
//! and the journal writer still runs. A probe every [`PROBE_EVERY`] has the
//! signing key sign a fixed test digest on the token (a real operation
//! through the session pool and the login, re-logging in if the token lost
//! it) and checks the signature against the card's key; the result is
//! cached in [`crate::metrics::Metrics`], so a health check never waits for
//! the token. A probe that hangs counts as a failure after
//! [`PROBE_TIMEOUT`]. Changes are logged once each way.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use vtp_device::Token;

use crate::operator::check::probe_signing_key;
use crate::service::Service;

/// How often the token and the journal writer are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe without an answer for this long makes the daemon unhealthy.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One probe: `Err` is the one-line reason `/healthz` gives.
pub fn probe(token: &Token, service: &Service) -> Result<(), String> {
    if !service.writer().is_running() {
        return Err("journal: the journal writer has stopped".into());
    }
    let live = service.live();
    let signing = live.tp.keys().signing;
    let public = &live.tp.card().body().sign_key;
    probe_signing_key(token, signing, public).map_err(|e| format!("token: {e}"))
}

/// Probe until the task is aborted, recording each result.
pub fn spawn(token: Arc<Token>, service: Arc<Service>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let metrics = Arc::clone(service.metrics());
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let (t, s) = (Arc::clone(&token), Arc::clone(&service));
            let mut job = tokio::task::spawn_blocking(move || probe(&t, &s));
            let joined = tokio::select! {
                r = &mut job => r,
                () = tokio::time::sleep(PROBE_TIMEOUT) => {
                    record(&metrics, Err(format!(
                        "token: no answer to the health probe within {} s",
                        PROBE_TIMEOUT.as_secs()
                    )));
                    job.await
                }
            };
            let result = joined.unwrap_or_else(|e| Err(format!("health probe failed: {e}")));
            record(&metrics, result);
        }
    })
}

fn record(metrics: &crate::metrics::Metrics, result: Result<(), String>) {
    match (&result, metrics.health()) {
        (Err(now), Ok(())) => warn!(reason = %now, "unhealthy: /healthz answers 503"),
        (Ok(()), Err(was)) => info!(was = %was, "healthy again: /healthz answers 200"),
        _ => {}
    }
    metrics.set_health(result);
}
