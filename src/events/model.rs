//! The Notification plugin's JSON event (reference `jenkins-events.md` §1.5), read tolerantly:
//! only `url`, `build.number` and `build.phase` are required, and any other field of an
//! unexpected type counts as absent, since older and forked plugin versions differ.
//!
//! Gson leaves null fields out, so "absent" is the normal case; a JSON `null` is read as absent
//! too. An empty string is read as absent as well: the plugin copies run variables such as
//! `GIT_COMMIT` verbatim, and an empty one tells us nothing.

#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A build's lifecycle phase, in the order the plugin sends them (`Phase.java`). `None` is only
/// sent by the `notifyEndpoints` pipeline step and sorts last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Phase {
    Queued,
    Started,
    Completed,
    Finalized,
    None,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Queued,
        Phase::Started,
        Phase::Completed,
        Phase::Finalized,
        Phase::None,
    ];

    /// The name as the plugin sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "QUEUED",
            Phase::Started => "STARTED",
            Phase::Completed => "COMPLETED",
            Phase::Finalized => "FINALIZED",
            Phase::None => "NONE",
        }
    }

    /// Exactly the plugin's spelling: it sends the Java enum's name, which is upper case.
    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.as_str() == text)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Notification event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The job's leaf name; in a multibranch job this is the branch.
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// The job's URL relative to the Jenkins root, e.g. `job/team/job/payments/`: the only full
    /// folder path in the payload, so the job's identity.
    pub url: String,
    pub build: Build,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// Absent when Jenkins' root URL is not configured.
    pub full_url: Option<String>,
    pub number: u64,
    pub queue_id: Option<u64>,
    /// Epoch milliseconds; what it means depends on the phase (`jenkins-events.md` §1.3).
    pub timestamp: Option<i64>,
    /// Milliseconds; 0 at QUEUED and STARTED.
    pub duration: Option<i64>,
    pub phase: Phase,
    /// Jenkins' `Result` name as sent (`SUCCESS`, `UNSTABLE`, `FAILURE`, `NOT_BUILT`, `ABORTED`);
    /// absent until the result is known.
    pub status: Option<String>,
    /// The build's URL relative to the Jenkins root, e.g. `job/payments-deploy/128/`.
    pub url: Option<String>,
    pub scm: Scm,
    /// In payload order; numbers and booleans as their JSON text.
    pub parameters: Vec<(String, String)>,
    pub test_summary: Option<TestSummary>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scm {
    pub url: Option<String>,
    /// As Git reports it; freestyle jobs send `origin/main`.
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub changes: Vec<String>,
    pub culprits: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSummary {
    pub total: Option<i64>,
    pub failed: Option<i64>,
    pub passed: Option<i64>,
    pub skipped: Option<i64>,
}

/// Why a body is not a Notification event. The Display is the 400 reason the endpoint sends:
/// it names the field and never quotes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("Body is not JSON: error at line {line}, column {column}.")]
    NotJson { line: usize, column: usize },
    #[error("The body must be a JSON object.")]
    NotObject,
    #[error("Missing `url`.")]
    MissingUrl,
    #[error("`url` must be a string.")]
    UrlNotString,
    #[error("`url` must not be empty.")]
    EmptyUrl,
    #[error("Missing `build`.")]
    MissingBuild,
    #[error("`build` must be an object.")]
    BuildNotObject,
    #[error("Missing `build.number`.")]
    MissingNumber,
    #[error("`build.number` must be a non-negative integer.")]
    BadNumber,
    #[error("Missing `build.phase`.")]
    MissingPhase,
    #[error("`build.phase` must be one of QUEUED, STARTED, COMPLETED, FINALIZED, NONE.")]
    BadPhase,
}

