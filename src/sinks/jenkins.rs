//! Jenkins as a target: one pooled HTTP client, one target per `[jenkins.<name>]`, each with its
//! own deadline and concurrency cap, calling GWT's `/generic-webhook-trigger/invoke`, directly
//! (direct mode) or as the outbox's [`JenkinsTarget`], which re-sends a stored trigger as the
//! [`Call`] it was accepted as and reads the answer as the retry table says.
//!
//! The job token travels in the query string, as GWT expects, so every error is stripped of
//! its URL before it can reach a log line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use base64::Engine as _;
use http_body_util::Full;
use hyper::Uri;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::{Env, JenkinsSettings, Problem};
use crate::dispatch::{Call, ContentType};
use crate::error::cause_chain;
use crate::metrics::Metrics;
use crate::outbox::{self, AttemptFuture, Attempted, Job, RetryPolicy, Verdict};
use crate::rules::RuleSet;
use crate::secret::SecretSource;
use crate::store::{Effect, Next, Payload, Pending};
use ulid::Ulid;

/// Jenkins' answers are small; anything larger is not a GWT answer and is not read further.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

pub const DELIVERY_HEADER: &str = "X-Hookgate-Delivery";
pub const RULE_HEADER: &str = "X-Hookgate-Rule";
pub use super::http::TransportError;
use super::http::{self, AGENT, Http};

/// What Jenkins said about a call it accepted (2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JenkinsAnswer {
    /// The HTTP status Jenkins answered with (2xx).
    pub status: u16,
    /// Whether GWT scheduled a build (false when Jenkins' own filter skipped it).
    pub triggered: bool,
    /// Jenkins queue item id, 0 when unknown.
    pub id: u64,
    /// Queue item URL as GWT gives it (`queue/item/<id>/`), "" when unknown.
    pub url: String,
    /// Every job GWT scheduled, with its queue item, in the answer's order (one call with a
    /// token several jobs share triggers each of them).
    pub items: Vec<QueueItem>,
}

/// One job GWT scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// The job's full name, as GWT's answer keys it.
    pub job: String,
    pub id: u64,
    /// `queue/item/<id>/`.
    pub url: String,
}

