//! # vtp-bench — `tp-daemon bench`: how fast is this TP, on this machine, with this token?
//!
//! One run measures, in phases that never overlap, each bounded in time
//! (`--seconds` per phase) and in count:
//!
//! 1. **device_raw** — the bare device operation (`TrustedParty::resolve`:
//!    OAEP unwrap + AES-GCM + ECDSA sign through cryptoki; no daemon, no
//!    journal), in this process, at 1 and N threads (N = the number of
//!    CPUs). The device operation is stateless, so one pre-built claim is
//!    resolved again and again.
//! 2. **tp_visible_vs_invisible** — for `--exchanges` exchanges of which
//!    `--cheat-percent` cheat: the TP device operations and CPU seconds of
//!    vtp's invisible TP (one device operation per cheating exchange)
//!    against a visible TP that handles every exchange (Micali's virtual-TP paper's CEM0),
//!    modelled as the same device operation per exchange; both measured by
//!    running those operations.
//! 3. **optimistic** — the honest path with no TP at all: full exchanges
//!    (A1 + B1 + A2 + B2 with a 1 KiB message, every file encoded and
//!    decoded) per second on one thread, and the client's streaming
//!    throughput for a `--big-mb` message (the two encryption passes of
//!    `vtp send`, the decryption pass of `vtp open`; in memory, no disk).
//! 4. **claim_e2e** — claims through the real daemon: `tp-daemon serve` as
//!    a child process on 127.0.0.1:0 with a throwaway data directory (the
//!    operator's journal is never touched: the key ring is imported into a
//!    fresh journal), one connection per concurrent worker, every claim a
//!    new envelope (so a real resolution and a durable journal commit),
//!    claims made before the clock starts. Per level: ops/s, p50/p99
//!    latency, the daemon's CPU per claim. Then the daemon's memory with
//!    `--idle-connections` idle connections open.
//! 5. **ratio pairs** — between the closed-loop and the paced claims:
//!    `--pairs` alternating runs of `device_raw` (one thread per CPU) and
//!    `claim_e2e` (at the best level), `--seconds` each, so that each pair
//!    sees one load on a shared machine ([`pairs`]); the headline ratios are
//!    their medians with min-max.
//!
//! stdout: one JSON object per figure (`name`, `ops_per_s`, and where they
//! apply `threads` / `concurrency`, `p50_ms`, `p99_ms`), ending with
//! `{"name":"ratio_claim_e2e_to_device_raw","value":…}`. stderr: progress
//! and a readable table. See docs/performance.md.
//!
//! | module | what lives there |
//! |---|---|
//! | [`device`] | phases 1 and 2 in this process: `device_raw`, `tp_visible_vs_invisible`, `claim_checks` |
//! | [`optimistic`] | phase 3: the honest exchange and the big message |
//! | [`e2e`] | phase 4: the daemon started through `vtp_testkit::Serve`, claims over `vtp_client`'s [`TpConnection`](vtp_client::tp_client::TpConnection), memory |
//! | [`claims`] | parties, envelopes, claims and their frames, made before any clock starts |
//! | [`proc_stats`] | CPU, memory and file descriptors from `/proc` and `getrusage`, the load average |
//! | [`report`] | JSON lines, readable lines, the table |
//!
//! The bench cannot depend on `tp-daemon` (whose `bench` command depends on
//! it), so what only the daemon knows — its config file, how it opens the
//! token, its journal's key ring, how to write a throwaway config for the
//! measured daemon — comes in through [`Target`], which `tp-daemon`
//! implements.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use serde_json::{json, Value};
use vtp_device::{Token, TpKeys, TrustedParty};

pub mod claims;
pub mod device;
pub mod e2e;
pub mod optimistic;
pub mod pairs;
pub mod proc_stats;
pub mod report;

use device::{claim_checks, device_phases};
use e2e::e2e_phases;
use optimistic::optimistic_phases;
use proc_stats::loadavg;
use report::{round, Report};

/// What to measure, and how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds per timed phase.
    pub seconds: f64,
    /// Concurrency levels of the claim_e2e phase.
    pub concurrency: Vec<usize>,
    /// Paced runs at the highest concurrency, offering these fractions of
    /// the best closed-loop claim rate.
    pub paced_load: Vec<f64>,
    /// Exchanges of the visible-vs-invisible comparison.
    pub exchanges: usize,
    /// Percentage of them that cheat (need the TP).
    pub cheat_percent: f64,
    /// Size of the big message, MiB.
    pub big_mb: u64,
    /// Idle connections held open while the daemon's memory is read.
    pub idle_connections: usize,
    /// Distinct parties the claims are spread over.
    pub identities: usize,
    /// Where the throwaway daemon keeps its journal (default: a new
    /// directory under the system's temporary directory).
    pub scratch_dir: Option<PathBuf>,
    /// Pass `--allow-root` to the daemon.
    pub allow_root: bool,
    /// Alternating device_raw / claim_e2e pairs for the headline ratio
    /// (0: only the single-shot ratio of phases 1 and 4).
    pub pairs: usize,
}

impl BenchOptions {
    /// Refuse options that cannot be measured.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.seconds <= 0.0 || !self.seconds.is_finite() {
            bail!("--seconds must be positive");
        }
        if self.concurrency.is_empty() {
            bail!("--concurrency needs at least one level");
        }
        if let Some(l) = self
            .paced_load
            .iter()
            .find(|l| !(l.is_finite() && **l > 0.0 && **l <= 1.0))
        {
            bail!("--paced-load {l}: each load must be a fraction above 0 and at most 1");
        }
        Ok(())
    }
}

