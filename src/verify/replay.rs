//! Replay protection for schemes that sign a timestamp: a signature seen once is refused for
//! the rest of its window, so a captured request cannot be sent again while its timestamp is
//! still accepted.
//!
//! Memory is bounded: at most `capacity` signatures per rule, each kept as a 16-byte digest.
//! When full, the oldest entry is dropped (and counted); it is the one closest to leaving its
//! window anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// The default number of signatures remembered per rule (`server.replay_cache_entries`).
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = [u8; 16];

#[derive(Debug, Default)]
struct Seen {
    expiry: HashMap<Key, u64>,
    /// Insertion order, so expired or oldest entries leave first.
    order: VecDeque<(Key, u64)>,
}

/// Signatures seen within their window, for one rule.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: AtomicUsize,
    seen: Mutex<Seen>,
    evicted: AtomicU64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self {
            capacity: AtomicUsize::new(DEFAULT_CAPACITY),
            seen: Mutex::new(Seen::default()),
            evicted: AtomicU64::new(0),
        }
    }
}

impl ReplayGuard {
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    /// Signatures dropped early because the guard was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a verified signature at `now` (Unix seconds), valid for `window` seconds either
    /// side of its timestamp. Returns `false` when it was already seen within its window.
    pub fn first_sight(&self, signature: &[u8], now: u64, window: u64) -> bool {
        let digest = Sha256::digest(signature);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        // A timestamp is accepted up to `window` seconds either side of now, so the same
        // signature stays usable for at most twice the window from the first sight.
        let expires = now.saturating_add(window.saturating_mul(2));
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut seen = self.lock();
        while let Some(&(old, at)) = seen.order.front() {
            if at > now {
                break;
            }
            seen.order.pop_front();
            if seen.expiry.get(&old) == Some(&at) {
                seen.expiry.remove(&old);
            }
        }
        if seen.expiry.get(&key).is_some_and(|&at| at > now) {
            return false;
        }
        while seen.expiry.len() >= capacity {
            let Some((old, at)) = seen.order.pop_front() else {
                break;
            };
            if seen.expiry.get(&old) == Some(&at) {
                seen.expiry.remove(&old);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        seen.expiry.insert(key, expires);
        seen.order.push_back((key, expires));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_per_window() {
        let guard = ReplayGuard::default();
        assert!(guard.first_sight(b"v1,abc", 1000, 300));
        assert!(!guard.first_sight(b"v1,abc", 1000, 300));
        assert!(!guard.first_sight(b"v1,abc", 1599, 300));
        assert!(guard.first_sight(b"v1,other", 1000, 300));
        // After the window the timestamp check refuses it anyway, and the entry is gone.
        assert!(guard.first_sight(b"v1,abc", 1600, 300));
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let guard = ReplayGuard::default();
        guard.set_capacity(100);
        for i in 0..1000u32 {
            assert!(guard.first_sight(&i.to_be_bytes(), 1000, 300));
        }
        assert_eq!(guard.lock().expiry.len(), 100);
        assert_eq!(guard.evicted(), 900);
        // The newest are still remembered.
        assert!(!guard.first_sight(&999u32.to_be_bytes(), 1000, 300));
    }
}
