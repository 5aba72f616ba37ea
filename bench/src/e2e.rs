//! Phase 4, claims through the real daemon: `tp-daemon serve` as a child
//! process (started with the test kit's fallible [`Serve`]) on 127.0.0.1:0
//! with a throwaway data directory, driven over kept-open connections of the
//! client library ([`TpConnection`]); then the daemon's memory with idle
//! connections open.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use vtp_client::tp_client::{TpClient, TpConnection};
use vtp_device::{TpKeys, TrustedParty};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, Response};
use vtp_testkit::daemon::{http_get, metric_sample};
use vtp_testkit::{Daemon, Serve};

use crate::claims::claim_frames;
use crate::device::DeviceFigures;
use crate::pairs::{run_pairs, PairsSummary};
use crate::proc_stats::{open_fds, proc_cpu, proc_rss, self_cpu};
use crate::report::{percentile, round, Report};
use crate::{BenchOptions, Target};

/// What the daemon phases found, for the headline ratios.
pub struct E2eFigures {
    /// The best closed-loop claim rate.
    pub best: f64,
    /// The daemon's CPU seconds per claim at it.
    pub cpu_at_best: f64,
    /// The alternating pairs (none with `--pairs 0`).
    pub pairs: Option<PairsSummary>,
}

/// Most claims made for one concurrency level.
pub(crate) const MAX_CLAIMS_PER_LEVEL: usize = 200_000;

/// Start `PROGRAM serve` on `config` (loopback, any port, metrics on too),
/// logging to `scratch/daemon.log`, and wait until it listens.
pub fn start_daemon(
    program: &Path,
    config: &Path,
    scratch: &Path,
    allow_root: bool,
) -> anyhow::Result<Daemon> {
    let mut serve = Serve::new(program, scratch.join("daemon.log"))
        .expect_metrics(true)
        .start_timeout(Duration::from_secs(120));
    let cmd = serve.command();
    cmd.arg("--config").arg(config);
    cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
    if allow_root {
        cmd.arg("--allow-root");
    }
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    )
    .env_remove("VTP_TEST_CLOCK_OFFSET_SECS");
    serve.spawn().map_err(|e| match e.log_tail(5) {
        Some((log, tail)) => anyhow!(
            "the benchmark daemon did not start; last lines of {}:\n{tail}",
            log.display()
        ),
        None => anyhow!("the benchmark daemon did not start: {e}"),
    })
}

/// The daemon's committed journal batches and the records in them, from
/// its Prometheus `/metrics` (`None` if it cannot be read).
pub fn journal_commits(metrics: SocketAddr) -> Option<(f64, f64)> {
    let (status, body) = http_get(metrics, "/metrics").ok()?;
    if !status.starts_with("HTTP/1.") || !status.contains(" 200 ") {
        return None;
    }
    // A counter appears with its first batch: absent means zero.
    let value = |name: &str| metric_sample(&body, name).unwrap_or(0.0);
    Some((
        value("vtp_journal_batches_total{result=\"committed\"}"),
        value("vtp_journal_records_total{result=\"committed\"}"),
    ))
}

fn fetch_card(addr: SocketAddr) -> anyhow::Result<TpCard> {
    TpClient::new(&addr.to_string(), Duration::from_secs(30)).get_card()
}

/// Results of one concurrency level.
pub struct Level {
    /// Claims resolved.
    pub ok: usize,
    /// Answers that were not a resolution.
    pub errors: usize,
    pub first_error: Option<String>,
    /// Seconds from the start to the last answer.
    pub wall: f64,
    /// Of the resolved claims, sorted.
    pub latencies: Vec<Duration>,
}