/// The TP under measurement, as the program that serves it knows it.
pub trait Target {
    /// Open the token and the TP's keys. Called first, while the process
    /// is single-threaded (opening a software token sets its configuration
    /// variable).
    fn open(&self) -> anyhow::Result<OpenTp>;

    /// Write a config that serves the same token and keys from a fresh
    /// journal under `scratch`, with room for `connections` connections
    /// from one address; return its path. The operator's journal is never
    /// touched.
    fn scratch_config(
        &self,
        keys: &TpKeys,
        scratch: &Path,
        connections: usize,
    ) -> anyhow::Result<PathBuf>;

    /// The program whose `serve` command runs the daemon.
    fn daemon_program(&self) -> anyhow::Result<PathBuf>;
}

/// The opened TP: its token, the device operations, the keys.
pub struct OpenTp {
    pub token: Arc<Token>,
    pub tp: TrustedParty,
    pub keys: TpKeys,
}

pub(crate) use vtp_testkit::now;

pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Run the whole benchmark.
pub fn run(opts: &BenchOptions, target: &dyn Target) -> anyhow::Result<()> {
    opts.check()?;
    let mut report = Report::new();
    let load_before = loadavg();
    eprintln!(
        "bench: {} threads; {} s per phase; load average {load_before:.2}",
        threads(),
        opts.seconds
    );

    // The token first, while this process is single-threaded (opening a
    // software token sets SOFTHSM2_CONF).
    let OpenTp { token, tp, keys } = target.open()?;
    let info = token.info();
    let card = tp.card().clone();
    let bits = card.current_key().bits();
    eprintln!(
        "bench: token \"{}\" ({} {}), RSA-{bits} decryption key {}",
        info.label, info.manufacturer, info.model, keys.current
    );
    let t = Instant::now();
    let pool = claims::parties(opts.identities)?;
    eprintln!(
        "bench: made {} parties in {:.1} s (not timed)",
        pool.len(),
        t.elapsed().as_secs_f64()
    );

    let device = device_phases(opts, &tp, &pool, &mut report)?;
    claim_checks(opts, &card, &pool, &mut report)?;
    optimistic_phases(opts, &card, &pool, &mut report)?;
    // The device stays open beside the daemon for the alternating pairs
    // (phase 5); the two never run at the same moment.
    let e2e = e2e_phases(opts, target, &keys, &pool, &device, &tp, &mut report)?;
    drop(tp);
    drop(token);
    let single_ratio = e2e.best / device.ops_n.max(1e-9);
    // The same ratio from CPU time, which other work on the machine does
    // not skew: at saturation the daemon does device_cpu of device work
    // for every daemon_cpu it spends.
    let single_cpu_ratio = device.cpu_per_op / e2e.cpu_at_best.max(1e-9);
    match &e2e.pairs {
        Some(p) => {
            report.figure(
                json!({"name": "ratio_cpu_device_op_to_daemon_claim",
                       "value": round(p.cpu_ratio.median, 3),
                       "min": round(p.cpu_ratio.min, 3), "max": round(p.cpu_ratio.max, 3),
                       "pairs": p.pairs, "single_run_value": round(single_cpu_ratio, 3),
                       "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
                       "daemon_cpu_ms_per_claim": round(e2e.cpu_at_best * 1e3, 3),
                       "ops_per_s": Value::Null}),
                format!(
                    "{:.2} median of {} pairs (min {:.2}, max {:.2}): device CPU per op / daemon \
                     CPU per claim",
                    p.cpu_ratio.median, p.pairs, p.cpu_ratio.min, p.cpu_ratio.max
                ),
            );
            report.figure(
                json!({"name": "ratio_claim_e2e_to_device_raw", "value": round(p.ratio.median, 3),
                       "min": round(p.ratio.min, 3), "max": round(p.ratio.max, 3),
                       "pairs": p.pairs, "concurrency": p.concurrency,
                       "single_run_value": round(single_ratio, 3),
                       "rsa_bits": bits, "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
                       "loadavg_before": load_before, "loadavg_after": loadavg()}),
                format!(
                    "{:.2} median of {} alternating pairs (min {:.2}, max {:.2}; claim_e2e at \
                     concurrency {} over device_raw at {} threads; phases 1 and 4 alone: {single_ratio:.2})",
                    p.ratio.median,
                    p.pairs,
                    p.ratio.min,
                    p.ratio.max,
                    p.concurrency,
                    threads()
                ),
            );
        }
        None => {
            report.figure(
                json!({"name": "ratio_cpu_device_op_to_daemon_claim", "value": round(single_cpu_ratio, 3),
                       "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
                       "daemon_cpu_ms_per_claim": round(e2e.cpu_at_best * 1e3, 3), "ops_per_s": Value::Null}),
                format!(
                    "{single_cpu_ratio:.2} (device {:.3} ms CPU per op / daemon {:.3} ms CPU per claim at the best level)",
                    device.cpu_per_op * 1e3,
                    e2e.cpu_at_best * 1e3
                ),
            );
            report.figure(
                json!({"name": "ratio_claim_e2e_to_device_raw", "value": round(single_ratio, 3),
                       "rsa_bits": bits, "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
                       "loadavg_before": load_before, "loadavg_after": loadavg()}),
                format!(
                    "{single_ratio:.2} (best claim_e2e {:.0}/s over device_raw {:.0}/s at {} threads)",
                    e2e.best,
                    device.ops_n,
                    threads()
                ),
            );
        }
    }
    report.table();
    Ok(())
}
