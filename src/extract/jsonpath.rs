//! Jayway JSONPath (the dialect GWT users write) on top of jsonpath-rust (RFC 9535).
//!
//! The adapter does three things jsonpath-rust does not: it accepts Jayway's spellings
//! (`.['a','b']`, dotted names with `-`, a trailing `.length()`), it keeps Jayway's split between
//! *definite* paths (one value, or not found) and *indefinite* ones (always a list, maybe empty),
//! and it returns owned values so the flattener sees exactly what Jayway would hand to Gson.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use super::CompileCache;

/// A compiled path in Jayway's dialect.
#[derive(Debug, Clone)]
pub struct JaywayPath {
    query: JpQuery,
    definite: bool,
    /// The path as plain steps, when it is definite with no index from the end: evaluated by
    /// a direct walk, and the only kind of path a pruned parse can serve (see `shape`).
    steps: Option<Vec<Step>>,
    /// A trailing `.length()` (or `.size()`): answer the size of what the path selects.
    length: bool,
}

/// One step of a definite path: a member name or an element index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Name(String),
    Index(usize),
}

/// What a path yields on a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// A definite path that selected nothing: GWT's `PathNotFoundException`.
    NotFound,
    Value(Value),
}

impl JaywayPath {
    /// Compiles `expression`, sharing the parse between rules that use the same path (with
    /// thousands of rules, the same few paths repeat).
    pub fn compile(expression: &str) -> Result<Self, String> {
        static PARSED: CompileCache<JaywayPath> = CompileCache::new();
        PARSED.get_or_compile(expression, Self::parse)
    }

    fn parse(expression: &str) -> Result<Self, String> {
        let trimmed = expression.trim();
        let (path, length) = strip_length_function(trimmed);
        let rfc = translate(path)?;
        let query = parse_json_path(&rfc).map_err(|e| format!("invalid JSONPath: {e}"))?;
        let definite = query.segments.iter().all(|segment| {
            matches!(
                segment,
                Segment::Selector(Selector::Name(_) | Selector::Index(_))
            )
        });
        let steps = query
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Selector(Selector::Name(name)) => Some(Step::Name(name.clone())),
                Segment::Selector(Selector::Index(index)) => {
                    usize::try_from(*index).ok().map(Step::Index)
                }
                _ => None,
            })
            .collect::<Option<Vec<Step>>>();
        Ok(Self {
            query,
            definite,
            steps,
            length,
        })
    }

    /// The path's steps when it is definite and counts no index from the end.
    pub fn steps(&self) -> Option<&[Step]> {
        self.steps.as_deref()
    }

    /// Whether the path is the whole document (`$`), which GWT answers with the raw body.
    pub fn is_root(&self) -> bool {
        self.query.segments.is_empty() && !self.length
    }

    pub fn evaluate(&self, document: &Value) -> Resolved {
        let selected = match &self.steps {
            Some(steps) => match walk(document, steps) {
                Some(value) => value.clone(),
                None => return Resolved::NotFound,
            },
            None => match self.select(document) {
                Some(value) => value,
                None => return Resolved::NotFound,
            },
        };
        if !self.length {
            return Resolved::Value(selected);
        }
        // Jayway's length() counts array elements, object members or string characters.
        let size = match &selected {
            Value::Array(items) => items.len(),
            Value::Object(members) => members.len(),
            Value::String(text) => text.chars().count(),
            _ => return Resolved::NotFound,
        };
        Resolved::Value(Value::from(size))
    }

    /// What jsonpath-rust selects: one value for a definite path (`None` when not found), a
    /// list for an indefinite one.
    fn select(&self, document: &Value) -> Option<Value> {
        // jsonpath-rust only fails on malformed function results, which the grammar already
        // excludes for the paths `compile` accepts; treat any failure as "not found", as GWT
        // treats every evaluation exception.
        let hits = js_path_process(&self.query, document).ok()?;
        if self.definite {
            hits.into_iter().next().map(|hit| hit.val.clone())
        } else {
            Some(Value::Array(
                hits.into_iter().map(|hit| hit.val.clone()).collect(),
            ))
        }
    }
}