/// Why a call did not reach an accepting Jenkins.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("Jenkins target `{0}` is not configured")]
    UnknownTarget(String),
    #[error("Jenkins is unreachable")]
    Unreachable(#[source] TransportError),
    #[error("Jenkins did not answer within {0:?}")]
    Timeout(Duration),
    /// The deadline passed while waiting for a free slot (`max_in_flight`): nothing was sent.
    #[error("no free slot toward Jenkins within {0:?}; the call was not sent")]
    Busy(Duration),
    #[error("Jenkins answered {code}")]
    Status {
        code: u16,
        /// `Retry-After` in seconds, when Jenkins (or a proxy before it) sent one.
        retry_after: Option<Duration>,
    },
    #[error("the delivery store is unavailable")]
    Store(#[source] Arc<crate::store::StoreError>),
    #[error("Jenkins answered {code} with a body that is not GWT's answer")]
    UnexpectedAnswer { code: u16 },
}

impl DispatchError {
    /// The `result` label of `hookgate_jenkins_calls`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DispatchError::Timeout(_) | DispatchError::Busy(_) => "timeout",
            DispatchError::Status { code, .. } if *code >= 500 => "5xx",
            DispatchError::Status { .. } => "4xx",
            DispatchError::Unreachable(_) | DispatchError::UnknownTarget(_) => "unreachable",
            DispatchError::Store(_) => "store",
            DispatchError::UnexpectedAnswer { .. } => "unexpected",
        }
    }

    /// A short, fixed text for responses; the cause chain stays in the log.
    pub fn client_message(&self) -> String {
        match self {
            DispatchError::UnknownTarget(_) => "Jenkins target is not configured.".to_owned(),
            DispatchError::Unreachable(_) => "Jenkins is unreachable.".to_owned(),
            DispatchError::Timeout(_) | DispatchError::Busy(_) => {
                "Jenkins did not answer in time.".to_owned()
            }
            DispatchError::Status { code, .. } => format!("Jenkins answered {code}."),
            DispatchError::Store(_) => "The delivery store is unavailable.".to_owned(),
            DispatchError::UnexpectedAnswer { code } => {
                format!("Jenkins answered {code} with something other than GWT's answer.")
            }
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    /// `<base>/generic-webhook-trigger/invoke`, checked at start-up.
    invoke_url: String,
    /// `Basic …` for `user` and the API token, marked sensitive.
    authorization: Option<HeaderValue>,
    timeout: Duration,
    max_in_flight: usize,
    slots: Arc<Semaphore>,
}

/// Pooled client for every configured Jenkins.
pub struct JenkinsClient {
    http: Http,
    targets: HashMap<String, Endpoint>,
}

impl std::fmt::Debug for JenkinsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JenkinsClient")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl JenkinsClient {
    /// Validates every target; `source` names the config file in problems.
    pub fn build(
        settings: &BTreeMap<String, JenkinsSettings>,
        source: &str,
        env: &dyn Env,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut targets = HashMap::new();
        for (name, jenkins) in settings {
            let field = |key: &str| format!("jenkins.{name}.{key}");
            let invoke_url = match parse_base_url(&jenkins.url) {
                Ok(base) => Some(format!("{base}/generic-webhook-trigger/invoke")),
                Err(reason) => {
                    problems.push(Problem::new(source, field("url"), reason));
                    None
                }
            };
            let api_token = SecretSource {
                env: jenkins.api_token_env.as_deref(),
                file: jenkins.api_token_file.as_deref(),
                inline: None,
            }
            .read(Path::new("."), env)
            .unwrap_or_else(|reason| {
                problems.push(Problem::new(source, field("api_token_env"), reason));
                None
            });
            let has_token_source =
                jenkins.api_token_env.is_some() || jenkins.api_token_file.is_some();
            match (&jenkins.user, has_token_source) {
                (Some(_), false) => problems.push(Problem::new(
                    source,
                    field("user"),
                    "basic auth needs api_token_env or api_token_file as well",
                )),
                (None, true) => problems.push(Problem::new(
                    source,
                    field("user"),
                    "is required when an API token is configured",
                )),
                _ => {}
            }
            if jenkins.timeout_secs == 0 {
                problems.push(Problem::new(
                    source,
                    field("timeout_secs"),
                    "must be at least 1",
                ));
            }
            if jenkins.max_in_flight == 0 {
                problems.push(Problem::new(
                    source,
                    field("max_in_flight"),
                    "must be at least 1",
                ));
            }
            let authorization = match (&jenkins.user, &api_token) {
                (Some(user), Some(api_token)) => {
                    let mut credentials = user.as_bytes().to_vec();
                    credentials.push(b':');
                    credentials.extend_from_slice(api_token.expose());
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&credentials);
                    zeroize::Zeroize::zeroize(&mut credentials);
                    match HeaderValue::try_from(format!("Basic {encoded}")) {
                        Ok(mut value) => {
                            value.set_sensitive(true);
                            Some(value)
                        }
                        Err(_) => {
                            problems.push(Problem::new(
                                source,
                                field("user"),
                                "cannot be sent in an Authorization header",
                            ));
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some(invoke_url) = invoke_url {
                targets.insert(
                    name.clone(),
                    Endpoint {
                        invoke_url,
                        authorization,
                        timeout: Duration::from_secs(jenkins.timeout_secs),
                        max_in_flight: jenkins.max_in_flight.max(1),
                        slots: Arc::new(Semaphore::new(jenkins.max_in_flight.max(1))),
                    },
                );
            }
        }
        let http = match http::client() {
            Ok(http) => Some(http),
            Err(e) => {
                problems.push(Problem::new(
                    source,
                    "jenkins",
                    format!("cannot create the HTTP client: {e}"),
                ));
                None
            }
        };
        match http {
            Some(http) if problems.is_empty() => Ok(Self { http, targets }),
            _ => Err(problems),
        }
    }

    /// Takes over what `previous` (the set a reload replaces) holds that is not config: its
    /// connection pool, and the slots of each target whose `max_in_flight` is unchanged, so
    /// calls of both sets together never exceed it while the old set's calls finish.
    pub fn carry_over(&mut self, previous: &JenkinsClient) {
        self.http = previous.http.clone();
        for (name, endpoint) in &mut self.targets {
            if let Some(before) = previous.targets.get(name)
                && before.max_in_flight == endpoint.max_in_flight
            {
                endpoint.slots = Arc::clone(&before.slots);
            }
        }
    }

    #[cfg(test)]
    fn shares_slots(&self, other: &JenkinsClient, name: &str) -> bool {
        match (self.targets.get(name), other.targets.get(name)) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.slots, &b.slots),
            _ => false,
        }
    }

    pub fn has_target(&self, name: &str) -> bool {
        self.targets.contains_key(name)
    }

    /// The target's `max_in_flight`, which the queue worker keeps to on its own so that a
    /// delivery's deadline never includes a wait for a slot.
    pub fn max_in_flight(&self, name: &str) -> usize {
        self.targets.get(name).map_or(1, |t| t.max_in_flight)
    }

    /// The URL a delivery goes to, with the token shown as `[redacted]`.
    pub fn describe(&self, target: &str) -> Option<String> {
        self.targets
            .get(target)
            .map(|t| format!("{}?token=[redacted]", t.invoke_url))
    }

    /// Calls Jenkins once for `delivery`, within the target's deadline (which includes the
    /// wait for a free slot).
    pub async fn invoke(&self, delivery: &Call) -> Result<JenkinsAnswer, DispatchError> {
        let rule = &delivery.rule;
        let target = self
            .targets
            .get(&rule.dispatch.jenkins)
            .ok_or_else(|| DispatchError::UnknownTarget(rule.dispatch.jenkins.clone()))?;
        let deadline = Instant::now() + target.timeout;
        let _slot = tokio::time::timeout_at(deadline.into(), target.slots.acquire())
            .await
            .map_err(|_| DispatchError::Busy(target.timeout))?
            .map_err(|_| DispatchError::Busy(target.timeout))?;

        let mut url = target.invoke_url.clone();
        if let Some(token) = &rule.dispatch.token {
            url.push_str("?token=");
            url.extend(form_urlencoded::byte_serialize(token.expose()));
        }
        let request = build_request(url, target, delivery)
            .map_err(|e| DispatchError::Unreachable(e.into()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| DispatchError::Unreachable(e.into()))?;
            let status = response.status();
            if !status.is_success() {
                let retry_after = http::retry_after(response.headers());
                return Err(DispatchError::Status {
                    code: status.as_u16(),
                    retry_after,
                });
            }
            // Jenkins accepted the call: an answer cut short is read as GWT's silent one (queue
            // items unknown), never as a failure, which a retry would turn into a second build.
            let answer = match http::read_capped(response.into_body(), MAX_ANSWER_BYTES).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%error, "Jenkins accepted the call, but its answer was cut short; its queue items are not known.");
                    Bytes::new()
                }
            };
            Ok((status, answer))
        };
        let (status, answer) = tokio::time::timeout_at(deadline.into(), exchange)
            .await
            .map_err(|_| DispatchError::Timeout(target.timeout))??;
        let parsed = parse_answer(&answer).ok_or(DispatchError::UnexpectedAnswer {
            code: status.as_u16(),
        })?;
        Ok(JenkinsAnswer {
            status: status.as_u16(),
            ..parsed
        })
    }
}

