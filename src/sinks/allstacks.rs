//! One Allstacks `cicd_job` record per build (PRODUCT.md "`kind = "allstacks"`"), and
//! Allstacks' own validation of such a record (vendor/allstacks-cicd-job-endpoint.txt), so that
//! hookgate never sends a record Allstacks would refuse and the fake Allstacks refuses what the
//! real one documents refusing.
//!
//! A build whose record cannot be made (no full commit SHA, no repository, no final result) is
//! `Unbuildable`, with a reason that says what to configure: the worker dead-letters it with
//! that reason.

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

use crate::events::facts::BuildFacts;
use crate::events::model::Event;
use crate::sinks::repo;

/// How one `[sinks.<name>]` of kind `allstacks` turns events into records; built from the
/// config with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRules {
    /// The sink's name, to name its settings in reasons (`sinks.dora.commit_parameters`).
    pub sink: String,
    /// The Jenkins target the event came from, for `job_id` when `build.full_url` is absent.
    pub jenkins: String,
    pub service_id: i64,
    pub job_type: Option<String>,
    pub repo_name: Option<String>,
    pub repo_id: Option<String>,
    /// Build parameters read, in order, when `build.scm.commit` is absent.
    pub commit_parameters: Vec<String>,
    pub triggered_by_parameter: Option<String>,
    /// Build parameters sent as string properties after the built-in ones.
    pub optional_parameters: Vec<String>,
    /// Jenkins result → Allstacks status; a result without an entry is not sent.
    pub statuses: Vec<(String, String)>,
}

pub const DEFAULT_COMMIT_PARAMETERS: [&str; 2] = ["GIT_COMMIT", "COMMIT_SHA"];

/// `SUCCESS = "Succeeded"`, `FAILURE = "Failed"`, `UNSTABLE = "Failed"`: an unstable deploy is
/// one whose post-deploy checks failed; ABORTED and NOT_BUILT put nothing in production
/// (`jenkins-events.md` §5.3).
pub fn default_statuses() -> Vec<(String, String)> {
    [
        ("SUCCESS", "Succeeded"),
        ("FAILURE", "Failed"),
        ("UNSTABLE", "Failed"),
    ]
    .into_iter()
    .map(|(result, status)| (result.to_owned(), status.to_owned()))
    .collect()
}

/// Allstacks takes at most 20 `optional` entries, and at most 20 values in one entry's list.
pub const MAX_OPTIONAL: usize = 20;
pub const MAX_VALUES: usize = 20;
/// `build_number`, `job_path`, `jenkins_url`, `branch`, `tests_total`, `tests_failed`,
/// `queue_seconds`: what is left of the 20 is for `optional_parameters`.
pub const BUILT_IN_OPTIONAL: usize = 7;
/// Allstacks' `status` values, exact spelling and case.
pub const STATUSES: [&str; 3] = ["Succeeded", "Failed", "On Hold"];
/// Allstacks' `optional` entry types.
pub const OPTIONAL_TYPES: [&str; 5] = ["string", "integer", "float", "duration", "timestamp"];

/// Where a commit SHA was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitFrom {
    Scm,
    EarlierPhase,
    Parameter(String),
}

impl std::fmt::Display for CommitFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitFrom::Scm => f.write_str("build.scm.commit"),
            CommitFrom::EarlierPhase => f.write_str("build.scm.commit of an earlier phase"),
            CommitFrom::Parameter(name) => write!(f, "build parameter {name}"),
        }
    }
}

/// Why no record is sent for a build. Values from the event are quoted shortened and escaped;
/// the SCM URL, which may hold credentials, is never quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbuildable {
    #[error("build.status is absent (the build has not finished)")]
    NoStatus,
    #[error("build.status {} has no entry in sinks.{sink}.statuses", quote(status))]
    UnmappedStatus { sink: String, status: String },
    #[error(
        "sinks.{sink}.statuses maps {result} to `{}`, which is not one of Succeeded, Failed, On Hold",
        quote(status)
    )]
    NotAnAllstacksStatus {
        sink: String,
        result: String,
        status: String,
    },
    #[error("build.duration is absent")]
    NoDuration,
    #[error(
        "no start time: build.timestamp is absent and hookgate did not see the build's STARTED event"
    )]
    NoStartTime,
    #[error("{}", no_commit(sink, parameters))]
    NoCommit {
        sink: String,
        parameters: Vec<String>,
    },
    #[error(
        "commit `{}` (from {from}) is not a full 40- or 64-hex SHA",
        quote(value)
    )]
    NotAFullSha { value: String, from: CommitFrom },
    #[error(
        "no repository: build.scm.url is absent and sinks.{sink} sets neither repo_name nor repo_id; set sinks.{sink}.repo_name or repo_id"
    )]
    NoRepository { sink: String },
    #[error(
        "no repository: build.scm.url names no repository path hookgate can read; set sinks.{sink}.repo_name or repo_id"
    )]
    UnreadableRepository { sink: String },
}