/// Follows plain steps: a name selects an object's member, an index an array's element, and
/// anything else selects nothing (RFC 9535, as jsonpath-rust evaluates them).
fn walk<'v>(mut value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Name(name), Value::Object(members)) => members.get(name)?,
            (Step::Index(index), Value::Array(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

fn strip_length_function(path: &str) -> (&str, bool) {
    for suffix in [".length()", ".size()"] {
        if let Some(stripped) = path.strip_suffix(suffix) {
            return (stripped, true);
        }
    }
    (path, false)
}

/// Rewrites Jayway spellings into RFC 9535: every dotted name becomes a bracketed name (so
/// `x-gitlab-event` or `1st` work), and Jayway's `.[` becomes `[`. Quoted strings are copied
/// untouched; only dots that continue a path (after `$`, `@`, a name or a `]`) are rewritten,
/// so numbers such as `1.5` inside filters are left alone.
fn translate(path: &str) -> Result<String, String> {
    let chars: Vec<char> = path.chars().collect();
    let mut out = String::with_capacity(path.len() + 8);
    // Whether the characters just written continue a path, per open bracket or parenthesis.
    let mut outer: Vec<bool> = Vec::new();
    let mut in_path = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let end = closing_quote(&chars, i)
                    .ok_or_else(|| format!("unterminated string starting at offset {i}"))?;
                out.extend(&chars[i..=end]);
                i = end + 1;
                in_path = false;
                continue;
            }
            '$' | '@' => {
                out.push(c);
                in_path = true;
            }
            '.' if in_path => {
                let descendant = chars.get(i + 1) == Some(&'.');
                let start = if descendant { i + 2 } else { i + 1 };
                match chars.get(start) {
                    Some('[') => {
                        // `..[` is RFC already; Jayway's `.[` loses its dot.
                        if descendant {
                            out.push_str("..");
                        }
                        i = start;
                        continue;
                    }
                    Some('*') => {
                        out.push_str(if descendant { "..*" } else { ".*" });
                        i = start + 1;
                        continue;
                    }
                    _ => {}
                }
                let end = (start..chars.len())
                    .find(|&j| is_name_end(chars[j]))
                    .unwrap_or(chars.len());
                if end == start {
                    return Err(format!("empty name after `.` at offset {i}"));
                }
                if chars.get(end) == Some(&'(') {
                    let name: String = chars[start..end].iter().collect();
                    return Err(format!(
                        "function `{name}()` is not supported (only a trailing `.length()`)"
                    ));
                }
                if descendant {
                    out.push_str("..");
                }
                out.push_str("['");
                for &n in &chars[start..end] {
                    if n == '\'' || n == '\\' {
                        out.push('\\');
                    }
                    out.push(n);
                }
                out.push_str("']");
                i = end;
                continue;
            }
            '[' | '(' => {
                out.push(c);
                outer.push(in_path && c == '[');
                in_path = false;
            }
            ']' | ')' => {
                out.push(c);
                in_path = outer.pop().unwrap_or(false);
            }
            _ => {
                out.push(c);
                in_path = false;
            }
        }
        i += 1;
    }
    Ok(out)
}

fn is_name_end(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '.' | '[' | ']' | '(' | ')' | ',' | '=' | '!' | '<' | '>' | '&' | '|' | '\'' | '"'
        )
}

