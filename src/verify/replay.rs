//! Replay protection: a verified signature is remembered for as long as it could verify again,
//! so a captured request cannot be sent a second time.
//!
//! A signature is named by a digest of its decoded MAC (for `github`, of its body) and its
//! timestamp (see [`Signed::digest`](super::signature::Signed::digest)), never by the header's
//! spelling. It is first *claimed* for the call that carries it; the claim becomes a memory only
//! once that call was accepted (stored, dispatched, filtered or answered as a duplicate). A call
//! refused with 429 or 503, or a dry run, drops its claim, so the sender's retry still works. A
//! stored call's delivery id is kept with its signature, so a sender retrying a request whose
//! answer it lost is told which delivery it made.
//!
//! Memory is bounded: at most `capacity` signatures per rule (`server.replay_cache_entries`).
//! When full, the oldest entry is dropped (and counted). In queue mode the store keeps the
//! signatures of stored calls too, so a restart does not reopen their window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The default number of signatures remembered per rule (`server.replay_cache_entries`).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A signature's digest.
pub type Key = [u8; 16];

#[derive(Debug, Clone)]
enum Mark {
    /// Claimed by a call still being handled.
    InFlight,
    /// Its call was accepted; `Some` holds the delivery it was stored as.
    Accepted(Option<Arc<str>>),
}

#[derive(Debug)]
struct Entry {
    /// Unix seconds.
    expires: u64,
    mark: Mark,
    /// Which insertion this is, so a stale copy in `order` never removes a newer entry.
    generation: u64,
}

#[derive(Debug, Default)]
struct Seen {
    entries: HashMap<Key, Entry>,
    /// Insertion order (key, generation, expiry), so expired or oldest entries leave first.
    /// Released claims leave stale copies behind; they are skipped, and compacted away when
    /// they outnumber the live entries.
    order: VecDeque<(Key, u64, u64)>,
    next_generation: u64,
}

/// What the memory says about a verified signature.
#[derive(Debug)]
pub enum Sight {
    /// Not seen inside its window: claimed for this call.
    Fresh(Claim),
    /// Seen, and its first call was stored as this delivery.
    Stored { first: String },
    /// Seen, and its first call was not stored (or is still being handled).
    Replayed,
}

/// A signature claimed for one call. Dropping it without [`Claim::accept`] forgets it again.
/// It owns its guard, so it can go with a call whose sender has gone.
#[derive(Debug)]
pub struct Claim {
    guard: Arc<ReplayGuard>,
    key: Key,
    expires: u64,
    accepted: bool,
}

impl Claim {
    pub fn key(&self) -> Key {
        self.key
    }

    /// Until when (Unix seconds) the signature must be remembered.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The call was accepted: remember the signature, with the delivery it was stored as.
    pub fn accept(mut self, stored_as: Option<&str>) {
        self.accepted = true;
        self.guard.remember(self.key, self.expires, stored_as);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.accepted {
            self.guard.release(self.key);
        }
    }
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

    /// Signatures remembered or claimed now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks a verified signature up at `now` (Unix seconds); when it is new, claims it until
    /// `expires`.
    pub fn sight(self: &Arc<Self>, key: Key, now: u64, expires: u64) -> Sight {
        let mut seen = self.lock();
        seen.drop_expired(now);
        match seen.entries.get(&key) {
            Some(entry) if entry.expires > now => {
                return match &entry.mark {
                    Mark::Accepted(Some(first)) => Sight::Stored {
                        first: first.to_string(),
                    },
                    Mark::Accepted(None) | Mark::InFlight => Sight::Replayed,
                };
            }
            _ => {}
        }
        self.insert(&mut seen, key, expires, Mark::InFlight);
        Sight::Fresh(Claim {
            guard: Arc::clone(self),
            key,
            expires,
            accepted: false,
        })
    }

    /// Remembers a signature whose call was accepted (also used to reload the store's memory
    /// at start-up).
    pub fn remember(&self, key: Key, expires: u64, stored_as: Option<&str>) {
        let mut seen = self.lock();
        let mark = Mark::Accepted(stored_as.map(Arc::from));
        match seen.entries.get_mut(&key) {
            Some(entry) if entry.expires == expires => entry.mark = mark,
            _ => self.insert(&mut seen, key, expires, mark),
        }
    }

    fn release(&self, key: Key) {
        let mut seen = self.lock();
        if matches!(
            seen.entries.get(&key),
            Some(Entry {
                mark: Mark::InFlight,
                ..
            })
        ) {
            seen.entries.remove(&key);
            seen.compact();
        }
    }

