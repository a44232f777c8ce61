//! The outbox worker: makes stored deliveries, soonest due first (acceptance order for new
//! ones), within each target's `max_in_flight`, retrying what can succeed later and
//! dead-lettering what cannot. It knows targets only through [`Target`]; what a delivery means
//! is theirs to say.
//!
//! Each wake-up (a call accepted, an attempt finished, a retry falling due) is one read of the
//! store on the blocking pool, asking each target with a free slot for as many deliveries as it
//! has slots, payloads included: a target at its cap costs nothing, and a backlog is never
//! re-read row by row.
//!
//! Nothing about an attempt in progress is written to the store: a delivery stays `queued` or
//! `retrying` until its outcome is committed, so a crash at any moment leaves it to be
//! attempted again after the restart (at-least-once). A delivery with an ordering key never
//! starts while an earlier one with the same key is pending: the store keeps it `held` until
//! that one is done or dead, and the read leaves held rows out.
//!
//! An attempt's outcome that the store refuses (a full disk) is kept in memory and written
//! again with backoff; meanwhile no new attempt starts, so a failed write never causes a
//! second call to a target.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, watch};

use super::{Attempted, Job, LiveTargets, Target, Verdict};
use crate::config::DeliverySettings;
use crate::error::cause_chain;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, Due, Next, Payload, Pending, Store, Want, now_ms};

/// Longest sleep between reads; bounds how long an operator's `deliveries retry` (written by
/// another process) waits.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the store is searched for deliveries whose target is no longer configured (they
/// are dead-lettered); such rows appear only from before this start, or by an operator's
/// requeue of one.
const ORPHANS_EVERY: Duration = Duration::from_secs(60);
/// Orphans dead-lettered per search; a full batch is followed by another at once.
const ORPHAN_BATCH: usize = 256;
/// How often delivered calls past retention are purged (sooner when retention is shorter).
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Backoff for writing an attempt's outcome that the store refused.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// An attempt in flight; it ends with its delivery's `seq` and target.
type Attempt = Pin<Box<dyn Future<Output = (i64, String)>>>;

/// Everything an attempt needs, shared by all of them.
struct Shared {
    store: Store,
    targets: Arc<LiveTargets>,
    metrics: Arc<Metrics>,
    /// Attempts whose outcome the store has not taken yet; while any, nothing new starts.
    unrecorded: Cell<usize>,
}

pub struct Worker {
    shared: Rc<Shared>,
    wake: Arc<Notify>,
    retention: Duration,
}

/// The attempts in flight, by target (`seq`s; orphans under their unknown target).
type Running = HashMap<String, BTreeSet<i64>>;

