//! Prometheus metrics: request outcomes by rule, Jenkins calls by target and result, and the
//! delivery queue (depth by state, attempts by outcome, accept-to-Jenkins latency, oldest age).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The outcome of one request for one rule (or for no rule, when rejected before selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Triggered,
    Queued,
    Duplicate,
    Filtered,
    DryRun,
    Failed,
    Unavailable,
    Forbidden,
    Unauthorized,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    HeadersTooLarge,
    RateLimited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::Queued => "queued",
            Outcome::Duplicate => "duplicate",
            Outcome::Unavailable => "unavailable",
            Outcome::Filtered => "filtered",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::Forbidden => "forbidden",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::PayloadTooLarge => "payload_too_large",
            Outcome::HeadersTooLarge => "headers_too_large",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rule: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JenkinsLabels {
    jenkins: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    jenkins: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    jenkins: String,
    phase: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkOutcomeLabels {
    sink: String,
    outcome: &'static str,
}

type HistogramFamily = Family<TargetLabels, Histogram, fn() -> Histogram>;
type SinkHistogramFamily = Family<SinkLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    jenkins_calls: Family<JenkinsLabels, Counter>,
    jenkins_seconds: HistogramFamily,
    queue_depth: Family<StateLabels, Gauge>,
    attempts: Family<AttemptLabels, Counter>,
    delivery_seconds: Histogram,
    oldest_pending_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    outcomes_unrecorded: Gauge,
    events: Family<EventLabels, Counter>,
    sink_deliveries: Family<SinkOutcomeLabels, Counter>,
    sink_seconds: SinkHistogramFamily,
    sink_auth_failed: Family<SinkLabels, Gauge>,
    ready: Gauge,
    rules_loaded: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_reload_ok: Gauge,
}

