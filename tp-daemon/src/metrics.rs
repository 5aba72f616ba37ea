//! Health and Prometheus metrics, served on their own local address
//! (`metrics_listen`, e.g. `127.0.0.1:7401`), never on the TP's port.
//!
//! `GET /healthz` answers `200 ok` while the daemon serves, the token signs
//! and the journal writer runs ([`crate::health`] probes them every few
//! seconds and caches the result here); otherwise `503` and one line naming
//! why (`draining` once it is shutting down, `token: ...`, `journal: ...`). `GET /metrics` answers the OpenMetrics text
//! format (which Prometheus scrapes natively), encoded by the
//! `prometheus-client` crate; the HTTP side is a few lines of hand-written
//! HTTP/1.0 (one request per connection, `Connection: close`), because two
//! fixed GET endpoints do not justify an HTTP server stack in the TP.
//!
//! Metric families (all prefixed `vtp_`):
//! - `requests_total{kind}`: decoded requests (`card`, `claim`, `unclaimed`,
//!   `receipts`) and undecodable frames (`undecodable`);
//! - `claims_total`: claims received;
//! - `resolutions_total{outcome,source}`: claim answers — `resolved` or
//!   `invalid_envelope`, from the `device` (a new resolution) or the
//!   `journal` (a repeated claim);
//! - `unclaimed_certificates_total{source}`;
//! - `refusals_total{request,reason}`: error answers by request kind and
//!   `ErrorCode` (`malformed`, `rejected`, `deadline`, `unknown_key`,
//!   `not_authorized`, `busy`, `unavailable`);
//! - `device_op_duration_seconds{op}`: histogram of token operations
//!   (`resolve`, `unclaimed`);
//! - `journal_commit_duration_seconds`: histogram of the time a claim (or
//!   unclaimed certificate) waited for its journal batch to commit;
//! - `journal_batches_total{result}`: journal group commits (`committed`,
//!   `failed`), and `journal_records_total{result}`: the records in them —
//!   under load, many records per batch;
//! - `journal_batch_duration_seconds`: histogram of one batch's transaction;
//! - `connections_open`, `in_flight_requests`: gauges;
//! - `connections_dropped_total{reason}`: connections the TP closed before
//!   the client did: `evicted` (the table was full, see
//!   [`crate::server`]), `first_frame_timeout`, `idle_timeout` — a flood
//!   of idle connections shows here;
//! - `config_reloads_total{result}`;
//! - `tp_info{tp_id,current_key}`: 1, labelled with the card being served;
//! - `build_info{version}`: 1, labelled with this build's version;
//! - `key_age_seconds{role,key_id}`: since the signing key in use and the
//!   current encryption key were made (generated or imported, per the key
//!   ring and the audit log), and `key_current_seconds{key_id}`: since the
//!   current encryption key became current (senders were offered it); both
//!   computed at each scrape on the daemon's clock;
//! - `healthy`: 1 while `/healthz` would answer 200, else 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};
use vtp_protocol::wire::ErrorCode;
use vtp_protocol::{KeyId, Timestamp};

