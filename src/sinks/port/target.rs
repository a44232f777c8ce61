//! A port sink as the outbox worker sees it. It takes two kinds of deliveries: the build events
//! its matcher took, which it only decides about (which run, which step: no call to Port), and
//! the run updates those decisions and the triggers' outcomes queued, which it sends to Port.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use super::api::{Answer, CallError, PortApi, TokenCache};
use super::runs::{self, Decision, Intent, Resolution, Unrecorded};
use crate::events::model::Event;
use crate::metrics::Metrics;
use crate::outbox::{self, AttemptFuture, Attempted, Job, RetryPolicy, Verdict};
use crate::sinks::http;
use crate::sinks::sink::{PortSettings, Sink};
use crate::store::{Effect, Next, Payload, Pending, Store, now_ms, target_id};

/// How soon an event waiting for a reported trigger's answer asks again: soon at first (Jenkins
/// answers within milliseconds), then less often, so a Jenkins backlog of reported triggers
/// costs each waiting event some 15 reads over its minute, not one every few milliseconds.
fn wait_step(age: Duration) -> Duration {
    (age / 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// One `kind = "port"` sink.
pub struct PortTarget {
    sink: Arc<Sink>,
    settings: Arc<PortSettings>,
    api: PortApi,
    store: Store,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    /// Each Jenkins target's `public_url` (else `url`), by name, for links.
    public_urls: Arc<HashMap<String, String>>,
    unrecorded: Arc<Unrecorded>,
}

/// The access tokens of the port sinks, by their credentials: a reload that leaves a sink's
/// URL, client id and secret as they were keeps its token, so no save under `rules.watch`
/// costs a token call; changed credentials get a token of their own.
#[derive(Default)]
pub struct TokenCaches(std::sync::Mutex<HashMap<[u8; 32], Arc<TokenCache>>>);

impl TokenCaches {
    fn for_credentials(
        &self,
        base: &str,
        client_id: &crate::secret::Secret,
        client_secret: &crate::secret::Secret,
    ) -> Arc<TokenCache> {
        let key = TokenCache::key(base, client_id, client_secret);
        let mut caches = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(caches.entry(key).or_default())
    }

    /// Forgets the tokens no target holds any more (sinks removed, credentials changed).
    pub fn prune(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, cache| Arc::strong_count(cache) > 1);
    }
}

impl PortTarget {
    /// `None` when `sink` is not a port sink.
    pub fn new(
        sink: Arc<Sink>,
        store: Store,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        public_urls: Arc<HashMap<String, String>>,
        unrecorded: Arc<Unrecorded>,
        tokens: &TokenCaches,
    ) -> Result<Option<Self>, rustls::Error> {
        let Some(settings) = sink.port().cloned() else {
            return Ok(None);
        };
        let api = PortApi::new(
            sink.url(),
            settings.client_id.clone(),
            settings.client_secret.clone(),
            http::client()?,
            sink.timeout,
            tokens.for_credentials(sink.url(), &settings.client_id, &settings.client_secret),
        );
        metrics.sink_auth_exported(&sink.name);
        Ok(Some(Self {
            sink,
            settings,
            api,
            store,
            metrics,
            policy,
            public_urls,
            unrecorded,
        }))
    }

    fn public_url(&self, jenkins: &str) -> &str {
        self.public_urls.get(jenkins).map_or("", String::as_str)
    }

    /// A build event: which run it belongs to and what it asks of it, kept as the receipt.
    async fn decide(&self, job: &Job) -> Attempted {
        let Payload::Event(stored) = &job.payload else {
            return Attempted::permanent("a build event delivery without its event");
        };
        let event = match Event::parse(&stored.body) {
            Ok(event) => event,
            Err(reason) => return Attempted::permanent(format!("the stored event: {reason}")),
        };
        let age = Duration::from_millis(u64::try_from(now_ms() - job.accepted_at).unwrap_or(0));
        let resolution = if super::step(&event) == super::Step::Nothing {
            Resolution::Skip(format!(
                "{} sends nothing to Port",
                event.build.phase.as_str()
            ))
        } else {
            let jenkins = target_id("jenkins", &stored.jenkins);
            // Read before the store: a direct call's effects are committed before it stops
            // counting, so the store read after this sees what it recorded.
            let direct_pending = self.unrecorded.any(&stored.jenkins);
            let mut lookup = match self.store.lookup_run(jenkins, event.build.queue_id).await {
                Ok(lookup) => lookup,
                Err(error) => {
                    return Attempted {
                        verdict: Verdict::Retry { retry_after: None },
                        status: None,
                        error: Some(format!("cannot look up the build's run: {error}")),
                        receipt: None,
                    };
                }
            };
            lookup.trigger_pending |= direct_pending;
            runs::resolve(
                &self.sink.name,
                &event,
                &lookup,
                age < runs::WAIT_FOR_TRIGGER,
                &self.settings.run_id_parameters,
            )
        };
        // A run whose direct-mode call is still in flight does not end before its builds are
        // known (the call's effects are written before it stops counting).
        let resolution = match resolution {
            Resolution::Run(run)
                if matches!(super::step(&event), super::Step::Finished { .. })
                    && age < runs::WAIT_FOR_TRIGGER
                    && self.unrecorded.any_for_run(&self.sink.name, &run) =>
            {
                Resolution::Wait
            }
            other => other,
        };
        let public_url = self.public_url(&stored.jenkins);
        match runs::decide(&event, &stored.jenkins, resolution, public_url) {
            None => Attempted {
                verdict: Verdict::Wait {
                    after: wait_step(age),
                },
                status: None,
                error: Some(
                    "waiting for Jenkins' answer to a reported trigger, to learn the build's run"
                        .to_owned(),
                ),
                receipt: None,
            },
            Some(decision) => Attempted {
                verdict: Verdict::Delivered,
                status: None,
                error: None,
                receipt: serde_json::to_string(&decision).ok(),
            },
        }
    }

    /// A run update: its log line (with `logs`), then the PATCH, whose answer decides.
    async fn send(&self, job: &Job) -> Attempted {
        let Payload::Body(body) = &job.payload else {
            return Attempted::permanent("a run update without its body");
        };
        let Ok(intent) = serde_json::from_slice::<Intent>(body) else {
            return Attempted::permanent("the stored run update cannot be read");
        };
        if !super::is_run_id(&intent.run) {
            return Attempted::permanent("the stored run id is not a Port run id");
        }
        let update = intent.update.body();
        let path = format!("/v1/actions/runs/{}", intent.run);
        let started = Instant::now();
        if self.settings.logs {
            let line = intent.update.log();
            match self
                .api
                .call(Method::POST, &format!("{path}/logs"), &line)
                .await
            {
                Ok(answer) if (200..300).contains(&answer.status) => {}
                // Refused credentials refuse the PATCH too, and a line Port could not take now
                // (429, 5xx) is retried with it, so it is not lost, while the first half of the
                // attempts last: after that the status goes without its line, so a logs
                // endpoint that keeps failing cannot leave the run in progress. (A PATCH that
                // fails after its line went through posts the line again with its retry.)
                Ok(answer)
                    if matches!(answer.status, 401 | 403)
                        || (matches!(
                            Verdict::for_status(answer.status, None),
                            Verdict::Retry { .. }
                        ) && job.attempts.saturating_add(1) < self.policy.max_attempts / 2) =>
                {
                    self.metrics.sink_call(&self.sink.name, started.elapsed());
                    return self.answered(&answer);
                }
                // The status is what the run shows; a line Port refuses does not hold it up.
                Ok(answer) => {
                    tracing::warn!(sink = %self.sink.name, delivery = %job.id, status = answer.status, reason = %self.api.redacted(&answer.message()), "Port refused a run log line; updating the run's status anyway.")
                }
                Err(error) => {
                    self.metrics.sink_call(&self.sink.name, started.elapsed());
                    return self.failed(error);
                }
            }
        }
        let result = self.api.call(Method::PATCH, &path, &update).await;
        self.metrics.sink_call(&self.sink.name, started.elapsed());
        match result {
            Ok(answer) => self.answered(&answer),
            Err(error) => self.failed(error),
        }
    }

    /// The gauge itself is the state: one per sink name, whichever set's target (before or
    /// after a reload) saw the answer last.
    fn auth(&self, failed: bool) {
        self.metrics.sink_auth_failed(&self.sink.name, failed);
    }

    /// Port's answer to the PATCH: 2xx done; 401 (after a fresh token) and 403 refused
    /// credentials; 404 and 422 dead with Port's message; 408, 429 and 5xx retried.
    fn answered(&self, answer: &Answer) -> Attempted {
        let verdict = Verdict::for_status(answer.status, answer.retry_after);
        if matches!(answer.status, 401 | 403) {
            self.auth(true);
            tracing::error!(sink = %self.sink.name, status = answer.status, "Port refused hookgate's access token; check the sink's client id and secret.");
        } else if verdict == Verdict::Delivered {
            self.auth(false);
        }
        let error = (verdict != Verdict::Delivered).then(|| {
            let message = self.api.redacted(&answer.message());
            if message.is_empty() {
                format!("Port answered {}", answer.status)
            } else {
                format!("Port answered {}: {message}", answer.status)
            }
        });
        Attempted {
            verdict,
            status: Some(answer.status),
            error,
            receipt: None,
        }
    }

    fn failed(&self, error: CallError) -> Attempted {
        let (verdict, status, reason) = match error {
            CallError::Unreachable(reason) => (Verdict::Retry { retry_after: None }, None, reason),
            CallError::Refused(reason) => {
                self.auth(true);
                tracing::error!(sink = %self.sink.name, "Port refused the sink's client id and secret.");
                (Verdict::Permanent, Some(401), reason)
            }
            CallError::Token { status, reason } => {
                // The retry table; a 2xx without a token is no more use next time.
                let verdict = match Verdict::for_status(status, None) {
                    Verdict::Delivered => Verdict::Permanent,
                    verdict => verdict,
                };
                (verdict, Some(status), reason)
            }
        };
        Attempted {
            verdict,
            status,
            error: Some(reason),
            receipt: None,
        }
    }
}

impl outbox::Target for PortTarget {
    fn max_in_flight(&self) -> usize {
        self.sink.max_in_flight
    }

    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn attempt<'a>(&'a self, job: &'a Job) -> AttemptFuture<'a> {
        match job.payload {
            Payload::Event(_) => Box::pin(self.decide(job)),
            Payload::Body(_) => Box::pin(self.send(job)),
        }
    }

    fn settled(&self, outcome: &'static str) {
        self.metrics.sink_delivery(&self.sink.name, outcome);
    }

    /// A decided build event queues what it asks of its run.
    fn follow_up(&self, pending: &Pending, next: &Next) -> Vec<Effect> {
        let Next::Done {
            receipt: Some(receipt),
        } = next
        else {
            return Vec::new();
        };
        if pending.event_seq.is_none() {
            return Vec::new();
        }
        serde_json::from_str::<Decision>(receipt)
            .map(|decision| decision.effects(&self.sink.name))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_event_asks_soon_then_less_often() {
        let step = |ms: u64| wait_step(Duration::from_millis(ms)).as_millis();
        assert_eq!(step(0), 250);
        assert_eq!(step(2_000), 1_000);
        assert_eq!(step(30_000), 5_000);
        // Over the minute it may wait, some 15 reads.
        let (mut age, mut reads) = (Duration::ZERO, 0);
        while age < runs::WAIT_FOR_TRIGGER {
            age += wait_step(age);
            reads += 1;
        }
        assert!((10..=20).contains(&reads), "{reads}");
    }
}
