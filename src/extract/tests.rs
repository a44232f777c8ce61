//! Data-driven tests of GWT's variable and filter semantics (reference `gwt-plugin.md` §6–7):
//! one `check` per case, each a rule snippet as users write it, a request, and every variable
//! GWT would produce. Every case is compiled into a whole rule and run through the pipeline
//! `serve` runs (`pipeline::evaluate`), so what is tested here is what a request gets.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::web::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::{BodyVariable, Budget, MAX_VARIABLE_BYTES, Variables, resolve_body};
use crate::filter::{Filter, FilterError, MAX_RENDERED_BYTES};
use crate::pipeline::{self, Bodies, Evaluated, Stopped};
use crate::rules::Rule;
use crate::rules::model::{FilterSection, VariableEntry};
use crate::verify::ip::ClientAddr;
use crate::verify::{self, Inbound};

#[derive(Default)]
struct Request<'a> {
    body: &'a str,
    headers: &'a [(&'a str, &'a str)],
    query: &'a [(&'a str, &'a str)],
}

fn body(body: &str) -> Request<'_> {
    Request {
        body,
        ..Request::default()
    }
}

struct Outcome {
    variables: Variables,
    rendered: String,
    matched: bool,
}

fn compile_error<T>(errors: Vec<super::CompileError>) -> T {
    let reasons: Vec<String> = errors
        .into_iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect();
    panic!("rule does not compile: {reasons:?}")
}

/// Compiles `sections` (a rule's variables, headers, query and filter, as users write them)
/// into a whole rule, as `hookgate serve` loads it.
fn compile_rule(sections: &str) -> Arc<Rule> {
    let text = format!("[verify]\nscheme = \"none\"\n\n{sections}\n\n[dispatch]\n");
    let jenkins = BTreeSet::from(["main".to_owned()]);
    let env: HashMap<String, String> = HashMap::new();
    let rule = crate::rules::compile_text(&text, Path::new("case.toml"), &jenkins, &env)
        .unwrap_or_else(|problems| {
            let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("rule does not compile: {reasons:?}\n{text}")
        });
    Arc::new(rule)
}

/// Runs `rule` on `request` through the pipeline `serve` and `hookgate test` run.
fn evaluate(rule: &str, request: &Request<'_>) -> Result<Outcome, Stopped> {
    let rule = compile_rule(rule);
    let mut headers = HeaderMap::new();
    for (name, value) in request.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(request.query.iter())
        .finish();
    let inbound = Inbound::new(
        &headers,
        &query,
        Bytes::copy_from_slice(request.body.as_bytes()),
        ClientAddr::Unknown,
    );
    let verified = verify::assume_verified_for_offline_test(&rule, &inbound);
    let (evaluation, matched) = match pipeline::evaluate(&verified, &mut Bodies::new(1))? {
        Evaluated::Matched { evaluation, .. } => (evaluation, true),
        Evaluated::Filtered(evaluation) => (evaluation, false),
    };
    Ok(Outcome {
        variables: evaluation.variables,
        rendered: evaluation.rendered_text,
        matched,
    })
}

fn run(rule: &str, request: &Request<'_>) -> Outcome {
    evaluate(rule, request)
        .unwrap_or_else(|stopped| panic!("rule:\n{rule}\nbody: {}\n{stopped}", request.body))
}

/// Asserts the complete set of variables `rule` resolves from `request`.
fn check(rule: &str, request: Request<'_>, expected: &[(&str, &str)]) {
    let got = run(rule, &request).variables;
    let expected: Variables = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(got, expected, "rule:\n{rule}\nbody: {}", request.body);
}

/// Asserts the rendered filter text and whether the rule would trigger.
fn check_filter(rule: &str, request: Request<'_>, rendered: &str, matched: bool) {
    let outcome = run(rule, &request);
    assert_eq!(outcome.rendered, rendered, "rule:\n{rule}");
    assert_eq!(
        outcome.matched, matched,
        "rule:\n{rule}\nrendered: {rendered}"
    );
}