/// Drive `concurrency` connections through `frames` for at most `secs`.
///
/// Closed loop (`pace` = `None`): each connection sends its next claim as
/// soon as the last one is answered, so the daemon is saturated and the
/// latency is what a claim waits behind the others in flight.
///
/// Open loop (`pace` = claims per second, all connections together): claim
/// `i` is due at `i / pace` seconds after the start, on connection
/// `i mod concurrency`, and its latency counts from when it was due, not
/// from when it could be sent, so a slow answer that holds up the next
/// claim on its connection is charged to that claim too (no "coordinated
/// omission").
pub fn drive(
    addr: SocketAddr,
    frames: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    secs: f64,
    pace: Option<f64>,
) -> anyhow::Result<Level> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Connect everyone before the clock starts.
        let addr = addr.to_string();
        let mut conns = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            conns.push(TpConnection::connect(&addr).await?);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let mut tasks = tokio::task::JoinSet::new();
        for (k, mut s) in conns.into_iter().enumerate() {
            let frames = Arc::clone(&frames);
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut first_error = None;
                let mut round = 0usize;
                while start.elapsed() < limit {
                    let (i, t0) = match pace {
                        None => (next.fetch_add(1, Ordering::Relaxed), Instant::now()),
                        Some(rate) => {
                            let i = round * concurrency + k;
                            round += 1;
                            let due = start + Duration::from_secs_f64(i as f64 / rate);
                            if due - start >= limit {
                                break;
                            }
                            tokio::time::sleep_until(due.into()).await;
                            (i, due)
                        }
                    };
                    let Some(frame) = frames.get(i) else { break };
                    let answer = s.round_trip(frame).await?;
                    let took = t0.elapsed();
                    match answer.decode() {
                        Ok(Response::Claim(ClaimOutcome::Resolved { .. })) => lat.push(took),
                        other => {
                            errors += 1;
                            if first_error.is_none() {
                                first_error = Some(match other {
                                    Ok(r) => format!("{r:?}"),
                                    Err(e) => format!("{e:#}"),
                                });
                            }
                        }
                    }
                }
                anyhow::Ok((lat, errors, first_error))
            });
        }
        let mut level = Level {
            ok: 0,
            errors: 0,
            first_error: None,
            wall: 0.0,
            latencies: Vec::new(),
        };
        while let Some(r) = tasks.join_next().await {
            let (lat, errors, first) = r??;
            level.ok += lat.len();
            level.latencies.extend(lat);
            level.errors += errors;
            if level.first_error.is_none() {
                level.first_error = first;
            }
        }
        level.wall = start.elapsed().as_secs_f64();
        level.latencies.sort();
        anyhow::Ok(level)
    })
}

