//! The outbox worker: makes stored deliveries, in order of acceptance, within each target's
//! `max_in_flight`, retrying what can succeed later and dead-lettering what cannot. It knows
//! targets only through [`Target`]; what a delivery means is theirs to say.
//!
//! Nothing about an attempt in progress is written to the store: a delivery stays `queued` or
//! `retrying` until its outcome is committed, so a crash at any moment leaves it to be
//! attempted again after the restart (at-least-once). A delivery with an ordering key never
//! starts while an earlier one with the same key is pending (the store's scan leaves it out).
//!
//! An attempt's outcome that the store refuses (a full disk) is kept in memory and written
//! again with backoff; meanwhile no new attempt starts, so a failed write never causes a
//! second call to a target.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, watch};

use super::{Attempted, Job, Targets, Verdict};
use crate::config::DeliverySettings;
use crate::error::cause_chain;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, Next, Pending, Store, now_ms};

/// Extra due deliveries read per scan beyond those already in flight.
const SCAN_BATCH: usize = 256;
/// Between full scans the worker only reads deliveries accepted after the last one it looked
/// at, so a busy queue costs one short index range per wake-up instead of re-reading every
/// attempt in flight. A full scan (from the oldest) picks up retries that fell due, operators'
/// requeues and deliveries an ordering key held back; it runs at least this often.
const FULL_SCAN_EVERY: Duration = Duration::from_millis(50);
/// Longest sleep between scans; bounds how long an operator's `deliveries retry` waits.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often delivered calls past retention are purged (sooner when retention is shorter).
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Backoff for writing an attempt's outcome that the store refused.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// An attempt in flight; it ends with its delivery's id, its target and whether it held an
/// ordering key (whose release may let a held-back delivery start).
type Attempt = Pin<Box<dyn Future<Output = (String, String, bool)>>>;

/// Everything an attempt needs, shared by all of them.
struct Shared {
    store: Store,
    targets: Targets,
    metrics: Arc<Metrics>,
    /// Attempts whose outcome the store has not taken yet; while any, nothing new starts.
    unrecorded: Cell<usize>,
}

pub struct Worker {
    shared: Rc<Shared>,
    wake: Arc<Notify>,
    retention: Duration,
}