fn var(name: &str, path: &str) -> String {
    format!("[[variables]]\nname = \"{name}\"\njsonpath = '''{path}'''\n")
}

// --- §6.4: one case per row of the flattening table ------------------------------------

#[test]
fn string_number_and_boolean_leaves() {
    let doc =
        r#"{"s": "x", "i": 33333, "d": 29.99, "one": 1.0, "big": 1e20, "t": true, "f": false}"#;
    let cases = [
        ("$.s", "x"),
        ("$.i", "33333"),
        ("$.d", "29.99"),
        ("$.one", "1.0"),
        ("$.big", "1.0E20"),
        ("$.t", "true"),
        ("$.f", "false"),
    ];
    for (path, value) in cases {
        check(&var("V", path), body(doc), &[("V", value)]);
    }
}

#[test]
fn null_missing_and_unparsable_resolve_to_nothing() {
    check(&var("V", "$.n"), body(r#"{"n": null}"#), &[]);
    check(&var("V", "$.missing"), body(r#"{"n": 1}"#), &[]);
    // GWT leaves a body that is not JSON unresolved; hookgate answers 400 (a deliberate
    // difference), so it never reaches the variables.
    assert!(matches!(
        evaluate(&var("V", "$.a"), &body("not json")),
        Err(Stopped::InvalidBody(_))
    ));
    check(&var("V", "$.a"), body(""), &[]);
}

#[test]
fn object_gives_compact_json_and_one_variable_per_leaf() {
    check(
        &var("V", "$.user"),
        body(r#"{"user": {"name": "Administrator", "username": "root"}}"#),
        &[
            ("V", r#"{"name":"Administrator","username":"root"}"#),
            ("V_name", "Administrator"),
            ("V_username", "root"),
        ],
    );
}

#[test]
fn mixed_list_flattens_by_index_and_normalises_member_names() {
    check(
        &var("V", "$.list"),
        body(r#"{"list": [{"name": "A"}, "s", 33333, {"a number": "v"}]}"#),
        &[
            ("V", r#"[{"name":"A"},"s",33333,{"a number":"v"}]"#),
            ("V_0_name", "A"),
            ("V_1", "s"),
            ("V_2", "33333"),
            ("V_3_a_number", "v"),
        ],
    );
}

#[test]
fn indefinite_path_with_one_hit_is_still_a_list() {
    check(
        &var("V", "$.commits[*].modified[*]"),
        body(r#"{"commits": [{"modified": ["README.md"]}]}"#),
        &[("V", r#"["README.md"]"#), ("V_0", "README.md")],
    );
}

#[test]
fn indefinite_path_without_hits_and_empty_object_count_as_resolved() {
    let rule = format!("{}default = \"fallback\"\n", var("V", "$.commits[*].id"));
    check(&rule, body(r#"{"commits": []}"#), &[("V", "[]")]);
    let rule = format!("{}default = \"fallback\"\n", var("V", "$.o"));
    check(&rule, body(r#"{"o": {}}"#), &[("V", "{}")]);
}

#[test]
fn dollar_gives_the_raw_body_verbatim_plus_every_leaf() {
    let raw = "{\"a\": {\"b\": \"x=y\"},  \"n\": [1, 2]}";
    let rule = format!("{}regex_filter = \"x\"\n", var("payload", "$"));
    check(
        &rule,
        body(raw),
        &[
            ("payload", raw),
            ("payload_a_b", "=y"),
            ("payload_n_0", "1"),
            ("payload_n_1", "2"),
        ],
    );
}

#[test]
fn descendant_ids_on_a_gitlab_note_in_document_order() {
    // GWT's VariablesResolverJsonPathTest: `$..id` → ids=[28,1,"1c3e…"].
    let note = r#"{
        "object_kind": "note",
        "object_attributes": {"id": 28, "note": "build please"},
        "user": {"name": "Administrator"},
        "project": {"id": 1},
        "commit": {"id": "1c3e5d7b"}
    }"#;
    check(
        &var("ids", "$..id"),
        body(note),
        &[
            ("ids", r#"[28,1,"1c3e5d7b"]"#),
            ("ids_0", "28"),
            ("ids_1", "1"),
            ("ids_2", "1c3e5d7b"),
        ],
    );
}

#[test]
fn union_over_changed_files_as_in_the_github_feature() {
    // GWT's `gitlab/gitlab-push-specific-folder.feature`: each commit's modified, added and
    // removed files in turn, not every commit's modified files first.
    let push = r#"{"commits": [
        {"added": ["added/file.txt"], "modified": ["modified/file.txt"], "removed": ["removed/file.txt"]},
        {"added": [], "modified": ["this/is/modified.txt"], "removed": []}
    ]}"#;
    check(
        &var(
            "changed_files",
            "$.commits[*].['modified','added','removed'][*]",
        ),
        body(push),
        &[
            (
                "changed_files",
                r#"["modified/file.txt","added/file.txt","removed/file.txt","this/is/modified.txt"]"#,
            ),
            ("changed_files_0", "modified/file.txt"),
            ("changed_files_1", "added/file.txt"),
            ("changed_files_2", "removed/file.txt"),
            ("changed_files_3", "this/is/modified.txt"),
        ],
    );
}

#[test]
fn jayway_extras_filter_and_length_work() {
    let doc = r#"{"labels": [{"name": "x", "id": 1}, {"name": "deploy", "id": 2}], "commits": [1, 2, 3]}"#;
    check(
        &var("L", "$.labels[?(@.name == 'deploy')].id"),
        body(doc),
        &[("L", "[2]"), ("L_0", "2")],
    );
    check(&var("N", "$.commits.length()"), body(doc), &[("N", "3")]);
    // After an indefinite path, `length()` is one length per match (GWT's
    // `array-without-attribute-and-avalue.feature`): the matching label has two members.
    check(
        &var("D", "$.labels[?(@.name == 'deploy')].length()"),
        body(doc),
        &[("D", "[2]"), ("D_0", "2")],
    );
    check(
        &var("D", "$.labels[?(@.name == 'docs')].length()"),
        body(doc),
        &[("D", "[]")],
    );
    check(
        &var("H", "$.x-gitlab.kind"),
        body(r#"{"x-gitlab": {"kind": "push"}}"#),
        &[("H", "push")],
    );
}

#[test]
fn a_missing_member_before_a_wildcard_or_filter_is_unresolved_as_in_jayway() {
    // Jayway throws PathNotFoundException for a missing member while the path before it is
    // definite (`PathToken.handleObjectProperty`), even when a wildcard or filter follows, and
    // GWT leaves the variable unresolved; after a wildcard the member is skipped.
    let with_default = |path: &str| format!("{}default = \"fallback\"\n", var("V", path));
    check(&with_default("$.zzz[*]"), body("{}"), &[("V", "fallback")]);
    let labels = "$.labels[?(@.name == 'x')]";
    check(
        &with_default(labels),
        body(r#"{"action": "opened"}"#),
        &[("V", "fallback")],
    );
    check(
        &with_default(labels),
        body(r#"{"labels": []}"#),
        &[("V", "[]")],
    );
    check(
        &with_default("$.commits[*].zzz[*]"),
        body(r#"{"commits": [{"id": 1}]}"#),
        &[("V", "[]")],
    );
    // A member of a string, or an index of an object, on a definite path: unresolved too.
    check(
        &with_default("$.ref[*]"),
        body(r#"{"ref": "main"}"#),
        &[("V", "[]")],
    );
    check(
        &with_default("$.ref.name[*]"),
        body(r#"{"ref": "main"}"#),
        &[("V", "fallback")],
    );
}

#[test]
fn a_name_union_at_the_end_is_one_object_as_in_jayway() {
    // Jayway merges the members of a leaf name union into one map (`PathToken.java:92-122`),
    // a definite answer that GWT flattens like any object; absent members are left out.
    check(
        &var("PR", "$.pull_request['title','body','draft']"),
        body(r#"{"pull_request": {"body": "B", "title": "T", "number": 7}}"#),
        &[
            ("PR", r#"{"title":"T","body":"B"}"#),
            ("PR_body", "B"),
            ("PR_title", "T"),
        ],
    );
}

#[test]
fn a_path_without_dollar_is_read_from_the_root_as_in_jayway() {
    // `PathCompiler.compile` prefixes `$.` (`PathCompiler.java:67-70`).
    check(
        &var("USER", "pusher.name"),
        body(r#"{"pusher": {"name": "octocat"}}"#),
        &[("USER", "octocat")],
    );
    check(
        &var("FIRST", "commits[0].id"),
        body(r#"{"commits": [{"id": "c1"}]}"#),
        &[("FIRST", "c1")],
    );
}

#[test]
fn regex_filter_deletes_every_match() {
    let rule = format!("{}regex_filter = \"[aA]\"\n", var("user", "$.user.name"));
    check(
        &rule,
        body(r#"{"user": {"name": "Administrator"}}"#),
        &[("user", "dministrtor")],
    );
    let rule = format!("{}regex_filter = \"[^0-9]\"\n", var("nbr", "$.n"));
    check(&rule, body(r#"{"n": "nbr 123"}"#), &[("nbr", "123")]);
    // The filter also applies to the compact root and to every leaf.
    let rule = format!("{}regex_filter = \"o\"\n", var("V", "$.o"));
    check(
        &rule,
        body(r#"{"o": {"k": "foo"}}"#),
        &[("V", r#"{"k":"f"}"#), ("V_k", "f")],
    );
}

#[test]
fn not_flattened_gives_one_variable_with_gson_html_escaping() {
    let rule = format!("{}flatten = false\n", var("user", "$.user"));
    check(
        &rule,
        body(r#"{"user": {"name": "A", "avatar_url": "https://g/?s=80&d=identicon"}}"#),
        &[(
            "user",
            r#"{"name":"A","avatar_url":"https://g/?s\u003d80\u0026d\u003didenticon"}"#,
        )],
    );
    let rule = format!("{}flatten = false\n", var("s", "$.s"));
    check(
        &rule,
        body(r#"{"s": "plain=text"}"#),
        &[("s", "plain=text")],
    );
    let rule = format!("{}flatten = false\ndefault = \"d\"\n", var("n", "$.n"));
    check(&rule, body(r#"{"n": null}"#), &[("n", "d")]);
}

// --- §6.5 defaults -----------------------------------------------------------------------

#[test]
fn defaults_apply_to_unresolved_null_and_empty_values_only() {
    let with_default = |path: &str| format!("{}default = \"api\"\n", var("SERVICE", path));
    check(
        &with_default("$.missing"),
        body(r#"{"a": 1}"#),
        &[("SERVICE", "api")],
    );
    check(
        &with_default("$.n"),
        body(r#"{"n": null}"#),
        &[("SERVICE", "api")],
    );
    check(
        &with_default("$.e"),
        body(r#"{"e": ""}"#),
        &[("SERVICE", "api")],
    );
    check(
        &with_default("$.s"),
        body(r#"{"s": "web"}"#),
        &[("SERVICE", "web")],
    );
    check(&with_default("$.s"), body(""), &[("SERVICE", "api")]);
    // Not regex-filtered, and only the bare name is set.
    let rule = format!(
        "{}default = \"a-b\"\nregex_filter = \"-\"\n",
        var("V", "$.o")
    );
    check(&rule, body(r#"{"x": 1}"#), &[("V", "a-b")]);
    // A filter that deletes the whole value leaves "", which the default replaces.
    let rule = format!(
        "{}default = \"none\"\nregex_filter = \".\"\n",
        var("V", "$.s")
    );
    check(&rule, body(r#"{"s": "abc"}"#), &[("V", "none")]);
}

// --- §6.2 headers and §6.3 query parameters ----------------------------------------------

#[test]
fn header_variables_are_lower_case_with_every_value_indexed() {
    let rule = "[[headers]]\nname = \"X-GitHub-Event\"\n[[headers]]\nname = \"Content-Type\"\n";
    check(
        rule,
        Request {
            headers: &[
                ("x-github-event", "push"),
                ("content-type", "application/json"),
            ],
            ..Request::default()
        },
        &[
            ("x_github_event", "push"),
            ("x_github_event_0", "push"),
            ("content_type", "application/json"),
            ("content_type_0", "application/json"),
        ],
    );
}

#[test]
fn header_with_several_values_keeps_the_bare_name_and_filters_each() {
    // GWT's VariablesResolverHeaderTest.
    let rule = "[[headers]]\nname = \"anotherparam\"\nregex_filter = \"[^e]\"\n";
    check(
        rule,
        Request {
            headers: &[
                ("anotherparam", "another value"),
                ("anotherparam", "even more"),
            ],
            ..Request::default()
        },
        &[
            ("anotherparam", "ee"),
            ("anotherparam_0", "ee"),
            ("anotherparam_1", "eee"),
        ],
    );
    check(rule, Request::default(), &[]);
}

#[test]
fn query_variables_keep_case_and_set_the_bare_name_only_for_one_value() {
    let rule = "[[query]]\nname = \"requestWithNumber\"\nregex_filter = \"[^0-9]\"\n[[query]]\nname = \"multi\"\n[[query]]\nname = \"Absent\"\n";
    check(
        rule,
        Request {
            query: &[
                ("requestWithNumber", "nbr 123"),
                ("multi", "a"),
                ("multi", "b"),
                ("absent", "x"),
            ],
            ..Request::default()
        },
        &[
            ("requestWithNumber", "123"),
            ("requestWithNumber_0", "123"),
            ("multi_0", "a"),
            ("multi_1", "b"),
        ],
    );
}

#[test]
fn later_sources_win_headers_then_query_then_body() {
    let rule = format!(
        "[[headers]]\nname = \"ref\"\n[[query]]\nname = \"ref\"\n[[query]]\nname = \"only_query\"\n{}",
        var("ref", "$.ref")
    );
    check(
        &rule,
        Request {
            body: r#"{"ref": "from-body"}"#,
            headers: &[("ref", "from-header")],
            query: &[("ref", "from-query"), ("only_query", "q")],
        },
        &[
            ("ref", "from-body"),
            ("ref_0", "from-query"),
            ("only_query", "q"),
            ("only_query_0", "q"),
        ],
    );
}

// --- §7 filter ---------------------------------------------------------------------------

fn filter_rule(vars: &str, text: &str, expression: &str) -> String {
    format!("{vars}[filter]\ntext = '''{text}'''\nexpression = '''{expression}'''\n")
}

#[test]
fn no_filter_or_empty_expression_matches() {
    check_filter("", body(""), "", true);
    check_filter(&filter_rule("", "", ""), body(""), "", true);
    check_filter(&filter_rule("", "anything", ""), body(""), "anything", true);
}

#[test]
fn expression_is_searched_in_an_empty_text() {
    check_filter(&filter_rule("", "", "^$"), body(""), "", true);
    check_filter(&filter_rule("", "", "x"), body(""), "", false);
}

#[test]
fn expression_is_found_not_fully_matched_and_is_case_sensitive() {
    let vars = var("ref", "$.ref");
    let push = body(r#"{"ref": "refs/heads/main"}"#);
    check_filter(
        &filter_rule(&vars, "$ref", "main"),
        push,
        "refs/heads/main",
        true,
    );
    let push = body(r#"{"ref": "refs/heads/main"}"#);
    check_filter(
        &filter_rule(&vars, "$ref", "Main"),
        push,
        "refs/heads/main",
        false,
    );
    let push = body(r#"{"ref": "refs/heads/main-2"}"#);
    check_filter(
        &filter_rule(&vars, "$ref", "^refs/heads/main$"),
        push,
        "refs/heads/main-2",
        false,
    );
}

#[test]
fn negative_lookahead_skips_a_pusher() {
    let vars = format!("{}{}", var("ref", "$.ref"), var("pusher", "$.pusher.name"));
    let rule = filter_rule(&vars, "$ref $pusher", "^refs/heads/develop ((?!jenkins))");
    check_filter(
        &rule,
        body(r#"{"ref": "refs/heads/develop", "pusher": {"name": "jenkins"}}"#),
        "refs/heads/develop jenkins",
        false,
    );
    check_filter(
        &rule,
        body(r#"{"ref": "refs/heads/develop", "pusher": {"name": "alice"}}"#),
        "refs/heads/develop alice",
        true,
    );
    let rule = filter_rule(&var("msg", "$.msg"), "$msg", "^(?!.*(second)).*");
    check_filter(
        &rule,
        body(r#"{"msg": "first second"}"#),
        "first second",
        false,
    );
    check_filter(&rule, body(r#"{"msg": "first"}"#), "first", true);
}

#[test]
fn alternation_over_combined_variables() {
    let vars = format!("{}{}", var("action", "$.action"), var("merged", "$.merged"));
    let rule = filter_rule(&vars, "$action $merged", "^opened false$|^closed true$");
    let cases = [
        (
            r#"{"action": "opened", "merged": false}"#,
            "opened false",
            true,
        ),
        (
            r#"{"action": "closed", "merged": true}"#,
            "closed true",
            true,
        ),
        (
            r#"{"action": "closed", "merged": false}"#,
            "closed false",
            false,
        ),
    ];
    for (payload, rendered, matched) in cases {
        check_filter(&rule, body(payload), rendered, matched);
    }
}

#[test]
fn empty_list_is_tested_with_escaped_brackets() {
    let rule = filter_rule(&var("files", "$.commits[*].added[*]"), "$files", "^\\[\\]$");
    check_filter(&rule, body(r#"{"commits": [{"added": []}]}"#), "[]", true);
    check_filter(
        &rule,
        body(r#"{"commits": [{"added": ["x"]}]}"#),
        r#"["x"]"#,
        false,
    );
}

#[test]
fn length_filter_ignores_zero_commits() {
    let rule = filter_rule(&var("count", "$.commits.length()"), "$count", "^[1-9]");
    check_filter(&rule, body(r#"{"commits": []}"#), "0", false);
    check_filter(&rule, body(r#"{"commits": [{"id": 1}]}"#), "1", true);
}

#[test]
fn length_after_a_filter_triggers_only_without_the_label() {
    // GWT's `array-without-attribute-and-avalue.feature`.
    let rule = filter_rule(
        &var("docs", r#"$.labels[?(@.name == "documentation")].length()"#),
        "$docs",
        r"\[\]",
    );
    let labels = |names: &[&str]| {
        let labels: Vec<String> = names
            .iter()
            .map(|name| {
                format!(
                    r#"{{"id":144,"node_id":"MD","url":"https://api.github.com/repos/","name":"{name}","color":"d73","default":true,"description":"d"}}"#
                )
            })
            .collect();
        format!(r#"{{"labels":[{}]}}"#, labels.join(","))
    };
    check_filter(
        &rule,
        body(&labels(&["bug", "documentation"])),
        "[7]",
        false,
    );
    check_filter(&rule, body(&labels(&["bug"])), "[]", true);
    check_filter(&rule, body(&labels(&[])), "[]", true);
}

fn render(text: &str, variables: &Variables) -> String {
    crate::filter::render_text(text, variables, usize::MAX).expect("no limit")
}

fn vars(pairs: &[(&str, &str)]) -> Variables {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn renderer_substitutes_longest_names_first() {
    // GWT's RendererTest order: var2andmore, var31, var3a, var3b, var1, var2.
    let variables = vars(&[
        ("var1", "1"),
        ("var2", "2"),
        ("var2andmore", "M"),
        ("var31", "31"),
        ("var3a", "A"),
        ("var3b", "B"),
    ]);
    assert_eq!(
        render(
            "$var2andmore ${var31} $var3a $var3b ${var1} $var2 $var3",
            &variables
        ),
        "M 31 A B 1 2 $var3"
    );
}

#[test]
fn renderer_quirks_match_gwt() {
    // No word boundaries, unknown names stay, values with `$` or `(` are copied literally.
    assert_eq!(render("$refs", &vars(&[("ref", "main")])), "mains");
    assert_eq!(render("$unknown", &vars(&[("ref", "main")])), "$unknown");
    assert_eq!(render("$a", &vars(&[("a", "(x$1")])), "(x$1");
    // A substituted value is rewritten again by a later, shorter name.
    assert_eq!(render("$aa", &vars(&[("aa", "$b"), ("b", "x")])), "x");
}

#[test]
fn invalid_definitions_are_reported_by_field() {
    #[derive(serde::Deserialize)]
    struct Sections {
        #[serde(default)]
        variables: Vec<VariableEntry>,
        filter: Option<FilterSection>,
    }
    let field = |toml: &str| -> Vec<&'static str> {
        let snippet: Sections = toml::from_str(toml).unwrap();
        BodyVariable::compile(&snippet.variables[0])
            .expect_err("must not compile")
            .into_iter()
            .map(|e| e.field)
            .collect()
    };
    assert_eq!(
        field("[[variables]]\nname = \"V\"\njsonpath = \"$..[?(@.x\""),
        ["jsonpath"]
    );
    assert_eq!(
        field("[[variables]]\nname = \"V\"\njsonpath = \"\""),
        ["jsonpath"]
    );
    assert_eq!(
        field("[[variables]]\nname = \"1 bad\"\njsonpath = \"$.a\"\nregex_filter = \"(\""),
        ["name", "regex_filter"]
    );
    let filter: Sections =
        toml::from_str("[filter]\ntext = \"$a\"\nexpression = \"[z-a]\"").unwrap();
    let errors = Filter::compile(filter.filter.as_ref()).expect_err("must not compile");
    assert_eq!(errors[0].field, "expression");
}

#[test]
fn java_whitespace_only_is_normalised_in_names() {
    check(
        &var("V", "$.o"),
        body("{\"o\": {\"a b\": 1, \"c\\td\": 2, \"e\\u00a0f\": 3}}"),
        &[
            ("V", "{\"a b\":1,\"c\\td\":2,\"e\u{a0}f\":3}"),
            ("V_a_b", "1"),
            ("V_c_d", "2"),
            ("V_e\u{a0}f", "3"),
        ],
    );
}

// --- limits on hostile input ----------------------------------------------------------------

#[test]
fn a_body_that_would_flatten_beyond_the_limit_leaves_the_variable_unresolved() {
    // A long member name above a long list: every flattened name repeats the long name.
    let long = "k".repeat(20_000);
    let list = vec!["0"; 5_000].join(",");
    let payload = format!("{{\"{long}\": [{list}]}}");
    let rule = format!(
        "{}default = \"too-big\"\n{}",
        var("V", "$"),
        var("small", "$.missing")
    );
    let got = run(&rule, &body(&payload)).variables;
    assert_eq!(got.get("V").map(String::as_str), Some("too-big"));
    let total: usize = got.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(total <= MAX_VARIABLE_BYTES, "{total}");
}

#[test]
fn rendering_that_would_explode_is_an_error_not_an_allocation() {
    // `$aa` renders to 20 000 copies of `$b`, each then replaced by 20 000 bytes.
    let variables = vars(&[("aa", &"$b".repeat(20_000)), ("b", &"x".repeat(20_000))]);
    assert_eq!(
        crate::filter::render_text("$aa", &variables, MAX_RENDERED_BYTES),
        None
    );
    let filter = Filter::compile(Some(&FilterSection {
        text: "$aa".to_owned(),
        expression: "x".to_owned(),
    }))
    .unwrap_or_else(compile_error);
    assert!(matches!(
        filter.evaluate(&variables),
        Err(FilterError::TooLong)
    ));
}

#[test]
fn names_sort_by_java_utf16_length() {
    // `é` is two UTF-8 bytes but one UTF-16 unit: `$xé` is as long as `$xy` for Java, and
    // `xy` < `xé`, so `xy` is substituted first.
    let variables = vars(&[("x\u{e9}", "E"), ("xy", "Y"), ("x", "X")]);
    assert_eq!(render("$xy $x\u{e9} $x", &variables), "Y E X");
}

// --- properties ---------------------------------------------------------------------------

/// JSON documents for the property tests here and in `jsonpath` and `shape`: every kind of
/// value, with member names and strings drawn from the given patterns.
pub(super) fn json_documents(
    names: &'static str,
    strings: &'static str,
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        strings.prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((names, inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Definite Jayway paths over the names `json_documents("[ab]{1,2}", …)` produces: dotted and
/// bracketed names, indices, and sometimes a trailing `.length()`.
pub(super) fn definite_paths() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        "[ab]{1,2}".prop_map(|name| format!(".{name}")),
        "[ab]{1,2}".prop_map(|name| format!("['{name}']")),
        (0usize..5).prop_map(|i| format!("[{i}]")),
    ];
    (prop::collection::vec(step, 1..5), any::<bool>()).prop_map(|(steps, length)| {
        let suffix = if length { ".length()" } else { "" };
        format!("${}{suffix}", steps.concat())
    })
}

proptest! {
    /// Flattening never panics, every name it produces starts with the variable's name and has
    /// no `-` or whitespace, and the root's compact JSON reads back as the same document.
    #[test]
    fn flattening_names_and_round_trip(
        doc in json_documents("[a-z -]{0,4}", "[a-z =&<>'\"\\\\\u{1}-]{0,8}"),
    ) {
        let raw = doc.to_string();
        let mut out = Variables::new();
        let variable = BodyVariable::compile(&VariableEntry {
            name: "V".to_owned(),
            jsonpath: "$.doc".to_owned(),
            regex_filter: None,
            default: None,
            flatten: None,
        }).unwrap();
        let wrapped = serde_json::json!({"doc": doc});
        resolve_body(
            std::slice::from_ref(&variable),
            Some(&wrapped),
            &raw,
            &mut out,
            &mut Budget::default(),
        );
        for name in out.keys() {
            prop_assert!(name == "V" || name.starts_with("V_"), "{name}");
            prop_assert!(!name.contains('-') && !name.chars().any(char::is_whitespace), "{name}");
        }
        if matches!(doc, Value::Array(_) | Value::Object(_)) {
            let root: Value = serde_json::from_str(&out["V"]).unwrap();
            // Numbers may change spelling (1e20 → 1.0E20) but not value.
            prop_assert_eq!(normalise(&root), normalise(&doc));
        }
    }
}

/// Compares documents with numbers as f64, since Java spelling changes the text, not the value.
fn normalise(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::from(n.as_f64().unwrap_or_default()),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), normalise(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn invariant_every_regex_runs_under_the_backtrack_limit() {
    // A catastrophic pattern (the back-reference keeps it in fancy-regex's backtracking VM) on
    // a hostile value: the filter gives up with an error instead of running for ever.
    let rule = filter_rule(&var("V", "$.v"), "$V", r"^((a|aa)*)\1c");
    let value = "a".repeat(64);
    let payload = format!("{{\"v\": \"{value}\"}}");
    assert!(matches!(
        evaluate(&rule, &body(&payload)),
        Err(Stopped::FilterFailed {
            error: FilterError::Regex(_),
            ..
        })
    ));
}
