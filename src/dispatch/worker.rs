//! The queue worker: delivers stored calls to Jenkins, in order of acceptance, within each
//! target's `max_in_flight`, retrying what can succeed later and dead-lettering what cannot.
//!
//! Nothing about an attempt in progress is written to the store: a delivery stays `queued` or
//! `retrying` until its outcome is committed, so a crash at any moment leaves it to be
//! attempted again after the restart (at-least-once).
//!
//! An attempt's outcome that the store refuses (a full disk) is kept in memory and written
//! again with backoff; meanwhile no new attempt starts, so a failed write never causes a
//! second call to Jenkins.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, watch};
use ulid::Ulid;

use super::{Call, ContentType, DispatchError, JenkinsAnswer, JenkinsClient};
use crate::config::DeliverySettings;
use crate::error::cause_chain;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::store::{AttemptRecord, Next, Pending, Store, now_ms};

/// Extra due deliveries read per scan beyond those already in flight.
const SCAN_BATCH: usize = 256;
/// Between full scans the worker only reads deliveries accepted after the last one it looked
/// at, so a busy queue costs one short index range per wake-up instead of re-reading every
/// attempt in flight. A full scan (from the oldest) picks up retries that fell due and
/// operators' requeues; it runs at least this often.
const FULL_SCAN_EVERY: Duration = Duration::from_millis(50);
/// Longest sleep between scans; bounds how long an operator's `deliveries retry` waits.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often delivered calls past retention are purged (sooner when retention is shorter).
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Backoff for writing an attempt's outcome that the store refused.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(50);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Backoff and attempt budget (`[delivery]`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    pub fn from_settings(settings: &DeliverySettings) -> Self {
        Self {
            initial: Duration::from_millis(settings.retry_initial_ms.max(1)),
            max: Duration::from_millis(settings.retry_max_ms.max(settings.retry_initial_ms).max(1)),
            max_attempts: settings.max_attempts.max(1),
        }
    }

    /// The wait after `failed` failed attempts: `initial` doubling up to `max`, with jitter in
    /// its upper half so a burst of failures does not retry in lockstep. A `Retry-After` longer
    /// than that is honoured up to twice the scheduled wait.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        let doublings = failed.saturating_sub(1).min(32);
        let exponential = self
            .initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let half = exponential / 2;
        let jitter = Duration::from_millis(rand::random_range(
            0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX),
        ));
        let scheduled = half + jitter;
        match retry_after {
            Some(asked) if asked > scheduled => asked.min(scheduled.saturating_mul(2)),
            _ => scheduled,
        }
    }
}

/// How one attempt's result decides the delivery's fate.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: the network, a timeout, 5xx or 429.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Another attempt would get the same answer: any other 4xx, or a target that is gone.
    Permanent,
}

pub fn classify(result: &Result<JenkinsAnswer, DispatchError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Delivered,
        Err(
            DispatchError::Timeout(_) | DispatchError::Unreachable(_) | DispatchError::Store(_),
        ) => Verdict::Retry { retry_after: None },
        Err(DispatchError::Status { code, retry_after }) if *code == 429 || *code >= 500 => {
            Verdict::Retry {
                retry_after: *retry_after,
            }
        }
        // A page that is not GWT's (a login form, a wrong URL behind a proxy) needs a person.
        Err(
            DispatchError::Status { .. }
            | DispatchError::UnknownTarget(_)
            | DispatchError::UnexpectedAnswer { .. },
        ) => Verdict::Permanent,
    }
}

type Attempt = Pin<Box<dyn Future<Output = (String, String)>>>;

