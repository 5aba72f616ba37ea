//! A lock per key (per `H(z)`), created on first use and removed when the
//! last holder or waiter is done.
//!
//! Concurrent identical claims must not make the token resolve twice: the
//! first one resolves and records; the others wait here, then find the
//! record in the journal. Claims for different envelopes never wait for each
//! other. Entries are removed when unused, so the map holds only keys that
//! are being worked on right now.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Per-key async locks.
pub struct SingleFlight<K> {
    slots: Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait until no one else holds `key`, then hold it until the guard drops.
    pub async fn lock(&self, key: K) -> FlightGuard<'_, K> {
        let slot = Arc::clone(self.map().entry(key.clone()).or_default());
        // The `Interest` is dropped (and cleans up) even if this future is
        // cancelled while waiting.
        let mut interest = Interest {
            owner: self,
            key,
            slot: Some(slot),
            guard: None,
        };
        let slot = Arc::clone(interest.slot.as_ref().expect("set above"));
        interest.guard = Some(slot.lock_owned().await);
        FlightGuard(interest)
    }

    /// Keys currently locked or waited for (tests, metrics).
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<AsyncMutex<()>>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Someone holding or waiting for a key; removes the map entry when the last
/// one goes away.
struct Interest<'a, K: Eq + Hash + Clone> {
    owner: &'a SingleFlight<K>,
    key: K,
    slot: Option<Arc<AsyncMutex<()>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Drop for Interest<'_, K> {
    fn drop(&mut self) {
        let mut map = self.owner.map();
        // Release the lock and our references under the map lock; every
        // other reference was taken under it too, so the count is exact.
        self.guard.take();
        self.slot.take();
        if map
            .get(&self.key)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Holding a key; dropping it lets the next waiter in.
pub struct FlightGuard<'a, K: Eq + Hash + Clone>(#[allow(dead_code)] Interest<'a, K>);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_is_exclusive_and_entries_are_removed() {
        let sf = Arc::new(SingleFlight::<u32>::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (sf, inside, max) = (sf.clone(), inside.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                let _g = sf.lock(7).await;
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_and_cancelled_waiters_clean_up() {
        let sf = SingleFlight::<u32>::new();
        let a = sf.lock(1).await;
        let _b = tokio::time::timeout(Duration::from_secs(1), sf.lock(2))
            .await
            .expect("another key is free");
        // A waiter for a held key, cancelled by its timeout.
        assert!(tokio::time::timeout(Duration::from_millis(20), sf.lock(1))
            .await
            .is_err());
        assert_eq!(sf.in_flight(), 2);
        drop(a);
        assert_eq!(sf.in_flight(), 1);
    }
}
