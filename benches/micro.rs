//! Micro-benchmarks of the hot path, each beside a reference measured in the same run:
//! signature verification against a bare HMAC, rule lookup by token at 1, 100 and 10,000 rules,
//! extraction (the rule's pruned parse plus GWT flattening) against a bare full JSON parse, and
//! filter evaluation (GWT's `regexpFilterExpression` searched in a short text).
//!
//! `cargo bench --bench micro`

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::SystemTime;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use hookgate::extract::{BodyVariable, Budget, Shape, Variables, resolve_body};
use hookgate::filter::Filter;
use hookgate::rules::model::{FilterSection, SchemeName, VariableEntry, VerifySection};
use hookgate::rules::{RuleSet, compile_text};
use hookgate::secret::Secret;
use hookgate::verify::signature::{Scheme, SignatureCheck};

const PORT: &str = include_str!("../examples/payloads/port-deploy.json");
const GITHUB: &str = include_str!("../examples/payloads/github-push.json");

fn port_section() -> VerifySection {
    VerifySection {
        scheme: SchemeName::Port,
        secret: None,
        secret_env: None,
        secrets_env: None,
        secret_file: None,
        tolerance_secs: None,
        header: None,
        algorithm: None,
        timestamp_header: None,
        signed: None,
        reject_replays: None,
        replay_window_secs: None,
    }
}

fn signature(c: &mut Criterion) {
    let check = SignatureCheck::new(
        Scheme::compile(&port_section()).expect("port scheme"),
        vec![Secret::new("bench-secret")],
    );
    let mut group = c.benchmark_group("signature");
    for (name, body) in [
        ("port-798B", PORT.as_bytes().to_vec()),
        ("64KiB", vec![b'x'; 64 * 1024]),
    ] {
        let now = SystemTime::now();
        let mut headers = HeaderMap::new();
        for (k, v) in check.sign(&body, now) {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(&v).expect("value"),
            );
        }
        group.bench_with_input(
            BenchmarkId::new("hookgate_verify", name),
            &body,
            |b, body| b.iter(|| check.verify(black_box(&headers), black_box(body), now)),
        );
        // Reference: the HMAC-SHA256 alone over the same bytes.
        group.bench_with_input(
            BenchmarkId::new("bare_hmac_sha256", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut mac = Hmac::<Sha256>::new_from_slice(b"bench-secret").expect("key");
                    mac.update(black_box(body));
                    mac.finalize()
                })
            },
        );
    }
    group.finish();
}

fn rules(n: usize) -> RuleSet {
    let names: BTreeSet<String> = ["main".to_owned()].into();
    let env: HashMap<String, String> = HashMap::new();
    let rules = (0..n)
        .map(|i| {
            let text = format!(
                "token = \"token-{i}\"\n[verify]\nscheme = \"github\"\nsecret = \"s{i}\"\n[dispatch]\ntoken = \"job-{i}\"\n"
            );
            compile_text(&text, Path::new(&format!("/bench/rule-{i}.toml")), &names, &env)
                .expect("rule compiles")
        })
        .collect();
    RuleSet::new(rules)
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_lookup");
    for n in [1usize, 100, 10_000] {
        let set = rules(n);
        let token = format!("token-{}", n / 2);
        group.bench_function(BenchmarkId::new("candidates", n), |b| {
            b.iter(|| set.candidates(black_box(Some(token.as_bytes()))).len())
        });
    }
    group.finish();
}

fn variable(name: &str, jsonpath: &str) -> BodyVariable {
    BodyVariable::compile(&VariableEntry {
        name: name.to_owned(),
        jsonpath: jsonpath.to_owned(),
        regex_filter: None,
        default: None,
        flatten: None,
    })
    .unwrap_or_else(|_| panic!("{jsonpath} compiles"))
}

fn extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("extract");
    let port_vars = vec![
        variable("ACTION", "$.action"),
        variable("RUN_ID", "$.context.runId"),
        variable("SERVICE", "$.payload.properties.service"),
    ];
    let github_vars = vec![
        variable("ref", "$.ref"),
        variable("CHANGED", "$.commits[*].['modified','added','removed'][*]"),
        variable("ALL", "$"),
    ];
    for (name, body, vars) in [("port", PORT, &port_vars), ("github", GITHUB, &github_vars)] {
        // As the gateway parses: only what the variables' paths read (the Port rule's three
        // definite paths), or the whole document (GitHub's `[*]` and `$`).
        let shape = Shape::of(vars.iter().map(BodyVariable::path));
        group.bench_function(BenchmarkId::new("parse_and_resolve", name), |b| {
            b.iter(|| {
                let doc = shape.parse(black_box(body)).expect("json");
                let mut out = Variables::new();
                resolve_body(vars, Some(&doc), body, &mut out, &mut Budget::default());
                out.len()
            })
        });
        // Reference: parsing alone.
        group.bench_function(BenchmarkId::new("bare_parse", name), |b| {
            b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(body)).expect("json"))
        });
    }
    group.finish();
}

/// A filter as rules write it, on a text without variables: what is measured is the search of
/// the expression, as translated from Java's dialect, plus the copy of the rendered text.
fn filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter");
    let none = Variables::new();
    for (name, expression, text) in [
        (
            "anchored_hit",
            r"^refs/heads/(main|develop)$",
            "refs/heads/main",
        ),
        (
            "anchored_miss",
            r"^refs/heads/(main|develop)$",
            "refs/heads/feature/login",
        ),
        (
            "word_boundary",
            r"\bskip ci\b",
            "fix the login page, skip ci please",
        ),
    ] {
        let filter = Filter::compile(Some(&FilterSection {
            text: text.to_owned(),
            expression: expression.to_owned(),
        }))
        .expect("filter compiles");
        group.bench_function(BenchmarkId::new("evaluate", name), |b| {
            b.iter(|| {
                filter
                    .evaluate(black_box(&none))
                    .expect("evaluates")
                    .matched
            })
        }); // Reference: the pattern as written, compiled by fancy-regex as hookgate did before it
        // read Java's dialect, searched in a copy of the text.
        let untranslated = fancy_regex::RegexBuilder::new(expression)
            .backtrack_limit(100_000)
            .build()
            .expect("pattern compiles");
        group.bench_function(BenchmarkId::new("untranslated_fancy_regex", name), |b| {
            b.iter(|| {
                let rendered = black_box(text).to_owned();
                untranslated.is_match(&rendered).expect("searches")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signature, lookup, extraction, filter);
criterion_main!(benches);