use crate::clock::Clock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolutionLabel {
    outcome: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    request: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    role: &'static str,
    key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyIdLabel {
    key_id: String,
}

/// When the keys being served were made and the current encryption key
/// became current; ages are computed from these at each scrape.
#[derive(Debug, Clone)]
pub struct KeyTimes {
    pub clock: Clock,
    pub signing: KeyId,
    pub signing_made: Option<Timestamp>,
    pub current: KeyId,
    pub current_made: Option<Timestamp>,
    pub current_since: Option<Timestamp>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabel {
    tp_id: String,
    current_key: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

/// The daemon's metrics; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<KindLabel, Counter>,
    claims: Counter,
    resolutions: Family<ResolutionLabel, Counter>,
    unclaimed: Family<SourceLabel, Counter>,
    refusals: Family<RefusalLabel, Counter>,
    device_ops: HistogramFamily<OpLabel>,
    journal_commits: Histogram,
    journal_batches: Family<ResultLabel, Counter>,
    journal_records: Family<ResultLabel, Counter>,
    journal_batch_time: Histogram,
    connections: Gauge,
    dropped: Family<ReasonLabel, Counter>,
    in_flight: Gauge,
    reloads: Family<ResultLabel, Counter>,
    info: Family<InfoLabel, Gauge>,
    key_age: Family<KeyLabel, Gauge>,
    key_current: Family<KeyIdLabel, Gauge>,
    key_times: Mutex<Option<KeyTimes>>,
    healthy: Gauge,
    /// The last health probe's result (see [`crate::health`]).
    health: Mutex<Result<(), String>>,
    draining: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The metrics name of an error code.
pub fn reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "malformed",
        ErrorCode::Rejected => "rejected",
        ErrorCode::Deadline => "deadline",
        ErrorCode::UnknownKey => "unknown_key",
        ErrorCode::NotAuthorized => "not_authorized",
        ErrorCode::Busy => "busy",
        ErrorCode::Unavailable => "unavailable",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vtp");
        let requests = Family::<KindLabel, Counter>::default();
        registry.register("requests", "Requests received, by kind", requests.clone());
        let claims = Counter::default();
        registry.register("claims", "Claims received", claims.clone());
        let resolutions = Family::<ResolutionLabel, Counter>::default();
        registry.register(
            "resolutions",
            "Claim answers by outcome, from the device (new) or the journal (repeated)",
            resolutions.clone(),
        );
        let unclaimed = Family::<SourceLabel, Counter>::default();
        registry.register(
            "unclaimed_certificates",
            "Unclaimed certificates answered, from the device (new) or the journal",
            unclaimed.clone(),
        );
        let refusals = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "refusals",
            "Error answers, by request kind and reason (wire ErrorCode)",
            refusals.clone(),
        );
        let device_ops: HistogramFamily<OpLabel> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "device_op_duration_seconds",
            "Latency of token operations (resolve: decrypt + checks + sign)",
            device_ops.clone(),
        );
        let journal_commits = latency_histogram();
        registry.register(
            "journal_commit_duration_seconds",
            "Latency of durable journal commits",
            journal_commits.clone(),
        );
        let journal_batches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "journal_batches",
            "Journal group commits (one transaction, one fsync), by result",
            journal_batches.clone(),
        );
        let journal_records = Family::<ResultLabel, Counter>::default();
        registry.register(
            "journal_records",
            "Records in journal group commits, by result",
            journal_records.clone(),
        );
        let journal_batch_time = latency_histogram();
        registry.register(
            "journal_batch_duration_seconds",
            "Latency of one journal group commit",
            journal_batch_time.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Open client connections",
            connections.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_dropped",
            "Connections the TP closed before the client did, by reason (evicted, first_frame_timeout, idle_timeout)",
            dropped.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being handled",
            in_flight.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads.clone(),
        );
        let info = Family::<InfoLabel, Gauge>::default();
        registry.register(
            "tp_info",
            "The TP card being served (value 1)",
            info.clone(),
        );
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "This build of tp-daemon (value 1)", build);
        let key_age = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "key_age_seconds",
            "Seconds since the key in use was made (signing) or the current encryption key was made",
            key_age.clone(),
        );
        let key_current = Family::<KeyIdLabel, Gauge>::default();
        registry.register(
            "key_current_seconds",
            "Seconds since the current encryption key became current",
            key_current.clone(),
        );
        let healthy = Gauge::default();
        healthy.set(1);
        registry.register(
            "healthy",
            "1 while /healthz answers 200 (serving, token signs, journal writer runs), else 0",
            healthy.clone(),
        );
        Metrics {
            registry,
            requests,
            claims,
            resolutions,
            unclaimed,
            refusals,
            device_ops,
            journal_commits,
            journal_batches,
            journal_records,
            journal_batch_time,
            connections,
            dropped,
            in_flight,
            reloads,
            info,
            key_age,
            key_current,
            key_times: Mutex::new(None),
            healthy,
            health: Mutex::new(Ok(())),
            draining: AtomicBool::new(false),
        }
    }

    pub fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&KindLabel { kind }).inc();
    }
    pub fn claim(&self) {
        self.claims.inc();
    }
    pub fn resolution(&self, outcome: &'static str, from_journal: bool) {
        let source = if from_journal { "journal" } else { "device" };
        self.resolutions
            .get_or_create(&ResolutionLabel { outcome, source })
            .inc();
    }
    pub fn unclaimed(&self, from_journal: bool) {
        let source = if from_journal { "journal" } else { "device" };
        self.unclaimed.get_or_create(&SourceLabel { source }).inc();
    }
    pub fn refusal(&self, request: &'static str, code: ErrorCode) {
        self.refusals
            .get_or_create(&RefusalLabel {
                request,
                reason: reason(code),
            })
            .inc();
    }
    pub fn device_op(&self, op: &'static str, took: Duration) {
        self.device_ops
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
    }
    pub fn journal_commit(&self, took: Duration) {
        self.journal_commits.observe(took.as_secs_f64());
    }
    /// A journal batch of `records` committed in `took`.
    pub fn journal_batch(&self, records: u64, took: Duration) {
        let result = "committed";
        self.journal_batches
            .get_or_create(&ResultLabel { result })
            .inc();
        self.journal_records
            .get_or_create(&ResultLabel { result })
            .inc_by(records);
        self.journal_batch_time.observe(took.as_secs_f64());
    }
    /// A journal batch failed; `records` were not answered.
    pub fn journal_batch_failed(&self, records: u64) {
        let result = "failed";
        self.journal_batches
            .get_or_create(&ResultLabel { result })
            .inc();
        self.journal_records
            .get_or_create(&ResultLabel { result })
            .inc_by(records);
    }
    pub fn connection_opened(&self) {
        self.connections.inc();
    }
    pub fn connection_closed(&self) {
        self.connections.dec();
    }
    /// The TP closed a connection for `reason` (see the module doc).
    pub fn connection_dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub fn request_started(&self) {
        self.in_flight.inc();
    }
    pub fn request_finished(&self) {
        self.in_flight.dec();
    }
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
    pub fn serving_card(&self, tp_id: String, current_key: String) {
        self.info.clear();
        self.info
            .get_or_create(&InfoLabel { tp_id, current_key })
            .set(1);
    }
    /// The keys being served from now on (start-up, reload, card refresh).
    pub fn serving_keys(&self, times: KeyTimes) {
        *self.key_times.lock().unwrap_or_else(|p| p.into_inner()) = Some(times);
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.healthy.set(0);
    }
    /// Record a health probe's result (`Err`: the one-line reason).
    pub fn set_health(&self, result: Result<(), String>) {
        self.healthy
            .set(i64::from(result.is_ok() && !self.draining()));
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = result;
    }
    /// The last health probe's result.
    pub fn health(&self) -> Result<(), String> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.update_key_ages();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Metrics {
    fn update_key_ages(&self) {
        let times = self
            .key_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(t) = times else {
            return;
        };
        let now = t.clock.now();
        let age = |since: Timestamp| i64::try_from(now.saturating_sub(since)).unwrap_or(i64::MAX);
        self.key_age.clear();
        self.key_current.clear();
        if let Some(made) = t.signing_made {
            self.key_age
                .get_or_create(&KeyLabel {
                    role: "signing",
                    key_id: t.signing.to_string(),
                })
                .set(age(made));
        }
        if let Some(made) = t.current_made {
            self.key_age
                .get_or_create(&KeyLabel {
                    role: "encryption",
                    key_id: t.current.to_string(),
                })
                .set(age(made));
        }
        if let Some(since) = t.current_since {
            self.key_current
                .get_or_create(&KeyIdLabel {
                    key_id: t.current.to_string(),
                })
                .set(age(since));
        }
    }
}

