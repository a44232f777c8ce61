//! The properties the fuzz targets check, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer) and
//! `tests/api/corpus.rs` (plain `cargo test` replay of the seed and regression corpora).
//!
//! This file is `#[path]`-included on both sides, so it may only use crates the main crate
//! already depends on (hookgate, serde_json, actix-web) plus std. Inputs are decoded from raw
//! bytes by hand (0x00 separates fields, leading bytes select options) rather than with
//! `arbitrary`, so one corpus file means the same thing to the fuzzer and to the replay test.
//! Every function must never panic except to report a broken property.

#![allow(dead_code)] // Each fuzz target uses one function; the replay test uses all of them.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use hookgate::extract::{
    BodyVariable, Budget, MAX_VARIABLE_BYTES, Variables, lenient_parse, lenient_same_document,
    resolve_body,
};
use hookgate::filter::{Filter, MAX_RENDERED_BYTES, render_text};
use hookgate::rules::model::{FilterSection, VariableEntry, VerifySection};
use hookgate::secret::Secret;
use hookgate::verify::signature::{Scheme, SignatureCheck, compact_json};
use serde_json::{Value, json};

/// The one secret every fuzzed rule is signed with; it must never appear in an answer.
pub const SECRET: &str = "fuzz-secret";
/// The sender token of the `plain` rule in the `request` target's gateway.
pub const TOKEN: &str = "fuzz-token";
/// The Jenkins job token; the client never sends it, so it must never come back.
pub const JOB_TOKEN: &str = "fuzz-job-token";

/// Splits `data` on 0x00 into at most `n` fields; the last keeps the rest, zeros included.
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |&b| b == 0).collect()
}

/// The environment every compiled rule reads its secrets from.
pub fn fuzz_env() -> HashMap<String, String> {
    [
        ("FUZZ_SECRET", SECRET),
        ("FUZZ_TOKEN", TOKEN),
        ("FUZZ_JOB_TOKEN", JOB_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// signature
// ---------------------------------------------------------------------------------------------

/// Header names the `signature` input fills, in field order. `x-signature`/`x-timestamp` are
/// the custom `hmac` rule's headers.
const SIGNATURE_HEADERS: [&str; 7] = [
    "x-port-signature",
    "x-port-timestamp",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitlab-token",
    "x-signature",
    "x-timestamp",
];

/// One check per scheme (and three `hmac` variants), compiled once: compilation is not what
/// this target fuzzes. Sections are deserialised rather than written as struct literals so
/// that new optional keys in `VerifySection` do not break the fuzz build.
fn signature_checks() -> &'static [SignatureCheck] {
    static CHECKS: OnceLock<Vec<SignatureCheck>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let sections = [
            json!({"scheme": "port"}),
            json!({"scheme": "port", "tolerance_secs": 5}),
            json!({"scheme": "port-sha1"}),
            json!({"scheme": "github"}),
            json!({"scheme": "gitlab"}),
            json!({"scheme": "none"}),
            json!({"scheme": "hmac", "header": "X-Signature", "timestamp_header": "X-Timestamp",
                   "signed": "{timestamp}.{body}"}),
            json!({"scheme": "hmac", "header": "X-Signature", "algorithm": "sha512"}),
            json!({"scheme": "hmac", "header": "X-Signature", "algorithm": "sha1",
                   "timestamp_header": "X-Timestamp", "signed": "v0:{timestamp}:{body}"}),
        ];
        sections
            .into_iter()
            .map(|section| {
                let section: VerifySection =
                    serde_json::from_value(section).expect("valid verify section");
                let scheme = Scheme::compile(&section).expect("scheme compiles");
                SignatureCheck::new(scheme, vec![Secret::new(SECRET)])
            })
            .collect()
    })
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("sign() gives valid names"),
            HeaderValue::from_str(value).expect("sign() gives valid values"),
        );
    }
    headers
}