fn no_commit(sink: &str, parameters: &[String]) -> String {
    if parameters.is_empty() {
        format!(
            "no commit SHA: build.scm.commit is absent and sinks.{sink}.commit_parameters is empty; export GIT_COMMIT to the run's environment or name the build parameter that holds the commit in sinks.{sink}.commit_parameters"
        )
    } else {
        format!(
            "no commit SHA: build.scm.commit is absent and none of the build parameters {} is set; export GIT_COMMIT to the run's environment or pass the commit as a build parameter named in sinks.{sink}.commit_parameters",
            parameters.join(", ")
        )
    }
}

/// At most 64 characters of `text`, escaped, so a hostile value cannot fill or forge a reason.
fn quote(text: &str) -> String {
    const LIMIT: usize = 64;
    let mut quoted: String = text
        .chars()
        .take(LIMIT)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(LIMIT).is_some() {
        quoted.push('…');
    }
    quoted
}

/// The `cicd_job` record of this build, keys in the order Allstacks documents them.
pub fn build_record(
    event: &Event,
    facts: &BuildFacts,
    rules: &RecordRules,
) -> Result<Value, Unbuildable> {
    let build = &event.build;
    let result = build.status.as_deref().ok_or(Unbuildable::NoStatus)?;
    let status = rules
        .statuses
        .iter()
        .find(|(jenkins, _)| jenkins == result)
        .map(|(_, allstacks)| allstacks)
        .ok_or_else(|| Unbuildable::UnmappedStatus {
            sink: rules.sink.clone(),
            status: result.to_owned(),
        })?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(Unbuildable::NotAnAllstacksStatus {
            sink: rules.sink.clone(),
            result: result.to_owned(),
            status: status.clone(),
        });
    }
    let duration_ms = build.duration.ok_or(Unbuildable::NoDuration)?;
    let start_seconds = match (facts.started_at_ms, build.timestamp) {
        (Some(started), _) => started.div_euclid(1000),
        // The end minus the duration; at FINALIZED this overstates by the finalize lag.
        (None, Some(timestamp)) => timestamp.saturating_sub(duration_ms).div_euclid(1000),
        (None, None) => return Err(Unbuildable::NoStartTime),
    };
    let commit = commit_sha(event, facts, rules)?;
    let (repo_key, repo_value) = repository(event, facts, rules)?;

    let mut record = Map::new();
    let job_id = match &build.full_url {
        Some(full_url) => full_url.clone(),
        None => format!("{}/{}", rules.jenkins, event.build_key()),
    };
    record.insert("job_id".into(), json!(job_id));
    record.insert("commit_sha".into(), json!(commit));
    record.insert("service_id".into(), json!(rules.service_id));
    record.insert("job_start_time".into(), json!(start_seconds));
    record.insert("job_duration".into(), json!(whole_seconds(duration_ms)));
    record.insert("status".into(), json!(status));
    record.insert(repo_key.into(), json!(repo_value));
    if let Some(triggered_by) = rules
        .triggered_by_parameter
        .as_deref()
        .and_then(|name| parameter(event, facts, name))
    {
        record.insert("triggered_by".into(), json!(triggered_by.trim()));
    }
    if let Some(job_type) = rules.job_type.as_deref().filter(|t| !t.is_empty()) {
        record.insert("job_type".into(), json!(job_type));
    }
    let optional = optional_entries(event, facts, rules);
    if !optional.is_empty() {
        record.insert("optional".into(), Value::Array(optional));
    }
    Ok(Value::Object(record))
}

/// Milliseconds to whole seconds, rounded half up, never negative.
fn whole_seconds(ms: i64) -> i64 {
    if ms <= 0 {
        0
    } else {
        ms / 1000 + i64::from(ms % 1000 >= 500)
    }
}

/// A build parameter that is set to something other than blanks: from the event at hand, else
/// from an earlier phase.
fn parameter<'a>(event: &'a Event, facts: &'a BuildFacts, name: &str) -> Option<&'a str> {
    let set = |value: &&str| !value.trim().is_empty();
    event
        .parameter(name)
        .filter(set)
        .or_else(|| facts.parameter(name).filter(set))
}