/// The bound metrics endpoint.
pub struct MetricsServer {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        if !addr.ip().is_loopback() {
            warn!(%addr, "metrics_listen is not a loopback address: the metrics endpoint has no authentication");
        }
        Ok(MetricsServer {
            listener: TcpListener::bind(addr).await?,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until the task is dropped (aborted at shutdown).
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let m = Arc::clone(&self.metrics);
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), answer(stream, &m)).await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn answer(mut stream: TcpStream, m: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 8192 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, m.encode()),
        ("GET", "/healthz") if m.draining() => {
            ("503 Service Unavailable", "text/plain", "draining\n".into())
        }
        ("GET", "/healthz") => match m.health() {
            Ok(()) => ("200 OK", "text/plain", "ok\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("{}\n", why.replace(['\r', '\n'], " ")),
            ),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    debug!(method, path, status, "metrics request");
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.request("claim");
        m.claim();
        m.resolution("resolved", false);
        m.refusal("claim", ErrorCode::UnknownKey);
        m.device_op("resolve", Duration::from_millis(2));
        m.journal_commit(Duration::from_millis(1));
        m.serving_card("abc".into(), "0011".into());
        m.serving_card("def".into(), "2233".into());
        let text = m.encode();
        for needle in [
            "vtp_requests_total{kind=\"claim\"} 1",
            "vtp_claims_total 1",
            "vtp_resolutions_total{outcome=\"resolved\",source=\"device\"} 1",
            "vtp_refusals_total{request=\"claim\",reason=\"unknown_key\"} 1",
            "vtp_device_op_duration_seconds_bucket{le=\"0.004\",op=\"resolve\"} 1",
            "vtp_journal_commit_duration_seconds_count 1",
            "vtp_tp_info{tp_id=\"def\",current_key=\"2233\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        assert!(!text.contains("tp_id=\"abc\""), "old card info cleared");
        assert!(
            text.contains(&format!(
                "vtp_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn key_ages_are_computed_at_each_scrape() {
        let m = Metrics::new();
        let now = Clock::system().now();
        let times = |current: &str| KeyTimes {
            clock: Clock::system(),
            signing: "0011223344556677".parse().unwrap(),
            signing_made: Some(now - 7200),
            current: current.parse().unwrap(),
            current_made: Some(now - 3600),
            current_since: Some(now - 60),
        };
        m.serving_keys(times("8899aabbccddeeff"));
        let text = m.encode();
        let value = |series: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{series} not in\n{text}"))
        };
        let sign = value("vtp_key_age_seconds{role=\"signing\",key_id=\"0011223344556677\"}");
        let enc = value("vtp_key_age_seconds{role=\"encryption\",key_id=\"8899aabbccddeeff\"}");
        let cur = value("vtp_key_current_seconds{key_id=\"8899aabbccddeeff\"}");
        assert!((7200..7260).contains(&sign), "{sign}");
        assert!((3600..3660).contains(&enc), "{enc}");
        assert!((60..120).contains(&cur), "{cur}");
        m.serving_keys(times("0123456789abcdef"));
        let text = m.encode();
        assert!(
            !text.contains("8899aabbccddeeff"),
            "the old key's series are gone"
        );
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn healthz_turns_to_draining_and_bad_requests_are_answered() {
        let m = Arc::new(Metrics::new());
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&m))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(server.run());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200 OK"));
        m.set_health(Err("token: the token is gone".into()));
        let r = get(addr, "/healthz").await;
        assert!(
            r.starts_with("HTTP/1.0 503") && r.ends_with("\r\n\r\ntoken: the token is gone\n"),
            "{r}"
        );
        assert!(m.encode().contains("vtp_healthy 0"));
        m.set_health(Ok(()));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200 OK"));
        assert!(m.encode().contains("vtp_healthy 1"));
        m.set_draining();
        let r = get(addr, "/healthz").await;
        assert!(
            r.starts_with("HTTP/1.0 503") && r.ends_with("draining\n"),
            "{r}"
        );
        let r = get(addr, "/metrics?x=1").await;
        assert!(
            r.contains("application/openmetrics-text") && r.contains("# EOF"),
            "{r}"
        );
        assert!(get(addr, "/other").await.starts_with("HTTP/1.0 404"));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.0 405"), "{out}");
        task.abort();
    }
}