/// Input: up to 7 header values (fields 0..7, empty = absent, a leading 0x01 sends the value
/// twice), then the body (the rest). Verifies the fuzzed headers with every scheme, then
/// checks that `sign` and `verify` agree and that a flipped body byte is refused.
pub fn signature(data: &[u8]) {
    let parts = fields(data, SIGNATURE_HEADERS.len() + 1);
    let mut headers = HeaderMap::new();
    for (name, value) in SIGNATURE_HEADERS.iter().zip(&parts) {
        let (repeat, value) = match value.split_first() {
            Some((&1, rest)) => (true, rest),
            _ => (false, *value),
        };
        if value.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue; // actix would have refused the request before any rule saw it
        };
        let name = HeaderName::from_static(name);
        if repeat {
            headers.append(name.clone(), value.clone());
        }
        headers.append(name, value);
    }
    let body: &[u8] = if parts.len() > SIGNATURE_HEADERS.len() {
        parts[SIGNATURE_HEADERS.len()]
    } else {
        b""
    };
    let now = SystemTime::now();

    for check in signature_checks() {
        let verdict = check.verify(&headers, body, now);
        match check.scheme() {
            Scheme::None => assert!(verdict.is_ok(), "scheme none refused: {verdict:?}"),
            // GitLab sends the secret itself: only that exact single value may pass.
            Scheme::Gitlab if verdict.is_ok() => {
                let given: Vec<_> = headers.get_all("x-gitlab-token").collect();
                assert_eq!(given.len(), 1);
                assert_eq!(given[0].as_bytes(), SECRET.as_bytes());
            }
            _ => {}
        }

        // What `sign` produces for this body must verify.
        let signed = header_map(&check.sign(body, now));
        let verdict = check.verify(&signed, body, now);
        assert!(
            verdict.is_ok(),
            "{}: own signature refused: {verdict:?}",
            check.scheme().name()
        );

        // ...and must not verify a body with one byte changed. `none` and `gitlab` do not
        // sign the body, so they are exempt.
        if body.is_empty() || matches!(check.scheme(), Scheme::None | Scheme::Gitlab) {
            continue;
        }
        let mut flipped = body.to_vec();
        let at = usize::from(body[0]) % body.len();
        flipped[at] ^= 0x01;
        let verdict = check.verify(&signed, &flipped, now);
        // `port` also accepts the signature of the body with JSON whitespace removed (Port
        // signs compact JSON but sends it spaced), so exactly that case may still pass.
        let may_pass = matches!(check.scheme(), Scheme::Port { .. })
            && compact_json(&flipped).as_deref() == Some(body);
        assert_eq!(
            verdict.is_ok(),
            may_pass,
            "{}: signature of the original body accepted a changed body",
            check.scheme().name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rule_compile
// ---------------------------------------------------------------------------------------------

/// Input: one byte choosing the format (by file extension), then the rule text. Compiles it
/// as if it were `/tmp/hookgate-fuzz/rule.<ext>`; errors are fine, panics are not.
pub fn rule_compile(data: &[u8]) {
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let ext = ["toml", "yaml", "json", "yml"][usize::from(format % 4)];
    let text = String::from_utf8_lossy(text);
    // Relative `*_file` keys resolve against this directory, which does not exist, so a
    // fuzzed rule cannot make the target read real files by relative path.
    let path = format!("/tmp/hookgate-fuzz-nonexistent/rule.{ext}");
    let jenkins: BTreeSet<String> = ["main".to_owned(), "other".to_owned()].into();
    let env = fuzz_env();
    if let Ok(rule) = hookgate::rules::compile_text(&text, Path::new(&path), &jenkins, &env) {
        // A compiled rule's name is what `/hooks/{rule}` routes on; it cannot be empty.
        assert!(!rule.name.is_empty(), "rule compiled with an empty name");
    }
}

// ---------------------------------------------------------------------------------------------
// extract
// ---------------------------------------------------------------------------------------------

/// Jayway paths as rule authors write them (GWT docs, Port/GitHub/GitLab recipes), plus a few
/// odd ones. Selector values past the end use a fuzzed path instead.
const JSON_PATHS: [&str; 17] = [
    "$",
    "$..id",
    "$.action",
    "$.context.runId",
    "$.commits[*].['modified','added','removed'][*]",
    "$.a.length()",
    "$.x-y.z",
    "$[?(@.n == 'x')]",
    "$.payload.properties.*",
    "$['a']['b c']",
    "$.commits[0].id",
    "$.commits[-1:]",
    "$..[?(@.id > 1)].name",
    "$.a[1:3]",
    "$.*",
    "$..*",
    "$.store.book[?(@.price < 10 && @.tag =~ /a.*/)].title",
];

/// Input: byte 0 picks the path (past the list: field 0 of the rest is the path), byte 1 the
/// options (bit 0 regex filter, bit 1 default, bits 2-3 flatten unset/true/false), the rest
/// is the JSON body. Property: every variable is named `V...` and the total stays in budget.
pub fn extract(data: &[u8]) {
    let [selector, options, rest @ ..] = data else {
        return;
    };
    let (jsonpath, raw) = match JSON_PATHS.get(usize::from(*selector)) {
        Some(path) => ((*path).to_owned(), rest),
        None => {
            let parts = fields(rest, 2);
            let raw: &[u8] = parts.get(1).copied().unwrap_or(b"");
            (String::from_utf8_lossy(parts[0]).into_owned(), raw)
        }
    };
    let entry = VariableEntry {
        name: "V".into(),
        jsonpath,
        regex_filter: (options & 1 != 0).then(|| "[aA]".to_owned()),
        default: (options & 2 != 0).then(|| "dflt".to_owned()),
        flatten: match (options >> 2) & 3 {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        },
    };
    let Ok(variable) = BodyVariable::compile(&entry) else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(raw) else {
        return;
    };
    // The gateway parses the body once with serde_json; an empty body means no document.
    let document = if raw.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(raw) {
            Ok(document) => Some(document),
            Err(_) => return,
        }
    };
    let mut out = Variables::new();
    resolve_body(
        std::slice::from_ref(&variable),
        document.as_ref(),
        raw,
        &mut out,
        &mut Budget::default(),
    );
    let mut total = 0usize;
    for (name, value) in &out {
        assert!(name.starts_with('V'), "variable {name:?} not under V");
        total += name.len() + value.len();
    }
    assert!(
        total <= MAX_VARIABLE_BYTES,
        "variables take {total} bytes, over {MAX_VARIABLE_BYTES}"
    );
}

// ---------------------------------------------------------------------------------------------
// lenient_json
// ---------------------------------------------------------------------------------------------

/// Input: the body (lossily UTF-8, as hookgate only parses valid UTF-8). Properties: the
/// lenient parse never panics and only gives objects and arrays; what serde_json reads as an
/// object or array it reads the same; and its own documents, written back out as JSON, read
/// back the same. Text with DEL is not compared: json-smart drops a raw DEL from a string
/// that has an escape, where serde_json keeps it. Nor must it accept what serde_json accepts
/// when a float literal is over 18 characters long (see [`has_long_float`]).
pub fn lenient_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lenient = lenient_parse(&text);
    if let Ok(doc) = &lenient {
        assert!(doc.is_object() || doc.is_array(), "not a container: {doc}");
        let written = doc.to_string();
        if !written.contains('\u{7f}') {
            let again = lenient_parse(&written)
                .unwrap_or_else(|e| panic!("its own document {written:?} refused: {e}"));
            assert!(
                lenient_same_document(&again, doc),
                "{written:?} read back as {again}"
            );
        }
    }
    let strict = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|doc| doc.is_object() || doc.is_array());
    if let Some(strict) = strict
        && !text.contains('\u{7f}')
    {
        match lenient {
            Ok(lenient) => assert!(
                lenient_same_document(&lenient, &strict),
                "{text:?}: lenient {lenient}, serde_json {strict}"
            ),
            Err(e) => assert!(
                has_long_float(&text),
                "serde_json accepts {text:?}, lenient: {e}"
            ),
        }
    }
}