fn build_request(
    url: String,
    target: &Endpoint,
    delivery: &Call,
) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let mut request = hyper::Request::post(Uri::try_from(url)?)
        .header(CONTENT_TYPE, delivery.content_type.as_str())
        .header(USER_AGENT, AGENT)
        .header(DELIVERY_HEADER, delivery.id.to_string())
        .header(RULE_HEADER, delivery.rule.name.as_str());
    if let Some(authorization) = &target.authorization {
        request = request.header(AUTHORIZATION, authorization.clone());
    }
    request.body(Full::new(delivery.body.clone()))
}

fn parse_base_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials in the URL are not allowed; use user and api_token_env".to_owned(),
        );
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[derive(Deserialize)]
struct GwtAnswer {
    jobs: Option<Jobs>,
}

/// GWT's `jobs` object, in document order. Each job's `resolvedVariables` and filter echo
/// (which can hold every variable of the call) are skipped without being built.
struct Jobs(Vec<Option<GwtJob>>);

#[derive(Default)]
struct GwtJob {
    name: String,
    triggered: bool,
    id: u64,
    url: String,
}

impl<'de> Deserialize<'de> for Jobs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JobsVisitor;
        impl<'de> serde::de::Visitor<'de> for JobsVisitor {
            type Value = Jobs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("GWT's jobs object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Jobs, A::Error> {
                let mut jobs = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let mut job = map.next_value::<MaybeJob>()?.0;
                    if let Some(job) = job.as_mut() {
                        job.name = name;
                    }
                    jobs.push(job);
                }
                Ok(Jobs(jobs))
            }
        }
        deserializer.deserialize_map(JobsVisitor)
    }
}