impl Metrics {
    pub fn new(rules_loaded: usize) -> Self {
        let mut registry = Registry::with_prefix("hookgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by rule and outcome (rule is empty when no rule was selected)",
            requests.clone(),
        );
        let jenkins_calls = Family::<JenkinsLabels, Counter>::default();
        registry.register(
            "jenkins_calls",
            "Calls to Jenkins by target and result",
            jenkins_calls.clone(),
        );
        let jenkins_seconds: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "jenkins_call_duration_seconds",
            "Duration of calls to Jenkins",
            jenkins_seconds.clone(),
        );
        let rules = Gauge::<i64>::default();
        rules.set(i64::try_from(rules_loaded).unwrap_or(i64::MAX));
        registry.register(
            "rules_loaded",
            "Rules in the set in use (compiled at start-up or by the last applied reload)",
            rules.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        for result in ["applied", "refused"] {
            reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        registry.register(
            "config_reloads",
            "Reloads of the config, rules and sinks (SIGHUP, POST /reload, rules.watch) by result: applied or refused",
            reloads.clone(),
        );
        let last_reload_ok = Gauge::<i64>::default();
        last_reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 when the last reload was applied (or none was tried), 0 when it was refused and an older set serves",
            last_reload_ok.clone(),
        );
        let queue_depth = Family::<StateLabels, Gauge>::default();
        registry.register(
            "queue_deliveries",
            "Deliveries in the store by state (queue mode)",
            queue_depth.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        // Exported at 0 from the start, so the first dead letter is an increase an alert sees.
        for outcome in ["done", "retry", "dead"] {
            attempts.get_or_create(&AttemptLabels { outcome }).inc_by(0);
        }
        registry.register(
            "delivery_attempts",
            "Delivery attempts by outcome: done, retry or dead (queue mode)",
            attempts.clone(),
        );
        let delivery_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 20));
        registry.register(
            "delivery_latency_seconds",
            "From accepting a call to Jenkins accepting it (queue mode; triggers only)",
            delivery_seconds.clone(),
        );
        let oldest_pending_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest queued or retrying delivery, 0 when none (queue mode)",
            oldest_pending_seconds.clone(),
        );
        let outcomes_unrecorded = Gauge::<i64>::default();
        registry.register(
            "delivery_outcomes_unrecorded",
            "Attempts whose outcome the store has refused so far (kept in memory; no new attempt starts while above 0)",
            outcomes_unrecorded.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Notification events by Jenkins target, phase and outcome (accepted, duplicate or why refused)",
            events.clone(),
        );
        let sink_deliveries = Family::<SinkOutcomeLabels, Counter>::default();
        registry.register(
            "sink_deliveries",
            "Delivery attempts to sinks by sink and outcome: done, retry or dead",
            sink_deliveries.clone(),
        );
        let sink_seconds: SinkHistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "sink_call_duration_seconds",
            "Duration of calls to sinks",
            sink_seconds.clone(),
        );
        let sink_auth_failed = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "sink_auth_failed",
            "1 while a sink's last answer refused hookgate's credentials (401 or 403), until a call succeeds",
            sink_auth_failed.clone(),
        );
        let ready = Gauge::<i64>::default();
        ready.set(1);
        registry.register(
            "ready",
            "1 while the gateway takes calls (/readyz answers 200); 0 while its store refuses writes",
            ready.clone(),
        );
        Self {
            rules_loaded: rules,
            reloads,
            last_reload_ok,
            ready,
            events,
            sink_deliveries,
            sink_seconds,
            sink_auth_failed,
            outcomes_unrecorded,
            registry,
            requests,
            jenkins_calls,
            jenkins_seconds,
            queue_depth,
            attempts,
            delivery_seconds,
            oldest_pending_seconds,
        }
    }

    /// Sets the queue gauges from the store's published counts, the oldest age as of `now_ms`.
    pub fn queue(&self, stats: &crate::store::Stats, now_ms: i64) {
        for (state, count) in &stats.by_state {
            self.queue_depth
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        let age_ms = stats.oldest_pending_age_ms(now_ms).unwrap_or(0);
        #[allow(clippy::cast_precision_loss)] // ages in ms are far below 2^52
        self.oldest_pending_seconds.set(age_ms as f64 / 1000.0);
    }

    /// A reload's result; an applied one puts `rules` in use.
    pub fn reload(&self, applied: Option<usize>) {
        let result = if applied.is_some() {
            "applied"
        } else {
            "refused"
        };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.last_reload_ok.set(i64::from(applied.is_some()));
        if let Some(rules) = applied {
            self.rules_loaded
                .set(i64::try_from(rules).unwrap_or(i64::MAX));
        }
    }

    /// Whether the gateway takes calls, as of the store's last write (read at each scrape).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Records one delivery attempt; `outcome` is `done`, `retry` or `dead`. `accepted_for` is
    /// the time since acceptance, observed when Jenkins accepted the delivery.
    pub fn attempt(&self, outcome: &'static str, accepted_for: Option<Duration>) {
        self.attempts
            .get_or_create(&AttemptLabels { outcome })
            .inc();
        if let Some(latency) = accepted_for {
            self.delivery_seconds.observe(latency.as_secs_f64());
        }
    }

    /// Attempts whose outcome waits in memory for the store to take it.
    pub fn outcomes_unrecorded(&self, count: usize) {
        self.outcomes_unrecorded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn request(&self, rule: &str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                rule: rule.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records one Jenkins call; `result` is `ok`, `timeout`, `unreachable` or the status code class.
    pub fn jenkins_call(&self, jenkins: &str, result: &'static str, elapsed: Duration) {
        self.jenkins_calls
            .get_or_create(&JenkinsLabels {
                jenkins: jenkins.to_owned(),
                result,
            })
            .inc();
        self.jenkins_seconds
            .get_or_create(&TargetLabels {
                jenkins: jenkins.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one Notification event; `phase` is empty when the event was refused before it
    /// was read, and `jenkins` when the path named no event source (so a scan of paths cannot
    /// grow the label set).
    pub fn event(&self, jenkins: &str, phase: &str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                jenkins: jenkins.to_owned(),
                phase: phase.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records one decided sink delivery attempt (`done`, `retry`, `dead`).
    pub fn sink_delivery(&self, sink: &str, outcome: &'static str) {
        self.sink_deliveries
            .get_or_create(&SinkOutcomeLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn sink_call(&self, sink: &str, elapsed: Duration) {
        self.sink_seconds
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Exports a sink's auth gauge, at 0 when new; a target rebuilt by a reload leaves the
    /// value the one before it set.
    pub fn sink_auth_exported(&self, sink: &str) {
        let _exported = self.sink_auth_failed.get_or_create(&SinkLabels {
            sink: sink.to_owned(),
        });
    }

    /// A reload removed the sink: its auth gauge goes (an alert on it would fire forever).
    pub fn sink_removed(&self, sink: &str) {
        self.sink_auth_failed.remove(&SinkLabels {
            sink: sink.to_owned(),
        });
    }

    /// Sets a configured sink's auth gauge. A sink a reload removed has none, and an attempt
    /// of its old target that ends after the reload does not bring it back (its alert would
    /// fire forever).
    pub fn sink_auth_failed(&self, sink: &str, failed: bool) {
        if let Some(gauge) = self.sink_auth_failed.get(&SinkLabels {
            sink: sink.to_owned(),
        }) {
            gauge.set(i64::from(failed));
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_sinks_auth_gauge_stays_gone() {
        let metrics = Metrics::new(0);
        metrics.sink_auth_exported("dora");
        metrics.sink_auth_failed("dora", true);
        assert!(
            metrics
                .encode()
                .contains("hookgate_sink_auth_failed{sink=\"dora\"} 1")
        );
        metrics.sink_removed("dora");
        // An attempt of the removed sink's old target ends after the reload.
        metrics.sink_auth_failed("dora", true);
        assert!(!metrics.encode().contains("sink=\"dora\""));
    }
}