/// Input: a request body for `POST /jenkins/{target}/events`. Properties: reading it as a
/// Notification event never panics, and an event it reads folds into build facts that survive
/// their JSON round trip; every record built for Allstacks from it (twice folded, as a later
/// phase of the same build would be) passes Allstacks' documented validation, and the alert
/// event always has the fields itoc360 keys on.
pub fn notification_event(data: &[u8]) {
    use hookgate::events::facts::BuildFacts;
    use hookgate::events::model::Event;
    use hookgate::sinks::{alert, allstacks};
    let Ok(event) = Event::parse(data) else {
        return;
    };
    let _ = (event.build_key(), event.job_name());
    let mut facts = BuildFacts::default();
    facts.absorb(&event);
    facts.absorb(&event);
    let stored = serde_json::to_string(&facts).expect("facts serialise");
    let reread: BuildFacts = serde_json::from_str(&stored).expect("facts read back");
    assert_eq!(reread, facts, "{stored}");
    let rules = allstacks::RecordRules {
        sink: "dora".to_owned(),
        jenkins: "main".to_owned(),
        service_id: 42,
        job_type: None,
        repo_name: None,
        repo_id: None,
        commit_parameters: allstacks::DEFAULT_COMMIT_PARAMETERS
            .map(str::to_owned)
            .to_vec(),
        triggered_by_parameter: Some("DEPLOYER".to_owned()),
        optional_parameters: vec!["TARGET_ENV".to_owned()],
        statuses: allstacks::default_statuses(),
    };
    if let Ok(record) = allstacks::build_record(&event, &facts, &rules) {
        allstacks::validate_cicd_job(&record).unwrap_or_else(|reason| {
            panic!("a record Allstacks would refuse ({reason}): {record}")
        });
    }
    let alert = alert::alert_event("main", &event);
    for key in ["id", "title", "status", "severity", "message"] {
        assert!(alert[key].is_string(), "{key} in {alert}");
    }
}