impl Worker {
    pub fn new(
        store: Store,
        targets: Targets,
        metrics: Arc<Metrics>,
        settings: &DeliverySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            shared: Rc::new(Shared {
                store,
                targets,
                metrics,
                unrecorded: Cell::new(0),
            }),
            wake,
            retention: Duration::from_secs(settings.done_retention_secs),
        }
    }

    /// Delivers until `stop` turns true, then gives attempts in progress up to `drain` to finish;
    /// anything unfinished stays in the store for the next start.
    pub async fn run(self, mut stop: watch::Receiver<bool>, drain: Duration) {
        let mut in_flight: FuturesUnordered<Attempt> = FuturesUnordered::new();
        let mut ids: HashSet<String> = HashSet::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut scan = Scan {
            cursor: 0,
            full_at: None,
            stuck: false,
        };
        let purge_every = PURGE_EVERY
            .min(self.retention)
            .max(Duration::from_millis(100));
        // The first purge runs at start-up, clearing what expired while the gateway was down.
        let mut purge_at: Option<Instant> = None;
        let store = self.shared.store.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            let paused = self.shared.unrecorded.get() > 0;
            if !paused {
                self.start_due(&mut in_flight, &mut ids, &mut busy, &mut scan)
                    .await;
            }
            if purge_at.is_none_or(|at| at.elapsed() >= purge_every) {
                purge_at = Some(Instant::now());
                let cutoff =
                    now_ms() - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
                match store.purge(cutoff).await {
                    Ok(purged) if purged > 0 => {
                        tracing::info!(purged, "Purged delivered calls past their retention.")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "Could not purge old deliveries."),
                }
            }
            let now = now_ms();
            let wait = match store.next_due_at().await {
                Ok(Some(at)) if at > now => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
                }
                // Something is due now: in flight, waiting for a slot, or a retry or requeue
                // behind the cursor, which the next full scan starts.
                // Paused, the loop wakes when an outcome is written (its attempt finishes).
                Ok(Some(_)) if !paused => scan.until_full(),
                _ => IDLE_POLL,
            }
            .min(IDLE_POLL);
            tokio::select! {
                Some(finished) = in_flight.next(), if !in_flight.is_empty() => {
                    // Collect every attempt that has finished, so one scan serves them all.
                    let mut finished = Some(finished);
                    while let Some((id, target, keyed)) = finished {
                        ids.remove(&id);
                        scan.stuck = false;
                        if let Some(count) = busy.get_mut(&target) {
                            *count = count.saturating_sub(1);
                        }
                        // A delivery this one held back by its ordering key is behind the
                        // cursor: only a full scan sees it.
                        if keyed {
                            scan.full_at = None;
                        }
                        finished = in_flight.next().now_or_never().flatten();
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        if !in_flight.is_empty() {
            tracing::info!(
                in_flight = in_flight.len(),
                "Finishing delivery attempts in progress."
            );
            let finished =
                tokio::time::timeout(drain, async { while in_flight.next().await.is_some() {} })
                    .await;
            if finished.is_err() {
                tracing::warn!(
                    "Attempts still running at shutdown stay queued for the next start."
                );
            }
        }
    }

    /// Starts every due delivery that has a free slot at its target, oldest first.
    async fn start_due(
        &self,
        in_flight: &mut FuturesUnordered<Attempt>,
        ids: &mut HashSet<String>,
        busy: &mut HashMap<String, usize>,
        scan: &mut Scan,
    ) {
        let full = scan.until_full().is_zero();
        if full {
            scan.cursor = 0;
            scan.full_at = Some(Instant::now());
        }
        let limit = SCAN_BATCH + if full { ids.len() } else { 0 };
        let cap = |target: &str| {
            self.shared
                .targets
                .get(target)
                .map_or(1, |target| target.max_in_flight().max(1))
        };
        // While the last scan found only deliveries no slot is free for, and no attempt has
        // finished since, reading that batch again (on every accepted call's wake-up) cannot
        // start anything of it: only the targets with a free slot are looked at.
        if scan.stuck {
            self.start_free(in_flight, ids, busy, &cap, limit).await;
            return;
        }
        let due = match self
            .shared
            .store
            .due(now_ms(), scan.cursor, limit, None)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, cause = %cause_chain(&error), "Cannot read due deliveries.");
                return;
            }
        };
        let batch_full = due.len() >= limit;
        // The cursor never passes a delivery left waiting for a slot, so the next scan sees it
        // again, still ahead of everything accepted after it.
        let mut waiting: Option<i64> = None;
        let mut last = scan.cursor;
        let mut started = 0;
        for pending in due {
            last = pending.seq;
            match self.start(pending, in_flight, ids, busy, &cap) {
                Start::Waiting => {
                    waiting.get_or_insert(last);
                }
                Start::Started => started += 1,
                Start::InFlight => {}
            }
        }
        scan.cursor = waiting.map_or(last, |seq| seq - 1);
        // A batch filled by deliveries no slot is free for (one sink's backlog) would hold back
        // every other target's: look past it at the targets that have a free slot, through the
        // per-target index, so a black-holed sink never delays triggers. The cursor stays.
        scan.stuck = batch_full && started == 0;
        if scan.stuck {
            self.start_free(in_flight, ids, busy, &cap, limit).await;
        }
    }

    /// Starts the due deliveries of the targets that have a free slot, read through the
    /// per-target index from the oldest.
    async fn start_free(
        &self,
        in_flight: &mut FuturesUnordered<Attempt>,
        ids: &mut HashSet<String>,
        busy: &mut HashMap<String, usize>,
        cap: &dyn Fn(&str) -> usize,
        limit: usize,
    ) {
        let free: Vec<String> = self
            .shared
            .targets
            .ids()
            .filter(|target| busy.get(*target).copied().unwrap_or(0) < cap(target))
            .cloned()
            .collect();
        if free.is_empty() {
            return;
        }
        match self.shared.store.due(now_ms(), 0, limit, Some(free)).await {
            Ok(due) => {
                for pending in due {
                    self.start(pending, in_flight, ids, busy, cap);
                }
            }
            Err(error) => {
                tracing::error!(%error, cause = %cause_chain(&error), "Cannot read due deliveries.");
            }
        }
    }

    /// Starts `pending` if its target has a free slot and it is not in flight already.
    fn start(
        &self,
        pending: Pending,
        in_flight: &mut FuturesUnordered<Attempt>,
        ids: &mut HashSet<String>,
        busy: &mut HashMap<String, usize>,
        cap: &dyn Fn(&str) -> usize,
    ) -> Start {
        if ids.contains(&pending.id) {
            return Start::InFlight;
        }
        let cap = cap(&pending.target);
        let used = busy.entry(pending.target.clone()).or_default();
        if *used >= cap {
            return Start::Waiting;
        }
        *used += 1;
        ids.insert(pending.id.clone());
        let shared = Rc::clone(&self.shared);
        in_flight.push(Box::pin(async move {
            let id = pending.id.clone();
            let target = pending.target.clone();
            let keyed = pending.ordering_key.is_some();
            attempt(&shared, pending).await;
            (id, target, keyed)
        }));
        Start::Started
    }
}

/// What became of a due delivery the scan found.
enum Start {
    Started,
    InFlight,
    /// Its target has no free slot.
    Waiting,
}

/// Where the next scan for due deliveries starts.
struct Scan {
    /// Deliveries with this `seq` or lower were already looked at.
    cursor: i64,
    /// When the last scan from the oldest delivery ran.
    full_at: Option<Instant>,
    /// The last scan's batch was full of deliveries no slot was free for, and no attempt has
    /// finished since.
    stuck: bool,
}