fn commit_sha(
    event: &Event,
    facts: &BuildFacts,
    rules: &RecordRules,
) -> Result<String, Unbuildable> {
    let set = |value: &&str| !value.trim().is_empty();
    let found = event
        .build
        .scm
        .commit
        .as_deref()
        .filter(set)
        .map(|commit| (commit, CommitFrom::Scm))
        .or_else(|| {
            facts
                .scm_commit
                .as_deref()
                .filter(set)
                .map(|commit| (commit, CommitFrom::EarlierPhase))
        })
        .or_else(|| {
            rules.commit_parameters.iter().find_map(|name| {
                parameter(event, facts, name)
                    .map(|value| (value, CommitFrom::Parameter(name.clone())))
            })
        });
    let Some((value, from)) = found else {
        return Err(Unbuildable::NoCommit {
            sink: rules.sink.clone(),
            parameters: rules.commit_parameters.clone(),
        });
    };
    let commit = value.trim().to_ascii_lowercase();
    if is_full_sha(&commit) {
        Ok(commit)
    } else {
        Err(Unbuildable::NotAFullSha {
            value: value.trim().to_owned(),
            from,
        })
    }
}

/// 40 (SHA-1) or 64 (SHA-256) hex digits.
fn is_full_sha(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn repository(
    event: &Event,
    facts: &BuildFacts,
    rules: &RecordRules,
) -> Result<(&'static str, String), Unbuildable> {
    let configured = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    if let Some(repo_id) = configured(&rules.repo_id) {
        return Ok(("repo_id", repo_id));
    }
    if let Some(repo_name) = configured(&rules.repo_name) {
        return Ok(("repo_name", repo_name));
    }
    let Some(url) = event.build.scm.url.as_deref().or(facts.scm_url.as_deref()) else {
        return Err(Unbuildable::NoRepository {
            sink: rules.sink.clone(),
        });
    };
    match repo::repo_name(url) {
        Some(name) => Ok(("repo_name", name)),
        None => Err(Unbuildable::UnreadableRepository {
            sink: rules.sink.clone(),
        }),
    }
}

fn entry(key: &str, value: Value, kind: &str) -> Value {
    json!({"key": key, "value": value, "type": kind})
}

fn optional_entries(event: &Event, facts: &BuildFacts, rules: &RecordRules) -> Vec<Value> {
    let build = &event.build;
    let mut entries: Vec<(String, Value)> = Vec::new();
    let mut push = |key: &str, value: Value, kind: &str| {
        if !entries.iter().any(|(known, _)| known == key) {
            entries.push((key.to_owned(), entry(key, value, kind)));
        }
    };
    push("build_number", json!(build.number), "integer");
    push("job_path", json!(event.url), "string");
    if let Some(full_url) = &build.full_url {
        push("jenkins_url", json!(full_url), "string");
    }
    let branch = build
        .scm
        .branch
        .as_deref()
        .or(facts.scm_branch.as_deref())
        .map(|branch| branch.strip_prefix("origin/").unwrap_or(branch))
        .filter(|branch| !branch.is_empty());
    if let Some(branch) = branch {
        push("branch", json!(branch), "string");
    }
    if let Some(summary) = &build.test_summary {
        if let Some(total) = summary.total {
            push("tests_total", json!(total), "integer");
        }
        if let Some(failed) = summary.failed {
            push("tests_failed", json!(failed), "integer");
        }
    }
    if let (Some(queued), Some(started)) = (facts.queued_at_ms, facts.started_at_ms) {
        push(
            "queue_seconds",
            json!(whole_seconds(started.saturating_sub(queued))),
            "duration",
        );
    }
    for name in &rules.optional_parameters {
        if let Some(value) = parameter(event, facts, name) {
            push(name, json!(value), "string");
        }
    }
    entries
        .into_iter()
        .take(MAX_OPTIONAL)
        .map(|(_, entry)| entry)
        .collect()
}

/// The keys a `cicd_job` record may have (vendor/allstacks-cicd-job-endpoint.txt).
const FIELDS: [&str; 11] = [
    "job_id",
    "commit_sha",
    "service_id",
    "job_start_time",
    "job_duration",
    "status",
    "repo_id",
    "repo_name",
    "triggered_by",
    "job_type",
    "optional",
];

/// Allstacks' documented rules for a `cicd_job` body (vendor/allstacks-cicd-job-endpoint.txt,
/// vendor/allstacks-dora-metrics-webhooks.txt, vendor/allstacks-tools-connect-jenkins.txt):
/// the reason for the first rule broken, as the fake Allstacks answers it with a 400.
///
/// Stricter than the pages in two places, both so that a mistake of ours shows instead of being
/// ignored: a key the pages do not name is refused, and an optional field given as `null` is
/// refused rather than read as absent.
pub fn validate_cicd_job(body: &Value) -> Result<(), String> {
    let Value::Object(record) = body else {
        return Err("the body must be a JSON object".into());
    };
    if let Some(unknown) = record.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(format!("unknown field `{}`", quote(unknown)));
    }
    let job_id = required_string(record, "job_id")?;
    if job_id.is_empty() {
        return Err("`job_id` must not be empty".into());
    }
    let commit = required_string(record, "commit_sha")?;
    if !is_full_sha(&commit.to_ascii_lowercase()) {
        return Err("`commit_sha` must be the full SHA: 40 or 64 hex characters".into());
    }
    for key in ["service_id", "job_start_time", "job_duration"] {
        match record.get(key) {
            None => return Err(format!("missing field `{key}`")),
            Some(value) if is_integer(value) => {}
            Some(_) => return Err(format!("`{key}` must be an integer")),
        }
    }
    let status = required_string(record, "status")?;
    if !STATUSES.contains(&status) {
        return Err("`status` must be one of Succeeded, Failed, On Hold".into());
    }
    let mut has_repo = false;
    for key in ["repo_id", "repo_name", "triggered_by", "job_type"] {
        match record.get(key) {
            None => {}
            Some(Value::String(text)) => {
                has_repo |= key.starts_with("repo_") && !text.is_empty();
            }
            Some(_) => return Err(format!("`{key}` must be a string")),
        }
    }
    if !has_repo {
        return Err("one of `repo_id` and `repo_name` is required".into());
    }
    match record.get("optional") {
        None => Ok(()),
        Some(Value::Array(entries)) => validate_optional(entries),
        Some(_) => Err("`optional` must be a list".into()),
    }
}

