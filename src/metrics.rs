//! Prometheus metrics: request outcomes by rule, and Jenkins calls by target and result.

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
    Filtered,
    DryRun,
    Failed,
    Forbidden,
    Unauthorized,
    BadRequest,
    NotFound,
    PayloadTooLarge,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::Filtered => "filtered",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::Forbidden => "forbidden",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::PayloadTooLarge => "payload_too_large",
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

type HistogramFamily = Family<TargetLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    jenkins_calls: Family<JenkinsLabels, Counter>,
    jenkins_seconds: HistogramFamily,
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
        registry.register("rules_loaded", "Rules compiled at start-up", rules);
        Self {
            registry,
            requests,
            jenkins_calls,
            jenkins_seconds,
        }
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

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