/// Whether JSON `text` has a number literal over 18 characters with a fraction or exponent.
/// json-smart reads those with `new BigDecimal`, which refuses what serde_json reads as 0 or
/// infinity: more than ten significant exponent digits, or a scale beyond `int`.
fn has_long_float(text: &str) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    let (mut length, mut float) = (0, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' => {
                length += 1;
                float |= matches!(b, b'.' | b'e' | b'E');
                if length > 18 && float {
                    return true;
                }
            }
            _ => {
                in_string = b == b'"';
                (length, float) = (0, false);
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// filter
// ---------------------------------------------------------------------------------------------

/// A small limit, so the fuzzer reaches the "too long" path without megabyte inputs.
const SMALL_RENDER_LIMIT: usize = 256;

/// Input fields: text, expression, then name/value pairs (up to 16 variables). Renders the
/// text under two limits and evaluates the compiled filter.
pub fn filter(data: &[u8]) {
    let parts = fields(data, 2 + 2 * 16);
    let text = String::from_utf8_lossy(parts[0]).into_owned();
    let expression = parts
        .get(1)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let mut variables = Variables::new();
    for pair in parts.get(2..).unwrap_or(&[]).chunks(2) {
        let name = String::from_utf8_lossy(pair[0]).into_owned();
        let value = pair
            .get(1)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        variables.insert(name, value);
    }

    let full = render_text(&text, &variables, MAX_RENDERED_BYTES);
    if let Some(rendered) = &full {
        assert!(rendered.len() <= MAX_RENDERED_BYTES);
    }
    // The limit only decides between the rendering and None; it never changes the text.
    if let Some(small) = render_text(&text, &variables, SMALL_RENDER_LIMIT) {
        assert!(small.len() <= SMALL_RENDER_LIMIT, "rendered past the limit");
        assert_eq!(
            full.as_deref(),
            Some(small.as_str()),
            "limit changed the text"
        );
    }

    let section = FilterSection {
        text,
        expression: expression.clone(),
    };
    let Ok(compiled) = Filter::compile(Some(&section)) else {
        return;
    };
    if let Ok(outcome) = compiled.evaluate(&variables) {
        assert_eq!(Some(&outcome.rendered_text), full.as_ref());
        if expression.is_empty() {
            assert!(outcome.matched, "an empty expression must match anything");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// request
// ---------------------------------------------------------------------------------------------

/// Set when an actix worker thread panics: actix restarts the worker and the client just
/// sees a dropped connection, so without this a server-side panic would go unnoticed in the
/// replay test (under libFuzzer the panic hook aborts the process anyway).
static SERVER_PANICKED: AtomicBool = AtomicBool::new(false);
static REQUESTS: AtomicUsize = AtomicUsize::new(0);

const PLAIN_RULE: &str = r#"
description = "fuzz: no signature, sender token"
token_env = "FUZZ_TOKEN"

[verify]
scheme = "none"

[[variables]]
name = "ACTION"
jsonpath = "$.action"

[[variables]]
name = "IDS"
jsonpath = "$..id"
regex_filter = "[^0-9]"
default = "none"

[[variables]]
name = "FILES"
jsonpath = "$.commits[*].['modified','added','removed'][*]"

[[headers]]
name = "X-Event"

[[query]]
name = "ref"

[filter]
text = "$ACTION $x_event"
expression = "^(deploy|push)"

[dispatch]
jenkins = "main"
token_env = "FUZZ_JOB_TOKEN"
body = "variables"
"#;

const PORT_RULE: &str = r#"
description = "fuzz: Port signature, no sender token"

[verify]
scheme = "port"
secret_env = "FUZZ_SECRET"

[[variables]]
name = "ACTION"
jsonpath = "$.action"

[[variables]]
name = "RUN_ID"
jsonpath = "$.context.runId"

[filter]
text = "$ACTION"
expression = "^deploy_service$"

[dispatch]
jenkins = "main"
token_env = "FUZZ_JOB_TOKEN"
"#;

/// Builds `Settings` by deserialising JSON: required keys first, then each tuning key only if
/// this version of hookgate knows it (`deny_unknown_fields` refuses the rest), so the harness
/// keeps compiling and running while `ServerSettings` grows.
fn gateway_settings(dir: &Path, jenkins_url: &str) -> hookgate::config::Settings {
    let mut settings = json!({
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": 65536},
        "rules": {"dir": dir.join("rules")},
        "jenkins": {"main": {"url": jenkins_url, "timeout_secs": 1, "max_in_flight": 8}},
        "delivery": {"mode": "direct", "store": dir.join("store")},
    });
    // Every request comes from 127.0.0.1: per-client and per-rule rate limits would turn
    // most inputs into 429 and hide everything behind them. Short timeouts keep a lying
    // Content-Length from stalling an input for the default 30 s.
    let tuning = [
        ("rate_per_client", json!(0)),
        ("rate_per_rule", json!(0)),
        ("header_timeout_ms", json!(1000)),
        ("body_timeout_secs", json!(1)),
        ("keep_alive_secs", json!(1)),
        ("workers", json!(1)),
    ];
    for (key, value) in tuning {
        let mut candidate = settings.clone();
        candidate["server"][key] = value;
        if serde_json::from_value::<hookgate::config::Settings>(candidate.clone()).is_ok() {
            settings = candidate;
        }
    }
    // The admin listener, in versions that have one, on a free port rather than the default
    // 9091, so several fuzz processes (and the test suite) can run side by side.
    let mut candidate = settings.clone();
    candidate["admin"] = json!({"listen": "127.0.0.1:0"});
    if serde_json::from_value::<hookgate::config::Settings>(candidate.clone()).is_ok() {
        settings = candidate;
    }
    serde_json::from_value(settings).expect("fuzz gateway settings deserialise")
}

/// Starts the gateway once per process on its own thread and actix system; returns its
/// address. Jenkins points at a port where nothing listens, so dispatch fails fast (502).
fn gateway() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("actix-"))
            {
                SERVER_PANICKED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));

        // One directory per process, left behind on exit: it holds two small rule files.
        let dir = std::env::temp_dir().join(format!("hookgate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).expect("create rules dir");
        std::fs::write(dir.join("rules/plain.toml"), PLAIN_RULE).expect("write rule");
        std::fs::write(dir.join("rules/port.toml"), PORT_RULE).expect("write rule");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let jenkins_url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let settings = gateway_settings(&dir, &jenkins_url);

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hookgate-fuzz-gateway".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let env = fuzz_env();
                    let gateway = hookgate::gateway::Gateway::compile(
                        settings,
                        hookgate::config::Source::BuiltIn,
                        &env,
                    )
                    .unwrap_or_else(|problems| {
                        panic!("fuzz gateway does not compile:\n{problems}")
                    });
                    let app =
                        hookgate::startup::Application::build(gateway).expect("gateway binds");
                    tx.send(app.local_addr()).expect("send address");
                    let _ = app.run_until_stopped().await;
                });
            })
            .expect("spawn gateway thread");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("gateway started")
    })
}

