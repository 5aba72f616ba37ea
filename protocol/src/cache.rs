//! Memo of checks already passed: decoding a card or a public key that this
//! process has checked before skips the expensive part of the check.
//!
//! Decoding a claim decodes three cards (the sender's and the recipient's
//! identity cards and the TP card inside the envelope) and five compressed
//! P-256 points. Each card check is an ECDSA verification and each point a
//! square root in the field: together several times the CPU of the three
//! signatures over the claim itself. The same cards come back again and
//! again (the TP's own card in every envelope; a party's card in each of
//! its exchanges), so the checks are remembered here.
//!
//! What keeps the guarantee "a value that exists was checked":
//! - only **successful** checks are recorded, keyed by the SHA-256 of
//!   exactly the bytes that were checked (card body and signature), or by
//!   the encoded point itself; a hit means these very bytes passed before;
//! - the check is a pure function of those bytes (no clock, no context),
//!   so its result cannot have changed;
//! - bad input is never recorded, so it cannot displace the check.
//!
//! Memory is bounded: two generations of at most [`GENERATION`] entries
//! each; when the young one is full it becomes the old one and the previous
//! old one is dropped (an approximation of least-recently-used that needs
//! no bookkeeping per hit). An adversary who floods the memo with valid
//! cards of its own only makes the checks run again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

/// Entries per generation of each memo.
pub const GENERATION: usize = 4096;

/// A bounded, thread-safe memo.
pub(crate) struct Memo<K, V> {
    generations: Mutex<(HashMap<K, V>, HashMap<K, V>)>,
}

impl<K: Hash + Eq + Clone, V: Clone> Memo<K, V> {
    fn new() -> Self {
        Memo {
            generations: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = g.0.get(key) {
            return Some(v.clone());
        }
        // Found in the old generation: keep it by moving it to the young one.
        let v = g.1.remove(key)?;
        Self::insert_locked(&mut g, key.clone(), v.clone());
        Some(v)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        Self::insert_locked(&mut g, key, value);
    }

    fn insert_locked(g: &mut (HashMap<K, V>, HashMap<K, V>), key: K, value: V) {
        if g.0.len() >= GENERATION {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(key, value);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.generations.lock().unwrap();
        g.0.len() + g.1.len()
    }
}

/// Cards whose self-signature (and, for TP cards, keys) checked out, by
/// the SHA-256 of `kind || body || signature` (see [`card_key`]).
pub(crate) fn cards() -> &'static Memo<[u8; 32], ()> {
    static CARDS: OnceLock<Memo<[u8; 32], ()>> = OnceLock::new();
    CARDS.get_or_init(Memo::new)
}

/// Compressed P-256 points that decoded to a valid point.
pub(crate) fn points() -> &'static Memo<[u8; 33], p256::PublicKey> {
    static POINTS: OnceLock<Memo<[u8; 33], p256::PublicKey>> = OnceLock::new();
    POINTS.get_or_init(Memo::new)
}

/// The memo key of a card: what kind of card, its canonical body, its
/// signature.
pub(crate) fn card_key(kind: &str, body: &[u8], signature: &[u8]) -> [u8; 32] {
    crate::encoding::tagged_hash(kind, &[body, signature]).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_is_bounded_and_keeps_recent_entries() {
        let m: Memo<u32, u32> = Memo::new();
        for i in 0..(3 * GENERATION as u32) {
            m.insert(i, i + 1);
        }
        assert!(m.len() <= 2 * GENERATION);
        let last = 3 * GENERATION as u32 - 1;
        assert_eq!(m.get(&last), Some(last + 1));
        assert_eq!(m.get(&0), None);
        // A hit in the old generation moves it to the young one, so it
        // outlives the entries inserted next.
        let old = GENERATION as u32 + GENERATION as u32 / 2;
        assert_eq!(m.get(&old), Some(old + 1));
        for i in 0..(GENERATION as u32 - 2) {
            m.insert(10_000_000 + i, 0);
        }
        assert_eq!(m.get(&old), Some(old + 1));
        assert_eq!(m.get(&(GENERATION as u32 + 1)), None);
    }
}