impl Event {
    /// Reads a Notification plugin body. The body must be strict JSON (the plugin writes it with
    /// Gson), an object whose `build` is an object.
    pub fn parse(body: &[u8]) -> Result<Event, EventError> {
        let document: Value =
            serde_json::from_slice(body).map_err(|error| EventError::NotJson {
                line: error.line(),
                column: error.column(),
            })?;
        let Value::Object(root) = document else {
            return Err(EventError::NotObject);
        };
        let url = match present(&root, "url") {
            None => return Err(EventError::MissingUrl),
            Some(Value::String(url)) if url.is_empty() => return Err(EventError::EmptyUrl),
            Some(Value::String(url)) => url.clone(),
            Some(_) => return Err(EventError::UrlNotString),
        };
        let build = match present(&root, "build") {
            None => return Err(EventError::MissingBuild),
            Some(Value::Object(build)) => build,
            Some(_) => return Err(EventError::BuildNotObject),
        };
        let number = match present(build, "number") {
            None => return Err(EventError::MissingNumber),
            Some(number) => number.as_u64().ok_or(EventError::BadNumber)?,
        };
        let phase = match present(build, "phase") {
            None => return Err(EventError::MissingPhase),
            Some(phase) => phase
                .as_str()
                .and_then(Phase::parse)
                .ok_or(EventError::BadPhase)?,
        };
        let scm = match present(build, "scm") {
            Some(Value::Object(scm)) => Scm {
                url: string(scm, "url"),
                branch: string(scm, "branch"),
                commit: string(scm, "commit"),
                changes: strings(scm, "changes"),
                culprits: strings(scm, "culprits"),
            },
            _ => Scm::default(),
        };
        let test_summary = match present(build, "test_summary") {
            Some(Value::Object(summary)) => Some(TestSummary {
                total: integer(summary, "total"),
                failed: integer(summary, "failed"),
                passed: integer(summary, "passed"),
                skipped: integer(summary, "skipped"),
            }),
            _ => None,
        };
        Ok(Event {
            name: string(&root, "name"),
            display_name: string(&root, "display_name"),
            url,
            build: Build {
                full_url: string(build, "full_url"),
                number,
                queue_id: present(build, "queue_id").and_then(Value::as_u64),
                timestamp: integer(build, "timestamp"),
                duration: integer(build, "duration"),
                phase,
                status: string(build, "status"),
                url: string(build, "url"),
                scm,
                parameters: parameters(build),
                test_summary,
                notes: string(build, "notes"),
            },
        })
    }

    /// The build's identity for dedupe and ordering: `build.url`, else `<url><number>/` (the
    /// same shape Jenkins gives `build.url`).
    pub fn build_key(&self) -> String {
        match &self.build.url {
            Some(url) => url.clone(),
            None if self.url.ends_with('/') => format!("{}{}/", self.url, self.build.number),
            None => format!("{}/{}/", self.url, self.build.number),
        }
    }

    /// Jenkins' full job name, read from `url`: `job/team/job/payments/` is `team/payments`.
    /// A `url` that is not a chain of `job/<name>` segments falls back to `name`, then to `url`.
    pub fn job_name(&self) -> String {
        full_name(&self.url)
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| self.url.clone())
    }

    /// The first build parameter of that name.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.build
            .parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A key that is there and not `null`.
fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|value| !value.is_null())
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    match present(map, key) {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

fn integer(map: &Map<String, Value>, key: &str) -> Option<i64> {
    present(map, key).and_then(Value::as_i64)
}

/// A list of strings; elements of another type are skipped.
fn strings(map: &Map<String, Value>, key: &str) -> Vec<String> {
    match present(map, key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `build.parameters` is a string map in the plugin; a number or boolean that a fork sends is
/// kept as its JSON text, anything else is skipped.
fn parameters(build: &Map<String, Value>) -> Vec<(String, String)> {
    let Some(Value::Object(parameters)) = present(build, "parameters") else {
        return Vec::new();
    };
    parameters
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return None,
            };
            Some((name.clone(), text))
        })
        .collect()
}

/// `job/a/job/b/` → `a/b`, each name percent-decoded as Jenkins encodes it in URLs.
fn full_name(url: &str) -> Option<String> {
    let mut segments = url.split('/').filter(|segment| !segment.is_empty());
    let mut names = Vec::new();
    while let Some(segment) = segments.next() {
        if segment != "job" {
            return None;
        }
        names.push(percent_decode(segments.next()?));
    }
    if names.is_empty() {
        None
    } else {
        Some(names.join("/"))
    }
}

/// `%XX` sequences become their byte; a `%` not followed by two hex digits stays as it is, and
/// bytes that are not UTF-8 become U+FFFD, so a hostile URL still gives a printable name.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && let Some(value) = bytes
                .get(index + 1..index + 3)
                // from_str_radix alone would take "+1".
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            decoded.push(value);
            index += 3;
            continue;
        }
        decoded.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}