const METHODS: [&str; 13] = [
    "POST", "GET", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PO ST",
    "G\tET", "", "BREW",
];

const PATHS: [&str; 16] = [
    "/generic-webhook-trigger/invoke?token=fuzz-token",
    "/generic-webhook-trigger/invoke?token=fuzz-token&ref=main",
    "/generic-webhook-trigger/invoke",
    "/generic-webhook-trigger/invoke?token=wrong&token=fuzz-token",
    "/hooks/plain?token=fuzz-token",
    "/hooks/plain",
    "/hooks/port",
    "/hooks/missing",
    "/healthz",
    "/readyz",
    "/metrics",
    "/deliveries/x",
    "/deliveries/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "*",
    "http://127.0.0.1/hooks/port",
    "/hooks/%2e%2e/healthz",
];

/// Header names used for a header field without a colon (its first byte picks one).
const HEADER_NAMES: [&str; 12] = [
    "X-Forwarded-For",
    "Content-Length",
    "Transfer-Encoding",
    "Content-Type",
    "X-Port-Signature",
    "X-Port-Timestamp",
    "X-Event",
    "X-Hub-Signature-256",
    "Expect",
    "Connection",
    "Host",
    "X-Hookgate-Dry-Run",
];

/// Most header fields one input adds.
const MAX_FUZZ_HEADERS: usize = 20;