impl Scan {
    /// Time left until the next full scan may run.
    fn until_full(&self) -> Duration {
        self.full_at.map_or(Duration::ZERO, |at| {
            FULL_SCAN_EVERY.saturating_sub(at.elapsed())
        })
    }
}

/// One attempt: load the payload, hand it to its target, decide, commit the outcome.
async fn attempt(shared: &Shared, pending: Pending) {
    let started_ms = now_ms();
    let started = Instant::now();
    let payload = match shared.store.payload(pending.seq, pending.event_seq).await {
        Ok(Some(payload)) => payload,
        // Purged or requeued meanwhile by an operator: nothing to attempt now.
        Ok(None) => return,
        Err(error) => {
            tracing::error!(delivery = %pending.id, %error, cause = %cause_chain(&error), "Cannot read a stored delivery.");
            return;
        }
    };
    let target = shared.targets.get(&pending.target);
    let attempted = match target {
        Some(target) => {
            let job = Job {
                id: pending.id.clone(),
                target: pending.target.clone(),
                rule: pending.rule.clone(),
                content_type: pending.content_type.clone(),
                accepted_at: pending.accepted_at,
                payload,
            };
            target.attempt(&job).await
        }
        None => Attempted::permanent(format!(
            "target `{}` is no longer configured",
            pending.target
        )),
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let attempts = pending.budget_used + 1;
    let policy = target.map(|target| target.policy());
    let error_text = attempted.error.clone();
    let (next, label) = match (&attempted.verdict, policy) {
        (Verdict::Delivered, _) => (
            Next::Done {
                receipt: attempted.receipt.clone(),
            },
            "done",
        ),
        (Verdict::Retry { retry_after }, Some(policy)) if attempts < policy.max_attempts => {
            let wait = policy.delay(attempts, *retry_after);
            let at_ms = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            (Next::Retry { at_ms }, "retry")
        }
        (Verdict::Retry { .. }, _) => (
            Next::Dead {
                reason: format!(
                    "gave up after {attempts} attempts: {}",
                    error_text.as_deref().unwrap_or("unknown error")
                ),
            },
            "dead",
        ),
        (Verdict::Permanent, _) => (
            Next::Dead {
                reason: error_text
                    .clone()
                    .unwrap_or_else(|| "permanent error".to_owned()),
            },
            "dead",
        ),
    };
    let record = AttemptRecord {
        at_ms: started_ms,
        duration_ms,
        status: attempted.status,
        error: error_text.clone(),
        next: next.clone(),
    };
    let latency = matches!(next, Next::Done { .. })
        .then(|| Duration::from_millis(u64::try_from(now_ms() - pending.accepted_at).unwrap_or(0)));
    shared.metrics.attempt(label, latency);
    if let Some(target) = target {
        target.settled(label);
    }
    let rule = pending.rule.as_deref().unwrap_or("");
    match &next {
        Next::Done { receipt } => {
            tracing::info!(delivery = %pending.id, target = %pending.target, rule, attempts, receipt = receipt.as_deref().unwrap_or(""), "Delivered.")
        }
        Next::Retry { at_ms } => {
            tracing::warn!(delivery = %pending.id, target = %pending.target, rule, attempts, retry_in_ms = at_ms - now_ms(), error = error_text.as_deref().unwrap_or(""), "Delivery attempt failed; will retry.")
        }
        Next::Dead { reason } => {
            tracing::error!(delivery = %pending.id, target = %pending.target, rule, attempts, reason = %reason, "Delivery dead-lettered.")
        }
    }
    record_outcome(shared, &pending.id, record).await;
}

/// Writes an attempt's outcome, retrying with backoff until it is written. Until then the
/// delivery stays in flight, so no scan starts it again, and no new attempt starts at all:
/// an attempt whose outcome cannot be written would otherwise be made again and again (a
/// full store once turned 204 accepted calls into 1,274 builds in 4 s). Only a crash or a
/// shutdown during this wait leaves the delivery to be attempted again after the restart.
async fn record_outcome(shared: &Shared, id: &str, record: AttemptRecord) {
    let mut wait = RECORD_RETRY_FIRST;
    let mut held = false;
    while let Err(error) = shared.store.record(id.to_owned(), record.clone()).await {
        if !held {
            held = true;
            shared.unrecorded.set(shared.unrecorded.get() + 1);
            shared.metrics.outcomes_unrecorded(shared.unrecorded.get());
            tracing::error!(delivery = %id, %error, cause = %cause_chain(&error), "Cannot record a delivery attempt; its outcome is kept in memory and written when the store allows, and no new attempt starts until then.");
        } else {
            tracing::warn!(delivery = %id, %error, retry_in_ms = wait.as_millis(), "Still cannot record a delivery attempt.");
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2).min(RECORD_RETRY_MAX);
    }
    if held {
        shared
            .unrecorded
            .set(shared.unrecorded.get().saturating_sub(1));
        shared.metrics.outcomes_unrecorded(shared.unrecorded.get());
        tracing::info!(delivery = %id, "Recorded a delivery attempt after retrying.");
    }
}
