//! The seam between accepting a call in queue mode and the worker: a wake-up, and the bodies of
//! calls just accepted, kept in memory so a delivery's first attempt does not read its body back
//! from the store.
//!
//! The store stays the truth: a body is offered before its delivery is committed (so the worker
//! can never see the delivery first) and withdrawn if the commit fails or finds a duplicate. A
//! body that is not here (the memory bound was reached, the gateway restarted, a retry) is read
//! from the store, so nothing but a read is ever lost.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::web::Bytes;
use tokio::sync::Notify;

/// At most this many bodies, and this many bytes of them, wait in memory; past that, calls are
/// still accepted and the worker reads their bodies from the store.
const MAX_ENTRIES: usize = 8192;
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub struct Handoff {
    wake: Notify,
    bodies: Mutex<Bodies>,
}

#[derive(Default)]
struct Bodies {
    by_id: HashMap<String, Bytes>,
    bytes: usize,
}

impl Bodies {
    fn remove(&mut self, id: &str) -> Option<Bytes> {
        let body = self.by_id.remove(id)?;
        self.bytes -= body.len();
        Some(body)
    }
}

impl Handoff {
    fn bodies(&self) -> std::sync::MutexGuard<'_, Bodies> {
        // The map is consistent after every statement, so a panic elsewhere cannot corrupt it.
        self.bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `body` for delivery `id` until the worker takes it. The returned offer withdraws
    /// the body when dropped, unless `keep` was called once the delivery was committed.
    pub fn offer(&self, id: &str, body: &Bytes) -> Offer<'_> {
        let mut bodies = self.bodies();
        let fits = bodies.by_id.len() < MAX_ENTRIES
            && bodies.bytes + body.len() <= MAX_BYTES
            && !bodies.by_id.contains_key(id);
        if fits {
            bodies.by_id.insert(id.to_owned(), body.clone());
            bodies.bytes += body.len();
            return Offer {
                handoff: self,
                id: Some(id.to_owned()),
            };
        }
        Offer {
            handoff: self,
            id: None,
        }
    }

    /// The body of delivery `id`, if it is still in memory.
    pub fn take(&self, id: &str) -> Option<Bytes> {
        self.bodies().remove(id)
    }

    /// Tells the worker something new was committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let bodies = self.bodies();
        (bodies.by_id.len(), bodies.bytes)
    }
}

/// A body offered for a delivery that is not committed yet.
pub struct Offer<'h> {
    handoff: &'h Handoff,
    /// `None` once kept, or when the body did not fit.
    id: Option<String>,
}

impl Offer<'_> {
    /// The delivery is committed: the body stays for the worker.
    pub fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.handoff.bodies().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_body_waits_for_the_worker_and_a_dropped_offer_leaves_nothing() {
        let handoff = Handoff::default();
        let body = Bytes::from_static(b"{\"a\":1}");
        handoff.offer("kept", &body).keep();
        drop(handoff.offer("failed", &body));
        assert_eq!(handoff.held(), (1, body.len()));
        assert_eq!(handoff.take("failed"), None);
        assert_eq!(handoff.take("kept"), Some(body));
        assert_eq!(handoff.take("kept"), None);
        assert_eq!(handoff.held(), (0, 0));
    }

    #[test]
    fn past_the_bound_bodies_are_left_to_the_store() {
        let handoff = Handoff::default();
        let big = Bytes::from(vec![b'x'; MAX_BYTES / 2 + 1]);
        handoff.offer("first", &big).keep();
        // Does not fit: not held, and dropping the offer withdraws nothing else.
        drop(handoff.offer("second", &big));
        assert_eq!(handoff.held(), (1, big.len()));
        handoff.offer("third", &big).keep();
        assert_eq!(handoff.take("third"), None);
        assert!(handoff.take("first").is_some());
        assert_eq!(handoff.held(), (0, 0));
    }
}