fn required_string<'a>(record: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match record.get(key) {
        None => Err(format!("missing field `{key}`")),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn validate_optional(entries: &[Value]) -> Result<(), String> {
    if entries.len() > MAX_OPTIONAL {
        return Err(format!(
            "`optional` has {} entries; at most {MAX_OPTIONAL} are allowed",
            entries.len()
        ));
    }
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!(
                "`optional[{index}]` must be an object with key, value and type"
            ));
        };
        if let Some(unknown) = entry
            .keys()
            .find(|key| !["key", "value", "type"].contains(&key.as_str()))
        {
            return Err(format!(
                "`optional[{index}]` has an unknown field `{}`",
                quote(unknown)
            ));
        }
        match entry.get("key") {
            Some(Value::String(key)) if !key.is_empty() => {}
            Some(Value::String(_)) => {
                return Err(format!("`optional[{index}].key` must not be empty"));
            }
            Some(_) => return Err(format!("`optional[{index}].key` must be a string")),
            None => return Err(format!("`optional[{index}]` has no `key`")),
        }
        let kind = match entry.get("type") {
            Some(Value::String(kind)) if OPTIONAL_TYPES.contains(&kind.as_str()) => kind.as_str(),
            Some(_) => {
                return Err(format!(
                    "`optional[{index}].type` must be one of string, integer, float, duration, timestamp"
                ));
            }
            None => return Err(format!("`optional[{index}]` has no `type`")),
        };
        let fits = |value: &Value| match kind {
            "string" => value.is_string(),
            "float" => value.is_number(),
            // The pages: "duration type must be supplied as an integer", "timestamp type must be
            // supplied as an integer i.e seconds since epoch".
            _ => is_integer(value),
        };
        let what = match kind {
            "string" => "a string",
            "float" => "a number",
            _ => "an integer",
        };
        match entry.get("value") {
            None => return Err(format!("`optional[{index}]` has no `value`")),
            Some(Value::Array(values)) => {
                if values.len() > MAX_VALUES {
                    return Err(format!(
                        "`optional[{index}].value` has {} values; at most {MAX_VALUES} are allowed",
                        values.len()
                    ));
                }
                if !values.iter().all(fits) {
                    return Err(format!(
                        "every value of `optional[{index}].value` must be {what} (type {kind})"
                    ));
                }
            }
            Some(value) if fits(value) => {}
            Some(_) => {
                return Err(format!(
                    "`optional[{index}].value` must be {what} (type {kind})"
                ));
            }
        }
    }
    Ok(())
}