/// One job's entry; `None` when it is not an object or a known field has the wrong type, so
/// one odd entry does not discard the others.
struct MaybeJob(Option<GwtJob>);

impl<'de> Deserialize<'de> for MaybeJob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct JobVisitor;
        impl<'de> serde::de::Visitor<'de> for JobVisitor {
            type Value = MaybeJob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a job entry")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MaybeJob, A::Error> {
                let mut job = Some(GwtJob::default());
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let value = match key.as_ref() {
                        "triggered" | "id" | "url" => map.next_value::<serde_json::Value>()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let Some(current) = job.as_mut() else {
                        continue;
                    };
                    let fits = match (key.as_ref(), value) {
                        ("triggered", serde_json::Value::Bool(b)) => {
                            current.triggered = b;
                            true
                        }
                        ("id", serde_json::Value::Number(n)) => {
                            n.as_u64().map(|n| current.id = n).is_some()
                        }
                        ("url", serde_json::Value::String(s)) => {
                            current.url = s;
                            true
                        }
                        _ => false,
                    };
                    if !fits {
                        job = None;
                    }
                }
                Ok(MaybeJob(job))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MaybeJob, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeJob(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeJob, E> {
                Ok(MaybeJob(None))
            }
        }
        deserializer.deserialize_any(JobVisitor)
    }
}

/// Maps GWT's `{"jobs": {name: {triggered, id, url}}, "message"}` to one answer: the first
/// triggered job, else the first job. An empty or non-JSON 2xx body (GWT's silent response)
/// counts as accepted with no queue item known.
fn parse_answer(body: &[u8]) -> Option<JenkinsAnswer> {
    let accepted = JenkinsAnswer {
        status: 200,
        triggered: true,
        id: 0,
        url: String::new(),
        items: Vec::new(),
    };
    // GWT's silent response is an empty 200; any other body must be GWT's JSON, or it came
    // from something else answering in Jenkins' place (a login page, a proxy).
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(accepted);
    }
    let GwtAnswer { jobs } = serde_json::from_slice::<GwtAnswer>(body).ok()?;
    let Some(jobs) = jobs else {
        return Some(accepted);
    };
    let parsed: Vec<GwtJob> = jobs.0.into_iter().flatten().collect();
    let chosen = parsed
        .iter()
        .find(|job| job.triggered)
        .or_else(|| parsed.first());
    let items = parsed
        .iter()
        .filter(|job| job.triggered && job.id != 0)
        .map(|job| QueueItem {
            job: job.name.clone(),
            id: job.id,
            url: job.url.clone(),
        })
        .collect();
    Some(match chosen {
        Some(job) => JenkinsAnswer {
            status: 200,
            triggered: job.triggered,
            id: job.id,
            url: job.url.clone(),
            items,
        },
        None => accepted,
    })
}

