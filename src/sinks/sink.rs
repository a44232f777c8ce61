//! One `[sinks.<name>]`, compiled: which events it takes (`[match]`, with the kind's defaults),
//! the request it makes of each (`prepare`, shared by the outbox and `hookgate test-event`), and
//! its outbox [`Target`](crate::outbox::Target), which sends that request and reads the answer
//! with the retry table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use fancy_regex::Regex;
use http_body_util::Full;
use hyper::Uri;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};

use super::alert;
use super::allstacks::{self, RecordRules};
use super::http::{self, AGENT, Http};
use crate::config::{Env, InlineSecret, MatchSettings, Problem, SinkKind, SinkSettings, TokenIn};
use crate::error::cause_chain;
use crate::events::facts::BuildFacts;
use crate::events::model::{Event, Phase};
use crate::extract::{RegexUse, compile_regex};
use crate::metrics::Metrics;
use crate::outbox::{self, AttemptFuture, Attempted, Job, RetryPolicy, Verdict};
use crate::secret::{Secret, SecretSource};
use crate::store::Payload;

/// Jenkins' `Result` names (`hudson.model.Result`).
pub const RESULTS: [&str; 5] = ["SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED"];

/// The phases a sink takes by default: Allstacks wants one record per finished build; Port's
/// run hears of a build's start and of its end (QUEUED and COMPLETED would send nothing).
fn default_phases(kind: SinkKind) -> Vec<Phase> {
    match kind {
        SinkKind::Allstacks => vec![Phase::Finalized],
        SinkKind::Port => vec![Phase::Started, Phase::Finalized],
        SinkKind::Alert | SinkKind::Forward => Phase::ALL.to_vec(),
    }
}

/// The results a sink takes by default; `None` is every result, an absent one included.
fn default_results(kind: SinkKind) -> Option<Vec<String>> {
    match kind {
        SinkKind::Allstacks => Some(
            ["SUCCESS", "FAILURE", "UNSTABLE"]
                .map(str::to_owned)
                .to_vec(),
        ),
        SinkKind::Port | SinkKind::Alert | SinkKind::Forward => None,
    }
}

/// Which events reach a sink.
#[derive(Debug)]
pub struct Matcher {
    /// `None`: every Jenkins target.
    jenkins: Option<Vec<String>>,
    jobs: Option<(String, Arc<Regex>)>,
    phases: Vec<Phase>,
    /// `None`: every result, an absent one (QUEUED, STARTED) included.
    results: Option<Vec<String>>,
    parameters: Vec<(String, String, Arc<Regex>)>,
}

impl Matcher {
    /// What the sink takes, for `check`: `jenkins=… jobs=… phases=… results=… parameters=…`.
    pub fn describe(&self) -> String {
        let phases: Vec<&str> = self.phases.iter().map(|p| p.as_str()).collect();
        let mut text = format!(
            "jenkins={} jobs={} phases={} results={}",
            self.jenkins
                .as_ref()
                .map_or_else(|| "all".to_owned(), |t| t.join(",")),
            self.jobs
                .as_ref()
                .map_or("all", |(pattern, _)| pattern.as_str()),
            if self.phases.len() == Phase::ALL.len() {
                "all".to_owned()
            } else {
                phases.join(",")
            },
            self.results
                .as_ref()
                .map_or_else(|| "all".to_owned(), |r| r.join(",")),
        );
        if !self.parameters.is_empty() {
            let names: Vec<&str> = self.parameters.iter().map(|(n, _, _)| n.as_str()).collect();
            text.push_str(&format!(" parameters={}", names.join(",")));
        }
        text
    }

