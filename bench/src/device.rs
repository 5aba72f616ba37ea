//! Phases 1 and 2, in this process: the bare device operation
//! (`device_raw`), the visible against the invisible TP
//! (`tp_visible_vs_invisible`), and what the daemon does to a claim before
//! the device sees it (`claim_checks`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use vtp_device::TrustedParty;
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::decide::ResolvableClaim;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, Request};

use crate::claims::{claim_frames, new_claim};
use crate::proc_stats::self_cpu;
use crate::report::{round, Report};
use crate::{now, threads, BenchOptions};

/// Where the device-only runs say their affidavits are recorded (they are
/// not recorded anywhere; the device does not care).
const POSITION: ChainPosition = ChainPosition {
    seq: 1,
    prev: ChainPosition::GENESIS_PREV,
};
/// Longest the visible-TP run may take before it is scaled from what ran.
const VISIBLE_TP_MAX: Duration = Duration::from_secs(60);

/// Resolve `claim` on `threads` threads for `secs`: (ops, wall seconds, CPU seconds).
pub fn device_run(
    tp: &TrustedParty,
    claim: &ResolvableClaim,
    threads: usize,
    secs: f64,
    max_ops: usize,
) -> anyhow::Result<(usize, f64, f64)> {
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let cpu0 = self_cpu();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if done.fetch_add(1, Ordering::Relaxed) >= max_ops {
                        done.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    match tp.resolve(claim, POSITION) {
                        Ok(ClaimOutcome::Resolved { .. }) => {}
                        _ => {
                            failed.store(true, Ordering::Relaxed);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    if start.elapsed().as_secs_f64() >= secs {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    if failed.load(Ordering::Relaxed) {
        bail!("the device did not resolve the benchmark claim");
    }
    Ok((done.load(Ordering::Relaxed), wall, cpu))
}

/// What the device phases found, for the later figures.
pub struct DeviceFigures {
    /// Device operations per second on 1 thread.
    pub ops_1: f64,
    /// ...and on one thread per CPU.
    pub ops_n: f64,
    /// CPU seconds per device operation (1 thread).
    pub cpu_per_op: f64,
    /// The claim the device resolves again and again.
    pub claim: ResolvableClaim,
}

/// `device_raw` at 1 and N threads (and `VTP_BENCH_DEVICE_THREADS`), then
/// `tp_visible_vs_invisible`.
pub fn device_phases(
    opts: &BenchOptions,
    tp: &TrustedParty,
    pool: &[IdentitySecret],
    report: &mut Report,
) -> anyhow::Result<DeviceFigures> {
    let card = tp.card().clone();
    let t = now();
    let claim = new_claim(&card, &pool[0], &pool[1], t)?.decide_fresh(&card, t)?;
    // Warm-up: sessions, key handles.
    device_run(tp, &claim, 1, 0.2, 50)?;
    let n = threads();
    let (ops1, wall1, cpu1) = device_run(tp, &claim, 1, opts.seconds, usize::MAX)?;
    let ops_1 = ops1 as f64 / wall1;
    report.figure(
        json!({"name": "device_raw", "threads": 1, "ops_per_s": round(ops_1, 1),
               "cpu_ms_per_op": round(cpu1 * 1e3 / ops1.max(1) as f64, 3)}),
        format!("{ops_1:.0} ops/s on 1 thread"),
    );
    let (opsn, walln, _) = device_run(tp, &claim, n, opts.seconds, usize::MAX)?;
    let ops_n = opsn as f64 / walln;
    report.figure(
        json!({"name": "device_raw", "threads": n, "ops_per_s": round(ops_n, 1)}),
        format!("{ops_n:.0} ops/s on {n} threads"),
    );
    if std::env::var_os("VTP_BENCH_DEVICE_THREADS").is_some() {
        let many: usize = std::env::var("VTP_BENCH_DEVICE_THREADS")?.parse()?;
        let (ops, wall, cpu) = device_run(tp, &claim, many, opts.seconds, usize::MAX)?;
        report.figure(
            json!({"name": "device_raw_oversubscribed", "threads": many,
                   "ops_per_s": round(ops as f64 / wall, 1),
                   "cpu_ms_per_op": round(cpu * 1e3 / ops.max(1) as f64, 3)}),
            format!("{:.0} ops/s on {many} threads", ops as f64 / wall),
        );
    }

    // Visible (every exchange) vs invisible (cheating exchanges only).
    let exchanges = opts.exchanges.max(1);
    let cheating = ((exchanges as f64) * opts.cheat_percent / 100.0).round() as usize;
    let (vtp_ops, _, vtp_cpu) = device_run(tp, &claim, n, f64::INFINITY, cheating)?;
    let (vis_ran, vis_wall_ran, vis_cpu_ran) =
        device_run(tp, &claim, n, VISIBLE_TP_MAX.as_secs_f64(), exchanges)?;
    let scaled = vis_ran < exchanges;
    let vis_cpu = vis_cpu_ran * exchanges as f64 / vis_ran.max(1) as f64;
    let vis_wall = vis_wall_ran * exchanges as f64 / vis_ran.max(1) as f64;
    report.figure(
        json!({
            "name": "tp_visible_vs_invisible",
            "exchanges": exchanges,
            "cheat_percent": opts.cheat_percent,
            "threads": n,
            "ops_per_s": round(vis_ran as f64 / vis_wall_ran.max(1e-9), 1),
            "visible_tp_device_ops": exchanges,
            "visible_tp_cpu_s": round(vis_cpu, 3),
            "visible_tp_wall_s": round(vis_wall, 3),
            "vtp_tp_device_ops": vtp_ops,
            "vtp_tp_cpu_s": round(vtp_cpu, 3),
            "device_ops_saved_factor": round(exchanges as f64 / vtp_ops.max(1) as f64, 1),
            "visible_scaled_from_ops": if scaled { json!(vis_ran) } else { Value::Null },
        }),
        format!(
            "{exchanges} exchanges, {}% cheating: visible TP {exchanges} device ops, {vis_cpu:.2} CPU s \
             ({vis_wall:.1} s on {n} threads{}); vtp {vtp_ops} device ops, {vtp_cpu:.3} CPU s",
            opts.cheat_percent,
            if scaled {
                format!(", scaled from {vis_ran} ops")
            } else {
                String::new()
            }
        ),
    );
    Ok(DeviceFigures {
        ops_1,
        ops_n,
        cpu_per_op: cpu1 / ops1.max(1) as f64,
        claim,
    })
}

/// What the daemon does to every claim before the device sees it: decode
/// the frame and check every signature ([`Claim::verify_authentic`]), on
/// one thread, for claims between known parties (their cards remembered).
pub fn claim_checks(
    opts: &BenchOptions,
    card: &TpCard,
    pool: &[IdentitySecret],
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = 2000;
    let frames = claim_frames(card, pool, count, 7)?;
    let t = now();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < opts.seconds.min(2.0) {
        let f = &frames[done % count];
        match vtp_protocol::wire::decode_request(&f[4..])? {
            Request::Claim(c) => {
                c.authenticate(card, t)?;
            }
            _ => bail!("not a claim"),
        }
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    report.figure(
        json!({"name": "claim_checks", "threads": 1, "ops_per_s": round(rate, 1),
               "us_per_claim": round(1e6 / rate, 1)}),
        format!(
            "{rate:.0} claims/s decoded and signature-checked on 1 thread ({:.0} µs each)",
            1e6 / rate
        ),
    );
    Ok(())
}
