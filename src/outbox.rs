//! The outbox: every delivery, to Jenkins or to a sink, is stored first and then made by one
//! worker through one seam, [`Target`].
//!
//! A target is built from config, sends one [`Job`] (a stored delivery and its payload) and
//! says what its answer means ([`Attempted`]); it has a concurrency cap and a retry policy.
//! The worker knows nothing else about it: a new kind of target is a new implementation, not a
//! new copy of the worker.

pub mod worker;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::DeliverySettings;
use crate::store::{Effect, Next, Payload, Pending};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: the network, a timeout, 408, 429 or 5xx.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Another attempt would get the same answer: any other 4xx, a payload that cannot be
    /// built, or a target that is gone.
    Permanent,
    /// Not attempted yet: the target waits for something else to happen first (a port sink's
    /// event for its trigger's answer). Asked again `after`, with no attempt counted or kept;
    /// the target bounds how long it waits.
    Wait {
        after: Duration,
    },
}

impl Verdict {
    /// The retry table for an HTTP answer, the same for Jenkins and every sink.
    pub fn for_status(code: u16, retry_after: Option<Duration>) -> Self {
        match code {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500.. => Verdict::Retry { retry_after },
            _ => Verdict::Permanent,
        }
    }
}

/// What one attempt came to, as its target reports it.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub verdict: Verdict,
    /// The target's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed, for the store and the log: never a secret, a URL with a token, or a body
    /// beyond 512 bytes.
    pub error: Option<String>,
    /// What a delivered attempt's answer holds that later steps need (JSON).
    pub receipt: Option<String>,
}

impl Attempted {
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Permanent,
            status: None,
            error: Some(error.into()),
            receipt: None,
        }
    }
}

/// A stored delivery with its payload, as the worker hands it to its target.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// `jenkins:<name>` or `sink:<name>`.
    pub target: String,
    /// The rule a trigger came through.
    pub rule: Option<String>,
    pub content_type: String,
    pub accepted_at: i64,
    /// Attempts made since it was accepted or last requeued by an operator.
    pub attempts: u32,
    pub payload: Payload,
}

/// The future of one attempt. The worker runs on one thread, so it need not be `Send`.
pub type AttemptFuture<'a> = Pin<Box<dyn Future<Output = Attempted> + 'a>>;

/// One place deliveries go: a Jenkins target or a sink. Built where a reload runs and used by
/// the worker's thread, hence `Send + Sync`.
pub trait Target: Send + Sync {
    /// Attempts the worker runs at once for this target.
    fn max_in_flight(&self) -> usize;
    fn policy(&self) -> RetryPolicy;
    /// Makes one attempt, within the target's own deadline.
    fn attempt<'a>(&'a self, job: &'a Job) -> AttemptFuture<'a>;
    /// Told each decided outcome (`done`, `retry`, `dead`), for the target's own metrics.
    fn settled(&self, _outcome: &'static str) {}
    /// What the decided outcome of `pending` leads to, written in the outcome's transaction
    /// (a reported trigger's queue items, for one).
    fn follow_up(&self, _pending: &Pending, _next: &Next) -> Vec<Effect> {
        Vec::new()
    }
    /// The rules whose deliveries this target still makes, when it makes only some (a Jenkins
    /// target: the rules that dispatch to it). The worker dead-letters a pending delivery of any
    /// other rule at once, with [`Target::retired`]'s reason, instead of leaving it until its
    /// retry falls due. `None`: deliveries of any rule.
    fn rules(&self) -> Option<Vec<String>> {
        None
    }
    /// Why this target no longer makes deliveries of `rule` (a rule removed or sent elsewhere
    /// by a reload); `None` while it does. Agrees with [`Target::rules`].
    fn retired(&self, _rule: Option<&str>) -> Option<String> {
        None
    }
}

/// Every configured target by its `target` id.
#[derive(Default, Clone)]
pub struct Targets(HashMap<String, Arc<dyn Target>>);

impl Targets {
    pub fn insert(&mut self, id: String, target: Arc<dyn Target>) {
        self.0.insert(id, target);
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Target>> {
        self.0.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// Each target's id with the rules it still delivers for, for targets that deliver for
    /// some rules only.
    pub fn rules(&self) -> Vec<(String, Vec<String>)> {
        self.0
            .iter()
            .filter_map(|(id, target)| target.rules().map(|rules| (id.clone(), rules)))
            .collect()
    }
}

/// The targets in use, swapped whole by a reload (`store`). An attempt keeps the target it
/// started with (`load_full`) to its outcome; the next one is made by the target in use then.
pub type LiveTargets = ArcSwap<Targets>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_table_is_the_contracts() {
        let later = Some(Duration::from_secs(7));
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(
                Verdict::for_status(code, None),
                Verdict::Delivered,
                "{code}"
            );
        }
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(
                Verdict::for_status(code, later),
                Verdict::Retry { retry_after: later },
                "{code}"
            );
        }
        for code in [300, 301, 307, 400, 401, 402, 403, 404, 409, 410, 422] {
            assert_eq!(
                Verdict::for_status(code, None),
                Verdict::Permanent,
                "{code}"
            );
        }
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