    /// `Ok` when the event reaches the sink, else why not (for `hookgate test-event`).
    pub fn check(&self, jenkins: &str, event: &Event) -> Result<(), String> {
        if let Some(targets) = &self.jenkins
            && !targets.iter().any(|t| t == jenkins)
        {
            return Err(format!(
                "Jenkins target `{jenkins}` is not in match.jenkins [{}]",
                targets.join(", ")
            ));
        }
        if let Some((pattern, regex)) = &self.jobs
            && !regex.is_match(&event.url).unwrap_or(false)
        {
            return Err(format!(
                "job url `{}` does not match match.jobs `{pattern}`",
                event.url
            ));
        }
        let phase = event.build.phase;
        if !self.phases.contains(&phase) {
            let phases: Vec<&str> = self.phases.iter().map(|p| p.as_str()).collect();
            return Err(format!(
                "phase {phase} is not in match.phases [{}]",
                phases.join(", ")
            ));
        }
        if let Some(results) = &self.results {
            match &event.build.status {
                None => {
                    return Err(format!(
                        "the event has no build.status (the build has not finished); match.results is [{}]",
                        results.join(", ")
                    ));
                }
                Some(status) if !results.contains(status) => {
                    return Err(format!(
                        "build.status {status} is not in match.results [{}]",
                        results.join(", ")
                    ));
                }
                Some(_) => {}
            }
        }
        for (name, pattern, regex) in &self.parameters {
            match event.parameter(name) {
                None => return Err(format!("the build has no parameter {name}")),
                Some(value) if !regex.is_match(value).unwrap_or(false) => {
                    return Err(format!(
                        "build parameter {name} does not match match.parameters.{name} `{pattern}`"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// What the sink builds from an event.
#[derive(Debug)]
enum Shape {
    Allstacks { rules: Box<RecordRules> },
    Port(Arc<PortSettings>),
    Alert,
    Forward,
}

/// A `kind = "port"` sink's own settings, compiled.
#[derive(Debug)]
pub struct PortSettings {
    pub client_id: Secret,
    pub client_secret: Secret,
    /// Build parameters naming the run, first present wins.
    pub run_id_parameters: Vec<String>,
    /// Also post a run log line with each update.
    pub logs: bool,
}

/// The build parameters Port's Jenkins guide names the run id with.
pub const DEFAULT_RUN_ID_PARAMETERS: [&str; 2] = ["PORT_RUN_ID", "RUN_ID"];

/// A compiled `[sinks.<name>]`.
#[derive(Debug)]
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
    url: String,
    token: Option<Secret>,
    token_in: TokenIn,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub matcher: Matcher,
    shape: Shape,
}

/// The request a sink makes for one event: what the outbox sends and `test-event` prints.
#[derive(Debug)]
pub struct Prepared {
    url: String,
    /// The URL with the token (when it travels in the query) shown as `[redacted]`.
    pub shown_url: String,
    content_type: &'static str,
    authorization: Option<HeaderValue>,
    pub body: Vec<u8>,
}

impl Prepared {
    /// The headers as `test-event` prints them, credentials masked.
    pub fn shown_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("Content-Type", self.content_type.to_owned())];
        if self.authorization.is_some() {
            headers.push(("Authorization", "Bearer [redacted]".to_owned()));
        }
        headers.push(("User-Agent", AGENT.to_owned()));
        headers
    }
}

impl Sink {
    /// The deliveries of one key are made one after the other, in the order their events
    /// arrived. An alert's id is one per job, so its order is per job (a slow failure alert must
    /// not land after the next build's resolve); the others are ordered per build.
    pub fn ordering_key(&self, jenkins: &str, event: &Event) -> String {
        match self.shape {
            Shape::Alert => format!("{}\n{jenkins}\njob {}", self.name, event.url),
            Shape::Allstacks { .. } | Shape::Port(_) | Shape::Forward => {
                format!("{}\n{jenkins}\nbuild {}", self.name, event.build_key())
            }
        }
    }

    /// One line for `check`; names what is configured, never a secret.
    pub fn summary(&self) -> String {
        format!(
            "  sink {name}  kind={kind} url={url} token={token} {matching}",
            name = self.name,
            kind = self.kind.as_str(),
            url = self.url,
            token = match (&self.token, self.token_in) {
                (None, _) if self.port().is_some() => "client id and secret",
                (None, _) => "none",
                (Some(_), TokenIn::Bearer) => "bearer",
                (Some(_), TokenIn::Query) => "query",
            },
            matching = self.matcher.describe(),
        )
    }

    /// The configured URL (never holds a credential: `check_url` refuses those).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A port sink's own settings.
    pub fn port(&self) -> Option<&Arc<PortSettings>> {
        match &self.shape {
            Shape::Port(settings) => Some(settings),
            _ => None,
        }
    }

    /// Whether the sink sends one record per build (a later matching phase sends nothing).
    pub fn once_per_build(&self) -> bool {
        matches!(self.shape, Shape::Allstacks { .. })
    }

    /// Builds the request for `event` (`body` is its bytes as received) from the Jenkins
    /// target `jenkins`, with the facts earlier phases left. An error says why nothing can be
    /// sent and what to configure.
    pub fn prepare(
        &self,
        jenkins: &str,
        body: &[u8],
        event: &Event,
        facts: &BuildFacts,
    ) -> Result<Prepared, String> {
        let (body, content_type) = match &self.shape {
            Shape::Allstacks { rules } => {
                let rules = RecordRules {
                    jenkins: jenkins.to_owned(),
                    ..(**rules).clone()
                };
                let record = allstacks::build_record(event, facts, &rules)
                    .map_err(|reason| format!("cannot build the Allstacks record: {reason}"))?;
                (record.to_string().into_bytes(), "application/json")
            }
            Shape::Alert => (
                alert::alert_event(jenkins, event).to_string().into_bytes(),
                "application/json",
            ),
            // The event as the plugin sent it, under the plugin's own content type.
            Shape::Forward => (body.to_vec(), "application/json;charset=UTF-8"),
            // What Port gets depends on the run the build belongs to, which only the port
            // target knows when it makes the update; `test-event` shows `port::preview`.
            Shape::Port(_) => {
                return Err(
                    "a port sink's update depends on the run the build belongs to, known only when the update is made"
                        .to_owned(),
                );
            }
        };
        let (url, shown_url, authorization) = match (&self.token, self.token_in) {
            (None, _) => (self.url.clone(), self.url.clone(), None),
            (Some(token), TokenIn::Query) => {
                let separator = if self.url.contains('?') { '&' } else { '?' };
                let mut url = format!("{}{separator}token=", self.url);
                url.extend(form_urlencoded::byte_serialize(token.expose()));
                (
                    url,
                    format!("{}{separator}token=[redacted]", self.url),
                    None,
                )
            }
            (Some(token), TokenIn::Bearer) => {
                let mut value = b"Bearer ".to_vec();
                value.extend_from_slice(token.expose());
                let mut header = HeaderValue::from_bytes(&value)
                    .map_err(|_| "the sink's token cannot be sent in a header".to_owned())?;
                zeroize::Zeroize::zeroize(&mut value);
                header.set_sensitive(true);
                (self.url.clone(), self.url.clone(), Some(header))
            }
        };
        Ok(Prepared {
            url,
            shown_url,
            content_type,
            authorization,
            body,
        })
    }
}

/// Every configured sink, in name order.
#[derive(Debug, Default)]
pub struct Sinks(Vec<Arc<Sink>>);

impl Sinks {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Sink>> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compiles every `[sinks.<name>]`, reporting every problem as `sinks.<name>.<field>`.
    pub fn compile(
        settings: &BTreeMap<String, SinkSettings>,
        jenkins: &BTreeSet<String>,
        file: &str,
        env: &dyn Env,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut sinks = Vec::new();
        for (name, sink) in settings {
            let mut report = Report {
                file,
                name,
                problems: &mut problems,
            };
            if let Some(sink) = compile_one(name, sink, jenkins, env, &mut report) {
                sinks.push(Arc::new(sink));
            }
        }
        if problems.is_empty() {
            Ok(Self(sinks))
        } else {
            Err(problems)
        }
    }
}

/// Checks a sink URL: http or https with a host; credentials belong in `token_*`, never in the
/// URL, where they would be logged.
fn check_url(url: &str) -> Result<String, String> {
    // The text is not quoted back: a malformed URL may hold a credential.
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must use http or https".to_owned());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials in the URL are not allowed; use token_env or token_file".to_owned(),
        );
    }
    if parsed.query_pairs().any(|(key, _)| key == "token") {
        return Err(
            "a token in the URL would be logged; use token_env or token_file with token_in = \"query\""
                .to_owned(),
        );
    }
    if parsed.fragment().is_some() {
        return Err("must not have a fragment".to_owned());
    }
    Ok(url.to_owned())
}

fn compile_one(
    name: &str,
    sink: &SinkSettings,
    jenkins: &BTreeSet<String>,
    env: &dyn Env,
    report: &mut Report<'_>,
) -> Option<Sink> {
    let kind = sink.kind;
    let before = report.count();
    let url = check_url(&sink.url)
        .map_err(|reason| report.add("url", reason))
        .ok();
    let token_field = if sink.token_file.is_some() && sink.token_env.is_none() {
        "token_file"
    } else if sink.token.is_some() && sink.token_env.is_none() {
        "token"
    } else {
        "token_env"
    };
    let token = SecretSource {
        inline: sink.token.as_ref().map(InlineSecret::expose),
        env: sink.token_env.as_deref(),
        file: sink.token_file.as_deref(),
    }
    .read(Path::new("."), env)
    .unwrap_or_else(|reason| {
        report.add(token_field, reason);
        None
    });
    let has_token_source =
        sink.token.is_some() || sink.token_env.is_some() || sink.token_file.is_some();
    if kind == SinkKind::Port && has_token_source {
        report.add(
            token_field,
            "not for kind = \"port\": Port takes client_id_env/client_id_file and client_secret_env/client_secret_file, and hookgate fetches the access token".to_owned(),
        );
    }
    if kind == SinkKind::Port && sink.token_in.is_some() {
        report.add(
            "token_in",
            "not for kind = \"port\": the access token goes as a Bearer token".to_owned(),
        );
    }
    refuse_foreign_keys(sink, report);
    if kind == SinkKind::Allstacks && !has_token_source {
        report.add(
            "token_env",
            "required: Allstacks takes the Personal Access Token as a Bearer token (or token_file)"
                .to_owned(),
        );
    }
    if kind == SinkKind::Allstacks && sink.token_in.is_some() {
        report.add(
            "token_in",
            "only for kind = \"alert\" or \"forward\": Allstacks takes the token as a Bearer token"
                .to_owned(),
        );
    }
    if sink.timeout_secs == 0 {
        report.add("timeout_secs", "must be at least 1".to_owned());
    }
    if sink.max_in_flight == 0 {
        report.add("max_in_flight", "must be at least 1".to_owned());
    }
    let matcher = compile_match(kind, &sink.matching, jenkins, report);
    if kind == SinkKind::Port {
        // A run ends with its builds' FINALIZED: a port sink that never sees one never ends it.
        if let Some(phases) = &sink.matching.phases
            && !phases
                .iter()
                .any(|name| Phase::parse(name) == Some(Phase::Finalized))
        {
            report.add(
                "match.phases",
                "a port sink must take FINALIZED: a run ends when its builds finalize".to_owned(),
            );
        }
        if sink.matching.results.is_some() {
            report.add(
                "match.results",
                "not for kind = \"port\": a run must hear every build's result, or it never ends"
                    .to_owned(),
            );
        }
    }
    let shape = match kind {
        SinkKind::Allstacks => compile_allstacks(name, sink, report),
        SinkKind::Port => compile_port(sink, env, report),
        SinkKind::Alert | SinkKind::Forward => Some(if kind == SinkKind::Alert {
            Shape::Alert
        } else {
            Shape::Forward
        }),
    };
    if report.count() != before {
        return None;
    }
    Some(Sink {
        name: name.to_owned(),
        kind,
        url: url?,
        token,
        token_in: sink.token_in.unwrap_or_default(),
        timeout: Duration::from_secs(sink.timeout_secs),
        max_in_flight: sink.max_in_flight,
        matcher: matcher?,
        shape: shape?,
    })
}

/// Collects one sink's problems as `sinks.<name>.<field>: reason`.
struct Report<'a> {
    file: &'a str,
    name: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.problems.push(Problem::new(
            self.file,
            format!("sinks.{}.{field}", self.name),
            reason,
        ));
    }