    fn insert(&self, seen: &mut Seen, key: Key, expires: u64, mark: Mark) {
        let capacity = self.capacity.load(Ordering::Relaxed);
        while seen.entries.len() >= capacity {
            let Some((old, generation, _)) = seen.order.pop_front() else {
                break;
            };
            if seen.remove_if_current(old, generation) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let generation = seen.next_generation;
        seen.next_generation += 1;
        seen.entries.insert(
            key,
            Entry {
                expires,
                mark,
                generation,
            },
        );
        seen.order.push_back((key, generation, expires));
    }
}

impl Seen {
    fn drop_expired(&mut self, now: u64) {
        while let Some(&(old, generation, expires)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            self.remove_if_current(old, generation);
        }
    }

    /// Removes `key` if its entry is the one that `generation` inserted.
    fn remove_if_current(&mut self, key: Key, generation: u64) -> bool {
        let current = self
            .entries
            .get(&key)
            .is_some_and(|entry| entry.generation == generation);
        if current {
            self.entries.remove(&key);
        }
        current
    }

    /// Drops stale copies from `order` once they outnumber the live entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|(key, generation, _)| {
                entries
                    .get(key)
                    .is_some_and(|e| e.generation == *generation)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&n.to_be_bytes());
        key
    }

    fn accept(guard: &Arc<ReplayGuard>, k: Key, now: u64, expires: u64, first: Option<&str>) {
        match guard.sight(k, now, expires) {
            Sight::Fresh(claim) => claim.accept(first),
            other => panic!("expected a fresh signature, got {other:?}"),
        }
    }

    #[test]
    fn a_signature_is_accepted_once_until_it_expires() {
        let guard = Arc::new(ReplayGuard::default());
        accept(&guard, key(1), 1000, 1300, None);
        assert!(matches!(guard.sight(key(1), 1000, 1300), Sight::Replayed));
        assert!(matches!(guard.sight(key(1), 1299, 1300), Sight::Replayed));
        accept(&guard, key(2), 1000, 1300, None);
        // Past its expiry the window check refuses it anyway, and the entry is gone.
        accept(&guard, key(1), 1300, 1600, None);
    }

    #[test]
    fn a_stored_call_is_remembered_with_its_delivery() {
        let guard = Arc::new(ReplayGuard::default());
        accept(&guard, key(1), 1000, 2000, Some("01FIRST"));
        match guard.sight(key(1), 1500, 2500) {
            Sight::Stored { first } => assert_eq!(first, "01FIRST"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dropped_claim_is_forgotten_and_a_claim_in_progress_is_a_replay() {
        let guard = Arc::new(ReplayGuard::default());
        let claim = match guard.sight(key(1), 1000, 2000) {
            Sight::Fresh(claim) => claim,
            other => panic!("{other:?}"),
        };
        // A concurrent copy of a call still being handled is a replay.
        assert!(matches!(guard.sight(key(1), 1000, 2000), Sight::Replayed));
        drop(claim);
        assert!(guard.is_empty());
        accept(&guard, key(1), 1000, 2000, None);
    }

    #[test]
    fn released_claims_neither_evict_live_entries_nor_grow_the_order() {
        let guard = Arc::new(ReplayGuard::default());
        guard.set_capacity(2);
        // Key 1 is claimed and dropped (a 429), key 2 accepted, then key 1 retried and
        // accepted: key 1 is now the newest entry, and the stale copy of its first claim sits
        // ahead of key 2 in the order.
        drop(guard.sight(key(1), 1000, 2000));
        accept(&guard, key(2), 1000, 2000, None);
        accept(&guard, key(1), 1000, 2000, Some("first"));
        // Making room must evict the oldest live entry (key 2), not the newest.
        accept(&guard, key(3), 1000, 2000, None);
        assert!(matches!(
            guard.sight(key(1), 1000, 2000),
            Sight::Stored { .. }
        ));
        assert!(matches!(guard.sight(key(2), 1000, 2000), Sight::Fresh(_)));
        // Thousands of refused calls leave no garbage behind.
        let guard = Arc::new(ReplayGuard::default());
        for i in 0..10_000u32 {
            drop(guard.sight(key(i), 1000, 90_000));
        }
        assert!(guard.is_empty());
        assert!(guard.order_len() <= 64 + 1, "{}", guard.order_len());
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let guard = Arc::new(ReplayGuard::default());
        guard.set_capacity(100);
        for i in 0..1000u32 {
            accept(&guard, key(i), 1000, 1300, None);
        }
        assert_eq!(guard.len(), 100);
        assert_eq!(guard.evicted(), 900);
        // The newest are still remembered.
        assert!(matches!(guard.sight(key(999), 1000, 1300), Sight::Replayed));
    }
}