/// One `[jenkins.<name>]` as the outbox worker sees it.
pub struct JenkinsTarget {
    name: String,
    client: Arc<JenkinsClient>,
    rules: Arc<RuleSet>,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
    /// How long a reported trigger's queue items name its run (`delivery.done_retention_secs`).
    correlation_ttl: Duration,
    /// The URL people open (`public_url`, else `url`), for the queue item links Port shows.
    public_url: String,
}

impl JenkinsTarget {
    pub fn new(
        name: &str,
        client: Arc<JenkinsClient>,
        rules: Arc<RuleSet>,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
        correlation_ttl: Duration,
        public_url: String,
    ) -> Self {
        Self {
            name: name.to_owned(),
            client,
            rules,
            metrics,
            policy,
            correlation_ttl,
            public_url,
        }
    }

    /// The rule in use that a delivery of `rule` is made with, or why there is none any more:
    /// the rule was removed, or now dispatches to another Jenkins (the call was accepted for
    /// this one; its token is not this one's).
    fn rule_for(&self, rule: Option<&str>) -> Result<&Arc<crate::rules::Rule>, String> {
        let name = rule.unwrap_or("");
        match self.rules.get(name) {
            None => Err(format!("rule `{name}` is no longer loaded")),
            Some(rule) if rule.dispatch.jenkins != self.name => Err(format!(
                "rule `{name}` now dispatches to Jenkins `{}`, not `{}`",
                rule.dispatch.jenkins, self.name
            )),
            Some(rule) => Ok(rule),
        }
    }

    async fn send(&self, job: &Job) -> Attempted {
        let rule = match self.rule_for(job.rule.as_deref()) {
            Ok(rule) => rule,
            Err(reason) => return Attempted::permanent(reason),
        };
        let Ok(id) = Ulid::from_string(&job.id) else {
            return Attempted::permanent("the stored delivery id is not a ULID");
        };
        let Payload::Body(body) = &job.payload else {
            return Attempted::permanent("a Jenkins delivery without a stored call");
        };
        let call = Call {
            id,
            rule: Arc::clone(rule),
            body: Bytes::from(body.clone()),
            content_type: ContentType::parse(&job.content_type),
        };
        let started = Instant::now();
        let result = self.client.invoke(&call).await;
        self.metrics.jenkins_call(
            &self.name,
            result
                .as_ref()
                .err()
                .map_or("ok", DispatchError::metric_label),
            started.elapsed(),
        );
        attempted(&result)
    }
}

impl outbox::Target for JenkinsTarget {
    fn max_in_flight(&self) -> usize {
        self.client.max_in_flight(&self.name)
    }

    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn attempt<'a>(&'a self, job: &'a Job) -> AttemptFuture<'a> {
        Box::pin(self.send(job))
    }

    fn rules(&self) -> Option<Vec<String>> {
        Some(
            self.rules
                .iter()
                .filter(|rule| rule.dispatch.jenkins == self.name)
                .map(|rule| rule.name.clone())
                .collect(),
        )
    }

    fn retired(&self, rule: Option<&str>) -> Option<String> {
        self.rule_for(rule).err()
    }

    fn follow_up(&self, pending: &Pending, next: &Next) -> Vec<Effect> {
        crate::sinks::port::runs::trigger_outcome(
            &pending.target,
            pending.report.as_deref(),
            next,
            self.correlation_ttl,
            &self.public_url,
        )
    }
}

/// How a Jenkins answer decides the delivery's fate.
pub fn classify(result: &Result<JenkinsAnswer, DispatchError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Delivered,
        Err(
            DispatchError::Timeout(_)
            | DispatchError::Busy(_)
            | DispatchError::Unreachable(_)
            | DispatchError::Store(_),
        ) => Verdict::Retry { retry_after: None },
        Err(DispatchError::Status { code, retry_after }) => {
            Verdict::for_status(*code, *retry_after)
        }
        // A page that is not GWT's (a login form, a wrong URL behind a proxy) needs a person.
        Err(DispatchError::UnknownTarget(_) | DispatchError::UnexpectedAnswer { .. }) => {
            Verdict::Permanent
        }
    }
}