fn closing_quote(chars: &[char], open: usize) -> Option<usize> {
    let quote = chars[open];
    let mut j = open + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            c if c == quote => return Some(j),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jayway_spellings_become_rfc_9535() {
        let cases = [
            ("$", "$"),
            ("$.a.b", "$['a']['b']"),
            ("$.x-gitlab.kind", "$['x-gitlab']['kind']"),
            (
                "$.commits[*].['modified','added','removed'][*]",
                "$['commits'][*]['modified','added','removed'][*]",
            ),
            ("$..id", "$..['id']"),
            ("$..[0]", "$..[0]"),
            ("$.a.*", "$['a'].*"),
            (
                "$.items[?(@.name == 'x.y')].value",
                "$['items'][?(@['name'] == 'x.y')]['value']",
            ),
            ("$.a[?(@.n > 1.5)]", "$['a'][?(@['n'] > 1.5)]"),
            ("$.a_b-c", "$['a_b-c']"),
        ];
        for (jayway, rfc) in cases {
            assert_eq!(translate(jayway).as_deref(), Ok(rfc), "{jayway}");
        }
    }

    #[test]
    fn unsupported_functions_and_broken_paths_are_errors() {
        assert!(JaywayPath::compile("$.a.min()").is_err());
        assert!(JaywayPath::compile("$.a['x").is_err());
        assert!(JaywayPath::compile("$..[?(@.x").is_err());
        assert!(JaywayPath::compile("$.").is_err());
    }

    #[test]
    fn definite_paths_answer_one_value_or_not_found() {
        let doc = json!({"a": {"b": [1, 2]}});
        let path = JaywayPath::compile("$.a.b[1]").unwrap();
        assert_eq!(path.evaluate(&doc), Resolved::Value(json!(2)));
        let missing = JaywayPath::compile("$.a.c").unwrap();
        assert_eq!(missing.evaluate(&doc), Resolved::NotFound);
        let out_of_range = JaywayPath::compile("$.a.b[5]").unwrap();
        assert_eq!(out_of_range.evaluate(&doc), Resolved::NotFound);
    }

    #[test]
    fn indefinite_paths_always_answer_a_list() {
        let doc = json!({"a": [{"n": 1}, {"n": 2}], "b": {}});
        let star = JaywayPath::compile("$.a[*].n").unwrap();
        assert_eq!(star.evaluate(&doc), Resolved::Value(json!([1, 2])));
        let none = JaywayPath::compile("$.b[*]").unwrap();
        assert_eq!(none.evaluate(&doc), Resolved::Value(json!([])));
        let union = JaywayPath::compile("$.a[0]['n','m']").unwrap();
        assert_eq!(union.evaluate(&doc), Resolved::Value(json!([1])));
        let filter = JaywayPath::compile("$.a[?(@.n == 2)].n").unwrap();
        assert_eq!(filter.evaluate(&doc), Resolved::Value(json!([2])));
    }

    #[test]
    fn length_counts_what_the_path_selects() {
        let doc = json!({"a": [1, 2, 3], "o": {"x": 1}, "e": []});
        let cases = [
            ("$.a.length()", 3),
            ("$.o.length()", 1),
            ("$.e.length()", 0),
        ];
        for (path, expected) in cases {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(compiled.evaluate(&doc), Resolved::Value(json!(expected)));
        }
        let missing = JaywayPath::compile("$.zzz.length()").unwrap();
        assert_eq!(missing.evaluate(&doc), Resolved::NotFound);
    }

    #[test]
    fn descendant_order_is_jayway_pre_order() {
        // GWT's own example: `$..id` on a GitLab note event answers [28, 1, "1c3e…"].
        let doc = json!({
            "object_attributes": {"id": 28, "author": {"id": 1}},
            "commit": {"id": "1c3e"}
        });
        let path = JaywayPath::compile("$..id").unwrap();
        assert_eq!(path.evaluate(&doc), Resolved::Value(json!([28, 1, "1c3e"])));
    }

    mod walking {
        use proptest::prelude::*;

        use super::super::{JaywayPath, walk};
        use crate::extract::tests::{definite_paths, json_documents};

        proptest! {
            /// The direct walk selects exactly what jsonpath-rust selects for a definite path.
            #[test]
            fn walking_agrees_with_jsonpath_rust(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                path in definite_paths(),
            ) {
                let compiled = JaywayPath::compile(&path).unwrap();
                let steps = compiled.steps().expect("definite path has steps");
                prop_assert_eq!(walk(&doc, steps).cloned(), compiled.select(&doc), "{}", path);
            }
        }
    }
}