/// Everything an attempt needs, shared by all of them.
struct Shared {
    store: Store,
    jenkins: Arc<JenkinsClient>,
    rules: Arc<RuleSet>,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
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
        jenkins: Arc<JenkinsClient>,
        rules: Arc<RuleSet>,
        metrics: Arc<Metrics>,
        settings: &DeliverySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            shared: Rc::new(Shared {
                store,
                jenkins,
                rules,
                metrics,
                policy: RetryPolicy::from_settings(settings),
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
                self.start_due(&mut in_flight, &mut ids, &mut busy, &mut scan);
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
            let wait = match store.next_due_at() {
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
                    while let Some((id, target)) = finished {
                        ids.remove(&id);
                        if let Some(count) = busy.get_mut(&target) {
                            *count = count.saturating_sub(1);
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
    fn start_due(
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
        let due = match self.shared.store.due(now_ms(), scan.cursor, limit) {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, cause = %cause_chain(&error), "Cannot read due deliveries.");
                return;
            }
        };
        // The cursor never passes a delivery left waiting for a slot, so the next scan sees it
        // again, still ahead of everything accepted after it.
        let mut waiting: Option<i64> = None;
        let mut last = scan.cursor;
        for pending in due {
            last = pending.seq;
            if ids.contains(&pending.id) {
                continue;
            }
            let cap = self.shared.jenkins.max_in_flight(&pending.jenkins);
            let used = busy.entry(pending.jenkins.clone()).or_default();
            if *used >= cap {
                waiting.get_or_insert(pending.seq);
                continue;
            }
            *used += 1;
            ids.insert(pending.id.clone());
            let shared = Rc::clone(&self.shared);
            in_flight.push(Box::pin(async move {
                let id = pending.id.clone();
                let target = pending.jenkins.clone();
                attempt(&shared, pending).await;
                (id, target)
            }));
        }
        scan.cursor = waiting.map_or(last, |seq| seq - 1);
    }
}

/// Where the next scan for due deliveries starts.
struct Scan {
    /// Deliveries with this `seq` or lower were already looked at.
    cursor: i64,
    /// When the last scan from the oldest delivery ran.
    full_at: Option<Instant>,
}

impl Scan {
    /// Time left until the next full scan may run.
    fn until_full(&self) -> Duration {
        self.full_at.map_or(Duration::ZERO, |at| {
            FULL_SCAN_EVERY.saturating_sub(at.elapsed())
        })
    }
}

/// One attempt: call Jenkins, decide, commit the outcome.
async fn attempt(shared: &Shared, pending: Pending) {
    let started_ms = now_ms();
    let started = Instant::now();
    let rule = shared.rules.get(&pending.rule).cloned();
    let id = Ulid::from_string(&pending.id).ok();
    let body = match shared.store.body(pending.seq) {
        Ok(Some(body)) => body,
        // Purged or requeued meanwhile by an operator: nothing to attempt now.
        Ok(None) => return,
        Err(error) => {
            tracing::error!(delivery = %pending.id, %error, "Cannot read a stored delivery.");
            return;
        }
    };
    let (result, error_text) = match (rule, id) {
        (Some(rule), Some(id)) => {
            let call = Call {
                id,
                rule,
                body: Bytes::from(body),
                content_type: ContentType::parse(&pending.content_type),
            };
            let result = shared.jenkins.invoke(&call).await;
            shared.metrics.jenkins_call(
                &pending.jenkins,
                result
                    .as_ref()
                    .err()
                    .map_or("ok", DispatchError::metric_label),
                started.elapsed(),
            );
            let text = result.as_ref().err().map(|error| {
                let chain = cause_chain(error);
                if chain.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}: {chain}")
                }
            });
            (Some(result), text)
        }
        (None, _) => (
            None,
            Some(format!("rule `{}` is no longer loaded", pending.rule)),
        ),
        (_, None) => (
            None,
            Some("the stored delivery id is not a ULID".to_owned()),
        ),
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let verdict = result.as_ref().map_or(Verdict::Permanent, classify);
    let attempts = pending.budget_used + 1;
    let (next, label) = match (&verdict, &result) {
        (Verdict::Delivered, Some(Ok(answer))) => (
            Next::Done {
                queue_id: answer.id,
                url: answer.url.clone(),
            },
            "done",
        ),
        (Verdict::Retry { retry_after }, _) if attempts < shared.policy.max_attempts => {
            let wait = shared.policy.delay(attempts, *retry_after);
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
        _ => (
            Next::Dead {
                reason: error_text
                    .clone()
                    .unwrap_or_else(|| "permanent error".to_owned()),
            },
            "dead",
        ),
    };
    let status = match &result {
        Some(Ok(answer)) => Some(answer.status),
        Some(Err(DispatchError::Status { code, .. })) => Some(*code),
        _ => None,
    };
    let record = AttemptRecord {
        at_ms: started_ms,
        duration_ms,
        status,
        error: error_text.clone(),
        next: next.clone(),
    };
    let latency = matches!(next, Next::Done { .. })
        .then(|| Duration::from_millis(u64::try_from(now_ms() - pending.accepted_at).unwrap_or(0)));
    shared.metrics.attempt(label, latency);
    match &next {
        Next::Done { queue_id, .. } => {
            tracing::info!(delivery = %pending.id, rule = %pending.rule, attempts, queue_item = queue_id, "Delivered to Jenkins.")
        }
        Next::Retry { at_ms } => {
            tracing::warn!(delivery = %pending.id, rule = %pending.rule, attempts, retry_in_ms = at_ms - now_ms(), error = error_text.as_deref().unwrap_or(""), "Delivery attempt failed; will retry.")
        }
        Next::Dead { reason } => {
            tracing::error!(delivery = %pending.id, rule = %pending.rule, attempts, reason = %reason, "Delivery dead-lettered.")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_retry_table() {
        let status = |code, retry_after| Err(DispatchError::Status { code, retry_after });
        let answer = Ok(JenkinsAnswer {
            status: 200,
            triggered: true,
            id: 1,
            url: "queue/item/1/".into(),
        });
        assert_eq!(classify(&answer), Verdict::Delivered);
        assert_eq!(
            classify(&status(500, None)),
            Verdict::Retry { retry_after: None }
        );
        let later = Some(Duration::from_secs(7));
        assert_eq!(
            classify(&status(503, later)),
            Verdict::Retry { retry_after: later }
        );
        assert_eq!(
            classify(&status(429, None)),
            Verdict::Retry { retry_after: None }
        );
        assert_eq!(
            classify(&Err(DispatchError::Timeout(Duration::from_secs(1)))),
            Verdict::Retry { retry_after: None }
        );
        for code in [400, 401, 403, 404, 410] {
            assert_eq!(classify(&status(code, None)), Verdict::Permanent, "{code}");
        }
        assert_eq!(
            classify(&Err(DispatchError::UnknownTarget("x".into()))),
            Verdict::Permanent
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps_retry_after() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(1000),
            max: Duration::from_millis(8000),
            max_attempts: 5,
        };
        for _ in 0..200 {
            let first = policy.delay(1, None);
            assert!((500..=1000).contains(&first.as_millis()), "{first:?}");
            let third = policy.delay(3, None);
            assert!((2000..=4000).contains(&third.as_millis()), "{third:?}");
            let capped = policy.delay(30, None);
            assert!((4000..=8000).contains(&capped.as_millis()), "{capped:?}");
            // Retry-After is honoured, but never beyond twice the scheduled wait.
            let asked = policy.delay(1, Some(Duration::from_secs(60)));
            assert!((1000..=2000).contains(&asked.as_millis()), "{asked:?}");
            let short = policy.delay(1, Some(Duration::from_millis(1)));
            assert!((500..=1000).contains(&short.as_millis()), "{short:?}");
        }
    }
}
