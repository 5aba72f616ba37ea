//! Phase 5, the headline ratio measured so that it can be steered by:
//! `device_raw` and `claim_e2e` as **alternating pairs**.
//!
//! On a shared machine the neighbours' load changes from minute to minute,
//! and phase 1 (`device_raw`) runs minutes before phase 4 (`claim_e2e`):
//! their quotient then measures the neighbours as much as the daemon (the
//! same binary gave 0.62, 0.81 and 0.90 within an hour). Here each pair runs
//! the bare device operation and then claims through the daemon, back to
//! back for `--seconds` each, `--pairs` times, as an A/B timer does; each
//! pair gives one ratio under (nearly) one load, and the report is the
//! median with its min-max. Beside it, the CPU-time ratio of each pair
//! (device CPU per operation ÷ daemon CPU per claim), which the load skews
//! least.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use vtp_device::TrustedParty;
use vtp_protocol::decide::ResolvableClaim;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::tp_card::TpCard;
use vtp_testkit::Daemon;

use crate::claims::claim_frames;
use crate::device::device_run;
use crate::e2e::drive;
use crate::proc_stats::proc_cpu;
use crate::report::{round, Report};
use crate::{threads, BenchOptions};

/// One pair's figures.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// `device_raw` at one thread per CPU, operations per second.
    pub device_ops: f64,
    /// CPU seconds per device operation in that run.
    pub device_cpu: f64,
    /// `claim_e2e` at the given concurrency, claims per second.
    pub e2e_ops: f64,
    /// The daemon's CPU seconds per claim in that run.
    pub daemon_cpu: f64,
}

impl Pair {
    pub fn ratio(&self) -> f64 {
        self.e2e_ops / self.device_ops.max(1e-9)
    }
    pub fn cpu_ratio(&self) -> f64 {
        self.device_cpu / self.daemon_cpu.max(1e-9)
    }
}

/// Median and range of a set of figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no figures. The median of an even count is the mean of
    /// the middle two.
    pub fn of(xs: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// The two ratios over the pairs.
#[derive(Debug, Clone, Copy)]
pub struct PairsSummary {
    pub ratio: Spread,
    pub cpu_ratio: Spread,
    pub pairs: usize,
    pub concurrency: usize,
}

/// Run `opts.pairs` pairs against the running `daemon` at `concurrency`,
/// with every claim made before the first pair starts. One JSON figure per
/// pair (`ratio_pair`), and the summary.
#[allow(clippy::too_many_arguments)]
pub fn run_pairs(
    opts: &BenchOptions,
    tp: &TrustedParty,
    device_claim: &ResolvableClaim,
    daemon: &Daemon,
    card: &TpCard,
    pool: &[IdentitySecret],
    concurrency: usize,
    expect_per_s: f64,
    report: &mut Report,
) -> anyhow::Result<Option<PairsSummary>> {
    if opts.pairs == 0 {
        return Ok(None);
    }
    let n = threads();
    let per_pair = ((expect_per_s * opts.seconds * 1.5) as usize + 2 * concurrency + 16)
        .min(crate::e2e::MAX_CLAIMS_PER_LEVEL);
    let t = Instant::now();
    let mut frames = Vec::with_capacity(opts.pairs);
    for k in 0..opts.pairs {
        frames.push(Arc::new(claim_frames(
            card,
            pool,
            per_pair,
            (1_000 + k) * 1_000_003,
        )?));
    }
    eprintln!(
        "bench: made {} claims for {} alternating pairs in {:.1} s (not timed)",
        per_pair * opts.pairs,
        opts.pairs,
        t.elapsed().as_secs_f64()
    );
    let mut pairs = Vec::with_capacity(opts.pairs);
    for (k, frames) in frames.into_iter().enumerate() {
        let (ops, wall, cpu) = device_run(tp, device_claim, n, opts.seconds, usize::MAX)?;
        let cpu0 = proc_cpu(daemon.pid())?;
        let level = drive(daemon.addr, frames, concurrency, opts.seconds, None)
            .with_context(|| format!("pair {}: claims through the daemon", k + 1))?;
        let daemon_cpu = proc_cpu(daemon.pid())? - cpu0;
        let pair = Pair {
            device_ops: ops as f64 / wall,
            device_cpu: cpu / ops.max(1) as f64,
            e2e_ops: level.ok as f64 / level.wall,
            daemon_cpu: daemon_cpu / level.ok.max(1) as f64,
        };
        report.figure(
            json!({"name": "ratio_pair", "pair": k + 1, "threads": n, "concurrency": concurrency,
                   "device_ops_per_s": round(pair.device_ops, 1),
                   "ops_per_s": round(pair.e2e_ops, 1),
                   "errors": level.errors,
                   "ratio": round(pair.ratio(), 3), "cpu_ratio": round(pair.cpu_ratio(), 3),
                   "device_cpu_ms_per_op": round(pair.device_cpu * 1e3, 3),
                   "daemon_cpu_ms_per_claim": round(pair.daemon_cpu * 1e3, 3)}),
            format!(
                "pair {}: device_raw {:.0}/s, claim_e2e {:.0}/s at concurrency {concurrency}: \
                 ratio {:.2}, CPU ratio {:.2}{}",
                k + 1,
                pair.device_ops,
                pair.e2e_ops,
                pair.ratio(),
                pair.cpu_ratio(),
                if level.errors > 0 {
                    format!(" ({} errors)", level.errors)
                } else {
                    String::new()
                }
            ),
        );
        pairs.push(pair);
    }
    Ok(Some(PairsSummary {
        ratio: Spread::of(pairs.iter().map(Pair::ratio)).expect("at least one pair"),
        cpu_ratio: Spread::of(pairs.iter().map(Pair::cpu_ratio)).expect("at least one pair"),
        pairs: pairs.len(),
        concurrency,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        assert_eq!(Spread::of([]), None);
        let s = Spread::of([0.9, 0.62, 0.81]).unwrap();
        assert_eq!((s.median, s.min, s.max), (0.81, 0.62, 0.9));
        let s = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        let s = Spread::of([f64::NAN, 1.0]).unwrap();
        assert_eq!(s.median, 1.0, "a failed pair does not move the median");
    }
}