/// `daemon_rss_start`, `claim_e2e` per concurrency level, `claim_e2e_paced`
/// per load, `daemon_rss_after_claims`, `daemon_rss_idle_1000`: one fresh
/// daemon on a fresh journal in a scratch directory (removed afterwards,
/// kept on failure); between the closed-loop levels and the paced ones,
/// the alternating pairs ([`crate::pairs`]) at the best level, with `tp`.
pub fn e2e_phases(
    opts: &BenchOptions,
    target: &dyn Target,
    keys: &TpKeys,
    pool: &[IdentitySecret],
    device: &DeviceFigures,
    tp: &TrustedParty,
    report: &mut Report,
) -> anyhow::Result<E2eFigures> {
    let scratch = match &opts.scratch_dir {
        Some(d) => d.join(format!("vtp-bench-{}", std::process::id())),
        None => std::env::temp_dir().join(format!("vtp-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = (|| -> anyhow::Result<E2eFigures> {
        let max_c = opts.concurrency.iter().copied().max().unwrap_or(1);
        let cfg = target.scratch_config(keys, &scratch, opts.idle_connections + max_c + 64)?;
        let program = target.daemon_program()?;
        let daemon = start_daemon(&program, &cfg, &scratch, opts.allow_root)?;
        let metrics = daemon.metrics.expect("started with metrics");
        eprintln!(
            "bench: daemon pid {} on {} (journal and log in {})",
            daemon.pid(),
            daemon.addr,
            scratch.display()
        );
        let card = fetch_card(daemon.addr)?;
        let (rss0, _) = proc_rss(daemon.pid())?;
        report.figure(
            json!({"name": "daemon_rss_start", "rss_kib": rss0, "ops_per_s": Value::Null}),
            format!("{:.1} MiB resident after start-up", rss0 as f64 / 1024.0),
        );
        let mut best = 0f64;
        let mut cpu_at_best = 0f64;
        let mut best_c = 1usize;
        for (li, &c) in opts.concurrency.iter().enumerate() {
            let c = c.max(1);
            let expect = if c == 1 { device.ops_1 } else { device.ops_n };
            let count =
                ((expect * opts.seconds * 1.3) as usize + 2 * c + 16).min(MAX_CLAIMS_PER_LEVEL);
            let t = Instant::now();
            let frames = Arc::new(claim_frames(&card, pool, count, li * 1_000_003)?);
            eprintln!(
                "bench: made {count} claims for concurrency {c} in {:.1} s (not timed)",
                t.elapsed().as_secs_f64()
            );
            let commits0 = journal_commits(metrics);
            let cpu0 = proc_cpu(daemon.pid())?;
            let client0 = self_cpu();
            let level = drive(daemon.addr, Arc::clone(&frames), c, opts.seconds, None)?;
            let cpu = proc_cpu(daemon.pid())? - cpu0;
            let client = self_cpu() - client0;
            // Group commit: records per journal transaction (and fsync).
            let per_commit = match (commits0, journal_commits(metrics)) {
                (Some((b0, r0)), Some((b1, r1))) if b1 > b0 => Some((r1 - r0) / (b1 - b0)),
                _ => None,
            };
            let rate = level.ok as f64 / level.wall;
            if rate > best {
                best = rate;
                best_c = c;
                cpu_at_best = cpu / level.ok.max(1) as f64;
            }
            let p50 = percentile(&level.latencies, 0.50);
            let p99 = percentile(&level.latencies, 0.99);
            let ran_out = level.ok + level.errors >= frames.len();
            report.figure(
                json!({
                    "name": "claim_e2e", "concurrency": c, "ops_per_s": round(rate, 1),
                    "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                    "claims": level.ok, "errors": level.errors,
                    "daemon_cpu_ms_per_claim": round(cpu * 1e3 / level.ok.max(1) as f64, 3),
                    "client_cpu_ms_per_claim": round(client * 1e3 / level.ok.max(1) as f64, 3),
                    "records_per_commit": per_commit.map(|r| round(r, 2)),
                    "ran_out_of_claims": ran_out,
                }),
                format!(
                    "{rate:.0} claims/s at concurrency {c}: p50 {p50:.2} ms, p99 {p99:.2} ms, \
                     daemon CPU {:.3} ms/claim, {} claims per journal commit{}{}",
                    cpu * 1e3 / level.ok.max(1) as f64,
                    per_commit.map_or("?".to_owned(), |r| format!("{r:.1}")),
                    if level.errors > 0 {
                        format!(
                            ", {} errors (first: {})",
                            level.errors,
                            level.first_error.clone().unwrap_or_default()
                        )
                    } else {
                        String::new()
                    },
                    if ran_out {
                        " (ran out of claims before the time)"
                    } else {
                        ""
                    }
                ),
            );
        }
        let pairs = run_pairs(
            opts,
            tp,
            &device.claim,
            &daemon,
            &card,
            pool,
            best_c,
            best.max(device.ops_n),
            report,
        )?;
        // Open loop: the highest concurrency, offered a fixed rate below
        // saturation, so the latency is the daemon's, not the queue's.
        for (pi, &load) in opts.paced_load.iter().enumerate() {
            if best <= 0.0 {
                break;
            }
            let c = max_c.max(1);
            let offered = best * load;
            let count = ((offered * opts.seconds) as usize + c + 16).min(MAX_CLAIMS_PER_LEVEL);
            let frames = Arc::new(claim_frames(&card, pool, count, (100 + pi) * 1_000_003)?);
            let level = drive(daemon.addr, frames, c, opts.seconds, Some(offered))?;
            let rate = level.ok as f64 / level.wall;
            let p50 = percentile(&level.latencies, 0.50);
            let p99 = percentile(&level.latencies, 0.99);
            report.figure(
                json!({
                    "name": "claim_e2e_paced", "concurrency": c,
                    "offered_per_s": round(offered, 1), "load": round(load, 2),
                    "ops_per_s": round(rate, 1),
                    "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                    "claims": level.ok, "errors": level.errors,
                }),
                format!(
                    "{rate:.0} claims/s answered of {offered:.0}/s offered ({:.0}% of the best \
                     closed-loop rate) over {c} connections: p50 {p50:.2} ms, p99 {p99:.2} ms{}",
                    load * 100.0,
                    if level.errors > 0 {
                        format!(", {} errors", level.errors)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        let (rss1, hwm1) = proc_rss(daemon.pid())?;
        report.figure(
            json!({"name": "daemon_rss_after_claims", "rss_kib": rss1, "hwm_kib": hwm1, "ops_per_s": Value::Null}),
            format!("{:.1} MiB resident after the claims (peak {:.1} MiB)", rss1 as f64 / 1024.0, hwm1 as f64 / 1024.0),
        );
        // Idle connections: open them all, let the daemon accept them.
        let mut idle = Vec::with_capacity(opts.idle_connections);
        for _ in 0..opts.idle_connections {
            idle.push(std::net::TcpStream::connect(daemon.addr)?);
        }
        let want = opts.idle_connections;
        let t = Instant::now();
        while open_fds(daemon.pid()) < want && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (rss2, hwm2) = proc_rss(daemon.pid())?;
        let open_fds = open_fds(daemon.pid());
        report.figure(
            json!({"name": "daemon_rss_idle_1000", "idle_connections": want, "rss_kib": rss2,
                   "hwm_kib": hwm2, "open_fds": open_fds, "ops_per_s": Value::Null}),
            format!(
                "{:.1} MiB resident with {want} idle connections open (peak {:.1} MiB, {open_fds} fds)",
                rss2 as f64 / 1024.0,
                hwm2 as f64 / 1024.0
            ),
        );
        drop(idle);
        daemon
            .stop(Duration::from_secs(30))
            .context("the benchmark daemon did not stop after SIGTERM")?;
        Ok(E2eFigures {
            best,
            cpu_at_best,
            pairs,
        })
    })();
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Err(_) => eprintln!("bench: kept {} for inspection", scratch.display()),
    }
    result
}