/// The receipt of an accepted trigger: every queue item GWT's answer names, with its job. An
/// answer that scheduled nothing (every job's filter in Jenkins skipped the call) has an empty
/// list; one that names no queue item although GWT triggered (its silent response) has none.
pub fn receipt(answer: &JenkinsAnswer) -> Option<String> {
    (!answer.items.is_empty() || !answer.triggered).then(|| {
        let jobs: Vec<serde_json::Value> = answer
            .items
            .iter()
            .map(|item| serde_json::json!({ "job": item.job, "id": item.id, "url": item.url }))
            .collect();
        serde_json::json!({ "jobs": jobs }).to_string()
    })
}

/// Why a call failed, with its causes: a delivery's reason, and what Port's run is told.
pub fn failure_text(error: &DispatchError) -> String {
    let chain = cause_chain(error);
    if chain.is_empty() {
        error.to_string()
    } else {
        format!("{error}: {chain}")
    }
}

fn attempted(result: &Result<JenkinsAnswer, DispatchError>) -> Attempted {
    let status = match result {
        Ok(answer) => Some(answer.status),
        Err(DispatchError::Status { code, .. }) => Some(*code),
        Err(_) => None,
    };
    let error = result.as_ref().err().map(failure_text);
    Attempted {
        verdict: classify(result),
        status,
        error,
        receipt: result.as_ref().ok().and_then(receipt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(max_in_flight: usize) -> JenkinsClient {
        let settings: crate::config::JenkinsSettings = toml::from_str(&format!(
            "url = \"http://127.0.0.1:8081\"\nmax_in_flight = {max_in_flight}"
        ))
        .expect("settings");
        let targets = std::collections::BTreeMap::from([("main".to_owned(), settings)]);
        JenkinsClient::build(&targets, "hookgate.toml", &std::collections::HashMap::new())
            .expect("client")
    }

    /// While the replaced set's calls finish, both sets' calls count against one cap.
    #[test]
    fn a_reloaded_client_keeps_the_slots_of_an_unchanged_cap() {
        let before = client(4);
        let mut same = client(4);
        same.carry_over(&before);
        assert!(same.shares_slots(&before, "main"));
        let mut raised = client(8);
        raised.carry_over(&before);
        assert!(!raised.shares_slots(&before, "main"));
    }

    #[test]
    fn gwt_answers_map_to_the_triggered_job() {
        let body = br#"{"jobs":{"a":{"triggered":false,"id":0,"url":""},"b":{"regexpFilterExpression":"","triggered":true,"resolvedVariables":{},"regexpFilterText":"","id":42,"url":"queue/item/42/"}},"message":"Triggered jobs."}"#;
        assert_eq!(
            parse_answer(body).expect("GWT answer"),
            JenkinsAnswer {
                status: 200,
                triggered: true,
                id: 42,
                url: "queue/item/42/".into(),
                items: vec![QueueItem {
                    job: "b".into(),
                    id: 42,
                    url: "queue/item/42/".into()
                }],
            }
        );
        // One token shared by several jobs: GWT schedules each; the receipt keeps them all.
        let several = br#"{"jobs":{"team/deploy-a":{"triggered":true,"id":7,"url":"queue/item/7/"},"skipped":{"triggered":false,"id":0,"url":""},"team/deploy-b":{"triggered":true,"id":8,"url":"queue/item/8/"}},"message":"Triggered jobs."}"#;
        let answer = parse_answer(several).expect("GWT answer");
        assert_eq!((answer.id, answer.items.len()), (7, 2));
        assert_eq!(
            receipt(&answer).map(|r| serde_json::from_str::<serde_json::Value>(&r).unwrap()),
            Some(serde_json::json!({"jobs": [
                {"job": "team/deploy-a", "id": 7, "url": "queue/item/7/"},
                {"job": "team/deploy-b", "id": 8, "url": "queue/item/8/"},
            ]}))
        );
        let filtered =
            br#"{"jobs":{"a":{"triggered":false,"id":0,"url":""}},"message":"Triggered jobs."}"#;
        let filtered = parse_answer(filtered).expect("GWT answer");
        assert!(!filtered.triggered);
        assert_eq!(receipt(&filtered).as_deref(), Some(r#"{"jobs":[]}"#));
        // GWT's silent response: 200 with an empty body; what it scheduled is not known.
        let silent = parse_answer(b"").expect("silent answer");
        assert!(silent.triggered);
        assert_eq!(silent.id, 0);
        assert_eq!(receipt(&silent), None);
        // A login page or proxy page answering 200 is not a success.
        assert_eq!(parse_answer(b"<html><body>Sign in</body></html>"), None);
        // `jobs` that is not an object is not GWT's answer.
        assert_eq!(parse_answer(br#"{"jobs":[1,2]}"#), None);
    }

    #[test]
    fn odd_job_entries_are_skipped_without_losing_the_others() {
        let body = br#"{"jobs":{"a":"text","b":{"triggered":true,"id":-1,"url":"x"},"c":[{"id":1}],"d":{"triggered":true,"id":7,"url":"queue/item/7/","resolvedVariables":{"deep":[[{"x":1}]]}}},"message":"m"}"#;
        assert_eq!(
            parse_answer(body).expect("GWT answer"),
            JenkinsAnswer {
                status: 200,
                triggered: true,
                id: 7,
                url: "queue/item/7/".into(),
                items: vec![QueueItem {
                    job: "d".into(),
                    id: 7,
                    url: "queue/item/7/".into()
                }],
            }
        );
        // Nothing usable: accepted, no queue item known.
        let none = parse_answer(br#"{"jobs":{"a":null,"b":{"url":null}}}"#).expect("answer");
        assert_eq!((none.triggered, none.id), (true, 0));
        // `jobs: null` is GWT's answer with no job entries.
        assert!(parse_answer(br#"{"jobs":null,"message":"m"}"#).is_some());
    }

    #[test]
    fn base_urls_are_validated() {
        assert_eq!(
            parse_base_url("http://jenkins:8080/ci/").as_deref(),
            Ok("http://jenkins:8080/ci")
        );
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("http://x/?a=1").is_err());
        assert!(parse_base_url("http://u:p@x/").is_err());
        assert!(parse_base_url("jenkins:8080").is_err());
    }
}

#[cfg(test)]
mod target_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn classification_follows_the_retry_table() {
        let status = |code, retry_after| Err(DispatchError::Status { code, retry_after });
        let answer = Ok(JenkinsAnswer {
            status: 200,
            triggered: true,
            id: 1,
            url: "queue/item/1/".into(),
            items: vec![QueueItem {
                job: "deploy".into(),
                id: 1,
                url: "queue/item/1/".into(),
            }],
        });
        assert_eq!(classify(&answer), Verdict::Delivered);
        assert_eq!(
            attempted(&answer).receipt.as_deref(),
            Some(r#"{"jobs":[{"job":"deploy","id":1,"url":"queue/item/1/"}]}"#)
        );
        assert_eq!(
            classify(&status(500, None)),
            Verdict::Retry { retry_after: None }
        );
        let later = Some(Duration::from_secs(7));
        assert_eq!(
            classify(&status(503, later)),
            Verdict::Retry { retry_after: later }
        );
        for code in [408, 429] {
            assert_eq!(
                classify(&status(code, None)),
                Verdict::Retry { retry_after: None }
            );
        }
        assert_eq!(
            classify(&Err(DispatchError::Timeout(Duration::from_secs(1)))),
            Verdict::Retry { retry_after: None }
        );
        // No free slot before the deadline: nothing was sent, so it is tried again.
        assert_eq!(
            classify(&Err(DispatchError::Busy(Duration::from_secs(1)))),
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
}