impl Worker {
    pub fn new(
        store: Store,
        targets: Arc<LiveTargets>,
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
        let mut running: Running = HashMap::new();
        let purge_every = PURGE_EVERY
            .min(self.retention)
            .max(Duration::from_millis(100));
        // The first purge and the first search for orphans run at start-up.
        let mut purge_at: Option<Instant> = None;
        let mut orphans_at: Option<Instant> = None;
        let store = self.shared.store.clone();
        let mut targets_seen = self.shared.targets.load_full();
        loop {
            if *stop.borrow() {
                break;
            }
            // A reload changed the targets: what a removed target or rule left pending is
            // dead-lettered now, not at the next periodic search.
            let targets = self.shared.targets.load_full();
            if !Arc::ptr_eq(&targets, &targets_seen) {
                targets_seen = targets;
                orphans_at = None;
            }
            let mut wait = IDLE_POLL;
            if self.shared.unrecorded.get() == 0 {
                if let Some(at) = self.start_ready(&mut in_flight, &mut running).await {
                    let until = u64::try_from(at - now_ms()).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(until));
                }
                if orphans_at.is_none_or(|at| at.elapsed() >= ORPHANS_EVERY) {
                    let found = self.start_orphans(&mut in_flight, &mut running).await;
                    orphans_at = (found < ORPHAN_BATCH).then(Instant::now);
                }
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
            tokio::select! {
                Some(finished) = in_flight.next(), if !in_flight.is_empty() => {
                    // Collect every attempt that has finished, so one read serves them all.
                    let mut finished = Some(finished);
                    while let Some((seq, target)) = finished {
                        if let Some(seqs) = running.get_mut(&target) {
                            seqs.remove(&seq);
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

    /// Starts what every target with a free slot may start, in one read of the store; returns
    /// when the next delivery falls due at a target that still has a slot.
    async fn start_ready(
        &self,
        in_flight: &mut FuturesUnordered<Attempt>,
        running: &mut Running,
    ) -> Option<i64> {
        let targets = self.shared.targets.load_full();
        let wants: Vec<Want> = targets
            .ids()
            .filter_map(|target| {
                let cap = targets
                    .get(target)
                    .map_or(1, |target| target.max_in_flight().max(1));
                let seqs = running.get(target);
                let used = seqs.map_or(0, BTreeSet::len);
                (used < cap).then(|| Want {
                    target: target.clone(),
                    free: cap - used,
                    running: seqs
                        .map(|seqs| seqs.iter().copied().collect())
                        .unwrap_or_default(),
                })
            })
            .collect();
        // Every target is at its cap: only a finished attempt can start anything.
        if wants.is_empty() {
            return None;
        }
        let ready = match self.shared.store.ready(now_ms(), wants).await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::error!(%error, cause = %cause_chain(&error), "Cannot read due deliveries.");
                return None;
            }
        };
        // A reload may have swapped the targets during the read: each attempt is made by the
        // target in use now (a call of a rule added meanwhile is not refused by the old one,
        // nor one of a removed rule sent by it).
        let targets = self.shared.targets.load_full();
        for due in ready.due {
            let seq = due.pending.seq;
            let target = due.pending.target.clone();
            if !running.entry(target.clone()).or_default().insert(seq) {
                continue;
            }
            let shared = Rc::clone(&self.shared);
            let made_by = targets.get(&target).cloned();
            in_flight.push(Box::pin(async move {
                attempt(&shared, due, made_by).await;
                (seq, target)
            }));
        }
        ready.next_at
    }

    /// Dead-letters the pending deliveries of targets that are no longer configured, and hands
    /// those of rules a target no longer delivers for to that target (which dead-letters them
    /// with its reason, sending nothing); returns how many it found.
    async fn start_orphans(
        &self,
        in_flight: &mut FuturesUnordered<Attempt>,
        running: &mut Running,
    ) -> usize {
        let targets = self.shared.targets.load_full();
        let known: Vec<String> = targets.ids().cloned().collect();
        // Those in flight are being settled: a search now must not find them again.
        let busy: Vec<i64> = running.values().flatten().copied().collect();
        let orphans = match self
            .shared
            .store
            .orphans(known, targets.rules(), busy, ORPHAN_BATCH)
            .await
        {
            Ok(orphans) => orphans,
            Err(error) => {
                tracing::error!(%error, cause = %cause_chain(&error), "Cannot read deliveries of removed targets.");
                return 0;
            }
        };
        let found = orphans.len();
        // As in `start_ready`: the targets in use after the read decide.
        let targets = self.shared.targets.load_full();
        for pending in orphans {
            let seq = pending.seq;
            let target = pending.target.clone();
            // An attempt of the set before the reload may be making it still.
            if !running.entry(target.clone()).or_default().insert(seq) {
                continue;
            }
            let shared = Rc::clone(&self.shared);
            let made_by = targets.get(&target).cloned();
            in_flight.push(Box::pin(async move {
                let retired = match &made_by {
                    Some(made_by) => made_by
                        .retired(pending.rule.as_deref())
                        .map(Attempted::permanent),
                    None => Some(removed(&pending.target)),
                };
                // The target (or the rule) is back after a reload in between: it stays
                // pending, for the next read.
                if let Some(retired) = retired {
                    let started = Instant::now();
                    settle(
                        &shared,
                        &pending,
                        retired,
                        made_by.as_deref(),
                        now_ms(),
                        started,
                    )
                    .await;
                }
                (seq, target)
            }));
        }
        found
    }
}

/// The outcome of a delivery whose target was removed from the config while it was pending.
fn removed(target: &str) -> Attempted {
    Attempted::permanent(format!("target `{target}` is no longer configured"))
}

fn job(pending: &Pending, payload: Payload) -> Job {
    Job {
        id: pending.id.clone(),
        target: pending.target.clone(),
        rule: pending.rule.clone(),
        content_type: pending.content_type.clone(),
        accepted_at: pending.accepted_at,
        attempts: pending.budget_used,
        payload,
    }
}

/// One attempt: hand the delivery to its target (the one in use when it started), decide,
/// commit the outcome.
async fn attempt(shared: &Shared, due: Due, target: Option<Arc<dyn Target>>) {
    let started_ms = now_ms();
    let started = Instant::now();
    let Due { pending, payload } = due;
    let attempted = match &target {
        Some(target) => target.attempt(&job(&pending, payload)).await,
        None => removed(&pending.target),
    };
    settle(
        shared,
        &pending,
        attempted,
        target.as_deref(),
        started_ms,
        started,
    )
    .await;
}

/// Decides what an attempt's answer means for its delivery (done, a retry, dead), reports it
/// and commits it; `target` is the one that made the attempt.
async fn settle(
    shared: &Shared,
    pending: &Pending,
    attempted: Attempted,
    target: Option<&dyn Target>,
    started_ms: i64,
    started: Instant,
) {
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
        (Verdict::Wait { after }, _) => {
            let at_ms = now_ms() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            (Next::Wait { at_ms }, "wait")
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
    let effects = target.map_or_else(Vec::new, |target| target.follow_up(pending, &next));
    let record = AttemptRecord {
        at_ms: started_ms,
        duration_ms,
        status: attempted.status,
        error: error_text.clone(),
        next: next.clone(),
        effects,
    };
    // The latency is a trigger's, from its 202 to Jenkins' 2xx; sinks have their own metrics.
    let latency = (matches!(next, Next::Done { .. }) && pending.target.starts_with("jenkins:"))
        .then(|| Duration::from_millis(u64::try_from(now_ms() - pending.accepted_at).unwrap_or(0)));
    // A wait is not an attempt: it is neither counted nor reported to the target.
    if !matches!(next, Next::Wait { .. }) {
        shared.metrics.attempt(label, latency);
        if let Some(target) = target {
            target.settled(label);
        }
    }
    let rule = pending.rule.as_deref().unwrap_or("");
    match &next {
        Next::Done { receipt } => {
            tracing::info!(delivery = %pending.id, target = %pending.target, rule, attempts, receipt = receipt.as_deref().unwrap_or(""), "Delivered.")
        }
        Next::Wait { at_ms } => {
            tracing::debug!(delivery = %pending.id, target = %pending.target, retry_in_ms = at_ms - now_ms(), reason = error_text.as_deref().unwrap_or(""), "Delivery waits.")
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
