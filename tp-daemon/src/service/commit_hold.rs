//! How long the journal writer holds a batch open, adapted to the token.
//!
//! Group commit pays off only if the records it waits for arrive while it
//! waits. They come from the device threads, one per device operation, so
//! the right hold is about one device operation: with RSA-2048 on SoftHSM
//! that is ~1 ms, with RSA-3072 ~3 ms, on a real HSM something else again.
//! A fixed hold is too short for the slow keys (a batch closes before the
//! next record is signed) and too long for fast ones (claims wait for
//! records that are not coming). So the device threads report how long
//! each operation took ([`OpTime::observe`]), and the writer holds a batch
//! for [`OPS_PER_HOLD`] times the recent mean operation time, at most
//! `[limits] commit_delay_us`, and only while claims are waiting for a
//! device thread (when none are, no record is on its way and a lone claim
//! never waits).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::journal::writer::HoldProbe;

/// The recent mean duration of a device operation: an exponentially
/// weighted moving average (weight 1/8 for each new operation), lock-free
/// and approximate (two threads observing at once may lose one sample,
/// which a mean does not miss).
#[derive(Debug, Default)]
pub struct OpTime {
    /// Nanoseconds; 0 until the first operation.
    mean_ns: AtomicU64,
}

impl OpTime {
    pub fn new() -> Arc<OpTime> {
        Arc::new(OpTime::default())
    }

    /// One device operation (decrypt and sign a claim, or sign an
    /// unclaimed statement) took `d`.
    pub fn observe(&self, d: Duration) {
        let x = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let old = self.mean_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            x
        } else {
            // old + (x - old) / 8, in signed arithmetic.
            let delta = (x as i128 - old as i128) / 8;
            (old as i128 + delta).clamp(1, u64::MAX as i128) as u64
        };
        self.mean_ns.store(new, Ordering::Relaxed);
    }

    /// The recent mean, or `None` before the first operation.
    pub fn mean(&self) -> Option<Duration> {
        match self.mean_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

/// A batch is held for this many device operations: each device thread
/// then delivers about two more records into it, which is what the fixed
/// 2 ms hold gave with RSA-2048 on SoftHSM (3.6-4 records per commit, see
/// docs/performance.md), now for any key size and token.
pub const OPS_PER_HOLD: u32 = 2;

/// The writer's hold rule: while `busy()` (claims wait for a device
/// thread), hold for [`OPS_PER_HOLD`] mean device operations, at most
/// `max`; before the first operation is timed, hold for `max`. `None`
/// (commit at once) when not busy or when `max` is zero.
pub fn probe(
    max: Duration,
    op_time: Arc<OpTime>,
    busy: impl Fn() -> bool + Send + Sync + 'static,
) -> HoldProbe {
    Arc::new(move || {
        if max.is_zero() || !busy() {
            return None;
        }
        Some(
            op_time
                .mean()
                .map_or(max, |m| m.saturating_mul(OPS_PER_HOLD).min(max)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_follows_the_operations() {
        let t = OpTime::default();
        assert_eq!(t.mean(), None);
        t.observe(Duration::from_millis(3));
        assert_eq!(t.mean(), Some(Duration::from_millis(3)));
        for _ in 0..100 {
            t.observe(Duration::from_millis(1));
        }
        let m = t.mean().unwrap();
        assert!(
            m >= Duration::from_micros(999) && m < Duration::from_micros(1010),
            "{m:?}"
        );
    }

    #[test]
    fn the_hold_is_the_mean_capped_and_only_when_busy() {
        let t = OpTime::new();
        let max = Duration::from_millis(5);
        let idle = probe(max, Arc::clone(&t), || false);
        let busy = probe(max, Arc::clone(&t), || true);
        assert_eq!(idle(), None, "nothing waits: commit at once");
        assert_eq!(busy(), Some(max), "not timed yet: the cap");
        t.observe(Duration::from_millis(2));
        assert_eq!(busy(), Some(Duration::from_millis(4)), "two operations");
        for _ in 0..200 {
            t.observe(Duration::from_millis(50));
        }
        assert_eq!(busy(), Some(max), "a slow token is capped");
        let off = probe(Duration::ZERO, t, || true);
        assert_eq!(off(), None, "commit_delay_us = 0 turns holding off");
    }
}