/// Builds the raw request bytes. Input: byte 0 method, byte 1 path (past the list: field 0 of
/// the rest), byte 2 flags, byte 3 header count; then fields: path, headers, body (the rest).
///
/// Flags: bit 0 chunked (bit 7: body written verbatim, the fuzzer frames the chunks), bits
/// 1-2 Content-Length correct/absent/too long/too short, bit 3 a valid Port signature of the
/// body, bit 4 JSON content type, bit 5 X-Forwarded-For, bit 6 Content-Length twice.
pub fn build_request(data: &[u8]) -> Option<Vec<u8>> {
    let [method, path, flags, count, rest @ ..] = data else {
        return None;
    };
    let headers = usize::from(*count) % (MAX_FUZZ_HEADERS + 1);
    let parts = fields(rest, headers + 2);
    let fuzzed_path = parts[0];
    let body: &[u8] = if parts.len() == headers + 2 {
        parts[headers + 1]
    } else {
        b""
    };
    let header_fields = &parts[1..parts.len().min(headers + 1)];

    let mut raw = Vec::with_capacity(256 + data.len());
    raw.extend_from_slice(METHODS[usize::from(*method) % METHODS.len()].as_bytes());
    raw.push(b' ');
    match PATHS.get(usize::from(*path)) {
        Some(path) => raw.extend_from_slice(path.as_bytes()),
        None => raw.extend_from_slice(fuzzed_path),
    }
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for field in header_fields {
        match field.iter().position(|&b| b == b':') {
            Some(_) => raw.extend_from_slice(field),
            None => {
                let (pick, value) = field.split_first().map_or((0, &b""[..]), |(p, v)| (*p, v));
                raw.extend_from_slice(
                    HEADER_NAMES[usize::from(pick) % HEADER_NAMES.len()].as_bytes(),
                );
                raw.extend_from_slice(b": ");
                raw.extend_from_slice(value);
            }
        }
        raw.extend_from_slice(b"\r\n");
    }
    if flags & 0x08 != 0 {
        let port = &signature_checks()[0];
        for (name, value) in port.sign(body, SystemTime::now()) {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    if flags & 0x10 != 0 {
        raw.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if flags & 0x20 != 0 {
        raw.extend_from_slice(b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n");
    }
    let declared = match (flags >> 1) & 3 {
        0 => Some(body.len()),
        1 => None,
        2 => Some(body.len() + 1 + usize::from(*count)),
        _ => Some(body.len().saturating_sub(1 + usize::from(*count))),
    };
    if let Some(length) = declared {
        raw.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
        if flags & 0x40 != 0 {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", length + 1).as_bytes());
        }
    }
    if flags & 0x01 != 0 {
        raw.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        if flags & 0x80 != 0 {
            raw.extend_from_slice(body);
        } else {
            for chunk in body.chunks(16) {
                raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                raw.extend_from_slice(chunk);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        }
    } else {
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
    }
    Some(raw)
}

/// Most answer bytes read per input.
const MAX_ANSWER: usize = 1 << 20;
const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `raw` on a fresh connection, half-closes it (so a short body ends in EOF rather than
/// a body timeout) and reads the answer until EOF, timeout or [`MAX_ANSWER`].
fn exchange(address: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, SOCKET_TIMEOUT) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(SOCKET_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SOCKET_TIMEOUT));
    let _ = stream.set_nodelay(true);
    // The server may answer (413, 400) and close before reading everything: not an error.
    let _ = stream.write_all(raw);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while answer.len() < MAX_ANSWER {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    answer
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.1 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// `GET /healthz` answers 200, retried a little: the gateway may be busy finishing a slow
/// input, but it must come back.
fn assert_alive(address: SocketAddr) {
    for _ in 0..3 {
        let answer = exchange(
            address,
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        if status_of(&answer) == Some(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the gateway stopped answering GET /healthz");
}

/// Sends one fuzzed request to the shared gateway. Properties: an answer, if any, is an
/// HTTP/1.1 status line; no answer contains a secret or token the request did not carry
/// itself; no gateway worker panicked; every 100 inputs, `/healthz` still answers 200.
pub fn request(data: &[u8]) {
    let Some(raw) = build_request(data) else {
        return;
    };
    let address = gateway();
    let answer = exchange(address, &raw);
    // `HOOKGATE_FUZZ_DEBUG=1` shows each exchange, to see what a seed actually reaches.
    if std::env::var_os("HOOKGATE_FUZZ_DEBUG").is_some() {
        eprintln!(
            "--> {:?}\n<-- {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)]),
            String::from_utf8_lossy(&answer[..answer.len().min(400)])
        );
    }
    if !answer.is_empty() {
        assert!(
            status_of(&answer).is_some(),
            "answer is not an HTTP/1.1 status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    for secret in [SECRET, TOKEN, JOB_TOKEN] {
        // Echoing what the client itself sent is no leak; anything else is.
        if !contains(&raw, secret) {
            assert!(
                !contains(&answer, secret),
                "answer reveals {secret:?}: {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    assert!(
        !SERVER_PANICKED.load(Ordering::SeqCst),
        "a gateway worker panicked (see the panic message above)"
    );
    if REQUESTS.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
        assert_alive(address);
    }
}

/// For the replay test: checks liveness now rather than on the 100th input.
pub fn request_alive() {
    assert_alive(gateway());
}