    fn count(&self) -> usize {
        self.problems.len()
    }
}

/// Keys only one kind takes, refused on every other kind, naming the kind they belong to.
fn refuse_foreign_keys(sink: &SinkSettings, report: &mut Report<'_>) {
    let owned: [(SinkKind, &[(&str, bool)]); 2] = [
        (SinkKind::Allstacks, &allstacks_keys(sink)),
        (SinkKind::Port, &port_keys(sink)),
    ];
    for (owner, keys) in owned.into_iter().filter(|(owner, _)| *owner != sink.kind) {
        for (field, _) in keys.iter().filter(|(_, set)| *set) {
            report.add(
                field,
                format!(
                    "only for kind = \"{}\", not \"{}\"",
                    owner.as_str(),
                    sink.kind.as_str()
                ),
            );
        }
    }
}

fn allstacks_keys(sink: &SinkSettings) -> [(&'static str, bool); 8] {
    [
        ("service_id", sink.service_id.is_some()),
        ("job_type", sink.job_type.is_some()),
        ("repo_name", sink.repo_name.is_some()),
        ("repo_id", sink.repo_id.is_some()),
        ("commit_parameters", sink.commit_parameters.is_some()),
        (
            "triggered_by_parameter",
            sink.triggered_by_parameter.is_some(),
        ),
        ("optional_parameters", sink.optional_parameters.is_some()),
        ("statuses", sink.statuses.is_some()),
    ]
}

fn port_keys(sink: &SinkSettings) -> [(&'static str, bool); 6] {
    [
        ("client_id_env", sink.client_id_env.is_some()),
        ("client_id_file", sink.client_id_file.is_some()),
        ("client_secret_env", sink.client_secret_env.is_some()),
        ("client_secret_file", sink.client_secret_file.is_some()),
        ("run_id_parameters", sink.run_id_parameters.is_some()),
        ("logs", sink.logs.is_some()),
    ]
}

/// Port's client id and secret, both required, each from one source.
fn compile_port(sink: &SinkSettings, env: &dyn Env, report: &mut Report<'_>) -> Option<Shape> {
    let mut credential = |field: &str, env_name: Option<&str>, file: Option<&Path>| {
        let shown = if file.is_some() && env_name.is_none() {
            format!("{field}_file")
        } else {
            format!("{field}_env")
        };
        match (SecretSource {
            inline: None,
            env: env_name,
            file,
        })
        .read(Path::new("."), env)
        {
            Ok(Some(secret)) => Some(secret),
            Ok(None) => {
                report.add(
                    &shown,
                    format!("required: Port's {field} for POST /v1/auth/access_token ({field}_env or {field}_file)"),
                );
                None
            }
            Err(reason) => {
                report.add(&shown, reason);
                None
            }
        }
    };
    let client_id = credential(
        "client_id",
        sink.client_id_env.as_deref(),
        sink.client_id_file.as_deref(),
    );
    let client_secret = credential(
        "client_secret",
        sink.client_secret_env.as_deref(),
        sink.client_secret_file.as_deref(),
    );
    let run_id_parameters = sink
        .run_id_parameters
        .clone()
        .unwrap_or_else(|| DEFAULT_RUN_ID_PARAMETERS.map(str::to_owned).to_vec());
    if let Some(i) = run_id_parameters.iter().position(|p| p.trim().is_empty()) {
        report.add(
            &format!("run_id_parameters[{i}]"),
            "must name a build parameter".to_owned(),
        );
        return None;
    }
    Some(Shape::Port(Arc::new(PortSettings {
        client_id: client_id?,
        client_secret: client_secret?,
        run_id_parameters,
        logs: sink.logs.unwrap_or(true),
    })))
}

fn compile_match(
    kind: SinkKind,
    matching: &MatchSettings,
    jenkins: &BTreeSet<String>,
    report: &mut Report<'_>,
) -> Option<Matcher> {
    let mut ok = true;
    if let Some(targets) = &matching.jenkins {
        for (i, target) in targets.iter().enumerate() {
            if !jenkins.contains(target) {
                ok = false;
                report.add(
                    &format!("match.jenkins[{i}]"),
                    format!(
                        "no Jenkins target `{target}`; configured: {}",
                        jenkins.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    let jobs = match &matching.jobs {
        None => None,
        Some(pattern) => match compile_regex(pattern, RegexUse::Find) {
            Ok(regex) => Some((pattern.clone(), regex)),
            Err(reason) => {
                ok = false;
                report.add("match.jobs", reason);
                None
            }
        },
    };
    let phases = match &matching.phases {
        None => default_phases(kind),
        Some(names) => {
            let mut phases = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match Phase::parse(name) {
                    Some(phase) => phases.push(phase),
                    None => {
                        ok = false;
                        report.add(
                            &format!("match.phases[{i}]"),
                            format!(
                                "`{name}` is not a phase: QUEUED, STARTED, COMPLETED, FINALIZED, NONE"
                            ),
                        );
                    }
                }
            }
            phases
        }
    };
    let results = match &matching.results {
        None => default_results(kind),
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                if !RESULTS.contains(&name.as_str()) {
                    ok = false;
                    report.add(
                        &format!("match.results[{i}]"),
                        format!("`{name}` is not a Jenkins result: {}", RESULTS.join(", ")),
                    );
                }
            }
            Some(names.clone())
        }
    };
    let mut parameters = Vec::new();
    for (name, pattern) in &matching.parameters {
        match compile_regex(pattern, RegexUse::Find) {
            Ok(regex) => parameters.push((name.clone(), pattern.clone(), regex)),
            Err(reason) => {
                ok = false;
                report.add(&format!("match.parameters.{name}"), reason);
            }
        }
    }
    ok.then_some(Matcher {
        jenkins: matching.jenkins.clone(),
        jobs,
        phases,
        results,
        parameters,
    })
}

fn compile_allstacks(name: &str, sink: &SinkSettings, report: &mut Report<'_>) -> Option<Shape> {
    let mut ok = true;
    let service_id = match sink.service_id {
        Some(id) if id > 0 => id,
        Some(_) => {
            ok = false;
            report.add(
                "service_id",
                "must be a positive integer: the Custom CI/CD service id in Allstacks".to_owned(),
            );
            0
        }
        None => {
            ok = false;
            report.add(
                "service_id",
                "required: the id of the Custom CI/CD service on Allstacks' Tools page".to_owned(),
            );
            0
        }
    };
    if sink.repo_name.is_some() && sink.repo_id.is_some() {
        ok = false;
        report.add("repo_id", "set repo_name or repo_id, not both".to_owned());
    }
    let commit_parameters = sink.commit_parameters.clone().unwrap_or_else(|| {
        allstacks::DEFAULT_COMMIT_PARAMETERS
            .map(str::to_owned)
            .to_vec()
    });
    let optional_parameters = sink.optional_parameters.clone().unwrap_or_default();
    let room = allstacks::MAX_OPTIONAL - allstacks::BUILT_IN_OPTIONAL;
    if optional_parameters.len() > room {
        ok = false;
        report.add(
            "optional_parameters",
            format!(
                "at most {room}: Allstacks takes {} optional properties and hookgate sends up to {} of its own",
                allstacks::MAX_OPTIONAL,
                allstacks::BUILT_IN_OPTIONAL
            ),
        );
    }
    let statuses: Vec<(String, String)> = match &sink.statuses {
        None => allstacks::default_statuses(),
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    for (result, status) in &statuses {
        if !RESULTS.contains(&result.as_str()) {
            ok = false;
            report.add(
                &format!("statuses.{result}"),
                format!("`{result}` is not a Jenkins result: {}", RESULTS.join(", ")),
            );
        }
        if !allstacks::STATUSES.contains(&status.as_str()) {
            ok = false;
            report.add(
                &format!("statuses.{result}"),
                format!(
                    "`{status}` is not an Allstacks status: {}",
                    allstacks::STATUSES.join(", ")
                ),
            );
        }
    }
    // A result the sink takes but cannot map would dead-letter every such build.
    let results = sink
        .matching
        .results
        .clone()
        .or_else(|| default_results(SinkKind::Allstacks))
        .unwrap_or_default();
    for result in results.iter().filter(|r| RESULTS.contains(&r.as_str())) {
        {
            if !statuses.iter().any(|(r, _)| r == result) {
                ok = false;
                report.add(
                    "statuses",
                    format!(
                        "match.results takes {result} but statuses has no entry for it: add one or leave {result} out of match.results"
                    ),
                );
            }
        }
    }
    ok.then(|| Shape::Allstacks {
        rules: Box::new(RecordRules {
            sink: name.to_owned(),
            jenkins: String::new(),
            service_id,
            job_type: sink.job_type.clone(),
            repo_name: sink.repo_name.clone(),
            repo_id: sink.repo_id.clone(),
            commit_parameters,
            triggered_by_parameter: sink.triggered_by_parameter.clone(),
            optional_parameters,
            statuses,
        }),
    })
}

/// Longest part of a sink's refusal kept as the delivery's reason.
const MAX_REASON_BYTES: usize = 512;

/// A sink as the outbox worker sees it.
pub struct SinkTarget {
    sink: Arc<Sink>,
    http: Http,
    metrics: Arc<Metrics>,
    policy: RetryPolicy,
}

impl SinkTarget {
    pub fn new(
        sink: Arc<Sink>,
        metrics: Arc<Metrics>,
        policy: RetryPolicy,
    ) -> Result<Self, rustls::Error> {
        metrics.sink_auth_exported(&sink.name);
        Ok(Self {
            sink,
            http: http::client()?,
            metrics,
            policy,
        })
    }

    async fn send(&self, job: &Job) -> Attempted {
        let Payload::Event(stored) = &job.payload else {
            return Attempted::permanent("a sink delivery without its event");
        };
        let event = match Event::parse(&stored.body) {
            Ok(event) => event,
            Err(reason) => return Attempted::permanent(format!("the stored event: {reason}")),
        };
        let facts: BuildFacts = serde_json::from_str(&stored.facts).unwrap_or_default();
        let prepared = match self
            .sink
            .prepare(&stored.jenkins, &stored.body, &event, &facts)
        {
            Ok(prepared) => prepared,
            Err(reason) => return Attempted::permanent(reason),
        };
        let started = Instant::now();
        let result = self.post(&prepared, &job.id).await;
        self.metrics.sink_call(&self.sink.name, started.elapsed());
        match result {
            Ok((code, answer)) => {
                let verdict = Verdict::for_status(code.0, code.1);
                if matches!(code.0, 401 | 403) {
                    // The gauge itself is the state, one per sink name, whichever set's
                    // target (before or after a reload) saw the answer last.
                    self.metrics.sink_auth_failed(&self.sink.name, true);
                    tracing::error!(sink = %self.sink.name, status = code.0, "The sink refused hookgate's credentials; check its token.");
                } else if verdict == Verdict::Delivered {
                    self.metrics.sink_auth_failed(&self.sink.name, false);
                }
                let error = (verdict != Verdict::Delivered).then(|| {
                    let text = self.redacted(&String::from_utf8_lossy(&answer));
                    let text = text.trim();
                    if text.is_empty() {
                        format!("the sink answered {}", code.0)
                    } else {
                        format!("the sink answered {}: {text}", code.0)
                    }
                });
                Attempted {
                    verdict,
                    status: Some(code.0),
                    error,
                    receipt: None,
                }
            }
            Err(reason) => Attempted {
                verdict: Verdict::Retry { retry_after: None },
                status: None,
                error: Some(reason),
                receipt: None,
            },
        }
    }

    /// `text` (a sink's answer, kept as a delivery's reason and logged) with every spelling of
    /// the sink's own token replaced: an error page may quote the request it refuses.
    fn redacted(&self, text: &str) -> String {
        let Some(token) = &self.sink.token else {
            return text.to_owned();
        };
        let raw = String::from_utf8_lossy(token.expose()).into_owned();
        let encoded: String = form_urlencoded::byte_serialize(token.expose()).collect();
        let percent = encoded.replace('+', "%20");
        let mut text = text.to_owned();
        for spelling in [raw, encoded, percent] {
            if !spelling.is_empty() {
                text = text.replace(&spelling, "[redacted]");
            }
        }
        text
    }

    /// One POST within the sink's deadline: the status (with `Retry-After`) and the first
    /// bytes of the answer, or why there was none (never with the URL, which may hold a token).
    async fn post(
        &self,
        prepared: &Prepared,
        delivery: &str,
    ) -> Result<((u16, Option<Duration>), Bytes), String> {
        let uri = Uri::try_from(prepared.url.as_str())
            .map_err(|_| "the sink's URL cannot be sent".to_owned())?;
        let mut request = hyper::Request::post(uri)
            .header(CONTENT_TYPE, prepared.content_type)
            .header(USER_AGENT, AGENT)
            .header(crate::sinks::jenkins::DELIVERY_HEADER, delivery);
        if let Some(authorization) = &prepared.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(prepared.body.clone())))
            .map_err(|_| "the sink's request cannot be built".to_owned())?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                // hyper's client errors name their kind, and their causes (the connector's)
                // do not quote the URL, so a token in its query stays out of the text.
                .map_err(|e| format!("the sink is unreachable: {e}: {}", cause_chain(&e)))?;
            let status = response.status().as_u16();
            let retry_after = http::retry_after(response.headers());
            let answer = http::read_capped(response.into_body(), MAX_REASON_BYTES)
                .await
                .unwrap_or_default();
            Ok(((status, retry_after), answer))
        };
        tokio::time::timeout(self.sink.timeout, exchange)
            .await
            .map_err(|_| format!("the sink did not answer within {:?}", self.sink.timeout))?
    }
}

impl outbox::Target for SinkTarget {
    fn max_in_flight(&self) -> usize {
        self.sink.max_in_flight
    }

    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn attempt<'a>(&'a self, job: &'a Job) -> AttemptFuture<'a> {
        Box::pin(self.send(job))
    }

    fn settled(&self, outcome: &'static str) {
        self.metrics.sink_delivery(&self.sink.name, outcome);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A port sink's settings as TOML.
    fn port_sink(extra: &str) -> SinkSettings {
        toml::from_str(&format!(
            "kind = \"port\"\nurl = \"https://api.getport.io\"\n{extra}"
        ))
        .expect("settings")
    }

    fn compile(settings: SinkSettings) -> Result<Sinks, Vec<String>> {
        let env: HashMap<String, String> = [
            ("PORT_CLIENT_ID", "client-id"),
            ("PORT_CLIENT_SECRET", "client-secret"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into_iter()
        .collect();
        let jenkins: BTreeSet<String> = ["main".to_owned()].into();
        let settings: BTreeMap<String, SinkSettings> = [("port".to_owned(), settings)].into();
        Sinks::compile(&settings, &jenkins, "hookgate.toml", &env)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    const CREDENTIALS: &str =
        "client_id_env = \"PORT_CLIENT_ID\"\nclient_secret_env = \"PORT_CLIENT_SECRET\"";

    #[test]
    fn a_port_sink_takes_its_client_credentials_and_defaults() {
        let sinks = compile(port_sink(CREDENTIALS)).expect("compiles");
        let sink = sinks.iter().next().expect("one sink");
        let port = sink.port().expect("a port sink");
        assert_eq!(port.client_id.expose(), b"client-id");
        assert_eq!(port.client_secret.expose(), b"client-secret");
        assert_eq!(port.run_id_parameters, ["PORT_RUN_ID", "RUN_ID"]);
        assert!(port.logs);
        assert!(
            sink.matcher
                .describe()
                .contains("phases=STARTED,FINALIZED results=all"),
            "{}",
            sink.matcher.describe()
        );
        assert!(!sink.summary().contains("client-secret"));
    }

    #[test]
    fn a_port_sink_without_credentials_or_with_others_keys_is_refused() {
        // check(extra keys, a problem expected among those reported)
        let check = |extra: &str, expected: &str| {
            let problems = compile(port_sink(extra)).expect_err(extra);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{extra}: {problems:?}"
            );
        };
        check("", "sinks.port.client_id_env: required");
        check("", "sinks.port.client_secret_env: required");
        check(
            "client_id_env = \"PORT_CLIENT_ID\"",
            "sinks.port.client_secret_env: required",
        );
        check(
            "client_id_env = \"UNSET\"\nclient_secret_env = \"PORT_CLIENT_SECRET\"",
            "sinks.port.client_id_env: environment variable UNSET is not set",
        );
        check(
            &format!("{CREDENTIALS}\ntoken_env = \"PORT_CLIENT_ID\""),
            "sinks.port.token_env: not for kind = \"port\"",
        );
        check(
            &format!("{CREDENTIALS}\nservice_id = 4"),
            "sinks.port.service_id: only for kind = \"allstacks\", not \"port\"",
        );
        check(
            &format!("{CREDENTIALS}\nrun_id_parameters = [\"\"]"),
            "sinks.port.run_id_parameters[0]: must name a build parameter",
        );
        check(
            &format!("{CREDENTIALS}\n[match]\nphases = [\"STARTED\"]"),
            "sinks.port.match.phases: a port sink must take FINALIZED",
        );
        check(
            &format!("{CREDENTIALS}\n[match]\nresults = [\"SUCCESS\"]"),
            "sinks.port.match.results: not for kind = \"port\"",
        );
    }

    #[test]
    fn port_keys_on_another_kind_are_refused() {
        let mut settings = port_sink(CREDENTIALS);
        settings.kind = SinkKind::Forward;
        let problems = compile(settings).expect_err("refused");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("sinks.port.client_id_env: only for kind = \"port\"")),
            "{problems:?}"
        );
    }
}
