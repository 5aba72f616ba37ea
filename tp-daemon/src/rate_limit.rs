//! Per-identity rate limiting: a token bucket per identity id, so that one
//! identity cannot take the TP's device and journal for itself.
//!
//! **Who is charged.** The identity a request names as its signer: the
//! claimant (the recipient card in the claim's receipt, whose key signs the
//! claim), the sender asking for her receipts, the party asking for an
//! unclaimed certificate. Card requests name nobody and are not limited.
//!
//! **Spoofing cannot cost anyone anything.** Identity cards are public, so
//! anyone can put Bob's card into a request. The server therefore *checks*
//! the bucket before handling a request (an empty bucket: `Busy`, and the
//! request is not handled), but *charges* it only after the TP answered it
//! with something other than an error — which it does only for requests
//! that carry the named identity's valid signature. A stream of forged
//! claims in Bob's name is refused by the signature check and never drains
//! Bob's bucket, so it can never delay Bob's real claim before his
//! deadline. (Requests refused by the TP are bounded by the per-connection
//! limits instead; see [`crate::server`].)
//!
//! Because the charge comes after the answer, requests of one identity
//! that run concurrently may all pass the check; the bucket then goes into
//! debt (at most `burst` tokens deep) and the identity waits that much
//! longer, so the long-run rate is exact.
//!
//! Memory: a bucket exists only for an identity charged recently; buckets
//! that have refilled completely are dropped when the table grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vtp_protocol::wire::Request;
use vtp_protocol::IdentityId;

/// Table size at which full buckets are first swept out.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by identity id.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IdentityId, Bucket>,
    sweep_at: usize,
}

impl RateLimiter {
    /// `rate` requests per second on average, bursts of `burst`. `None`
    /// (no limiting) when `rate` is zero.
    pub fn new(rate: f64, burst: u32) -> Option<RateLimiter> {
        if rate <= 0.0 {
            return None;
        }
        Some(RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        })
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + dt * self.rate).min(self.burst)
    }

    /// May `id` make a request now? `Err(wait)`: its bucket is empty; a
    /// request after `wait` would pass.
    pub fn check(&self, id: &IdentityId, now: Instant) -> Result<(), Duration> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match t.buckets.get(id) {
            None => Ok(()),
            Some(b) => {
                let tokens = self.refilled(b, now);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
                }
            }
        }
    }

    /// Charge one answered request to `id`.
    pub fn charge(&self, id: &IdentityId, now: Instant) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let tokens = match t.buckets.get(id) {
            Some(b) => self.refilled(b, now),
            None => self.burst,
        };
        t.buckets.insert(
            *id,
            Bucket {
                tokens: (tokens - 1.0).max(-self.burst),
                at: now,
            },
        );
        if t.buckets.len() >= t.sweep_at {
            let burst = self.burst;
            t.buckets.retain(|_, b| self.refilled(b, now) < burst);
            t.sweep_at = (2 * t.buckets.len()).max(SWEEP_AT);
        }
    }

    /// Identities with a bucket (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }
}

/// The identity a request names as its signer (see the module docs).
pub fn requester(r: &Request) -> Option<IdentityId> {
    match r {
        Request::GetCard => None,
        Request::Claim(c) => Some(c.body.receipt.recipient_card.id()),
        Request::FetchReceipts(f) => Some(f.body.sender_card.id()),
        Request::Unclaimed(u) => Some(u.body.requester_card.id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtp_protocol::Digest32;

    fn id(n: u8) -> IdentityId {
        IdentityId(Digest32([n; 32]))
    }

    #[test]
    fn burst_then_rate() {
        let l = RateLimiter::new(2.0, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check(&id(1), t0).is_ok());
            l.charge(&id(1), t0);
        }
        let wait = l.check(&id(1), t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Others are not affected.
        assert!(l.check(&id(2), t0).is_ok());
        // Half a second later: one more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check(&id(1), t1).is_ok());
        l.charge(&id(1), t1);
        assert!(l.check(&id(1), t1).is_err());
        // Refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(l.check(&id(1), t2).is_ok());
            l.charge(&id(1), t2);
        }
        assert!(l.check(&id(1), t2).is_err());
    }

    #[test]
    fn concurrent_overshoot_is_paid_back() {
        let l = RateLimiter::new(1.0, 2).unwrap();
        let t0 = Instant::now();
        // Ten requests passed the check together, then were all answered.
        for _ in 0..10 {
            l.charge(&id(1), t0);
        }
        // Debt is capped at the burst: 2 - 10 -> -2; one token at 3 s.
        assert!(l.check(&id(1), t0 + Duration::from_millis(2900)).is_err());
        assert!(l.check(&id(1), t0 + Duration::from_millis(3000)).is_ok());
    }

    #[test]
    fn zero_rate_is_off_and_full_buckets_are_swept() {
        assert!(RateLimiter::new(0.0, 10).is_none());
        let l = RateLimiter::new(1000.0, 1).unwrap();
        let key = |tag: u8, k: u32| {
            let mut d = [tag; 32];
            d[..4].copy_from_slice(&k.to_be_bytes());
            IdentityId(Digest32(d))
        };
        let t0 = Instant::now();
        // 5120 identities with empty buckets: the sweep at 4096 keeps them.
        for k in 0..5120 {
            l.charge(&key(1, k), t0);
        }
        assert_eq!(l.tracked(), 5120);
        // A second later they are full again; the next sweep (at 8192)
        // drops them and keeps only the ones charged just now.
        let t1 = t0 + Duration::from_secs(1);
        for k in 0..3072 {
            l.charge(&key(2, k), t1);
        }
        assert_eq!(l.tracked(), 3072);
    }
}
