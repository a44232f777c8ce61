//! Jayway JSONPath (the dialect GWT users write) on top of jsonpath-rust (RFC 9535).
//!
//! jsonpath-rust parses the path and decides filter expressions; everything else is done here:
//!
//! - Jayway's spellings (`.['a','b']`, dotted names with `-`) are rewritten into RFC 9535.
//! - Paths are evaluated segment by segment, each segment applied to each node of the current
//!   list in turn, all of a union's selectors for one node before the next node (RFC 9535
//!   §2.5.1.2, and Jayway's per-node token chain). jsonpath-rust 1.0.12 applies each selector of
//!   a union to the whole list instead (`process_selectors` in its `query/segment.rs`), so
//!   `$.commits[*]['modified','added']` came out as every `modified`, then every `added`.
//! - Jayway's trailing `length()`/`size()` is reproduced, including its list of one length per
//!   node after an indefinite path and its rewrite of `$..x.length()` (see [`Length`]).
//! - Jayway's split between *definite* paths (one value, or not found) and *indefinite* ones
//!   (always a list, maybe empty) is kept, and values are returned owned, so the flattener sees
//!   exactly what Jayway would hand to Gson.

use jsonpath_rust::parser::model::{Filter, FilterAtom, JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::Query;
use jsonpath_rust::query::state::State;
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
    /// A trailing `.length()` (or `.size()`).
    length: Option<Length>,
}

/// Jayway's `length()` function (Jayway 2.9.0 `internal/function/text/Length.java`; `size` is
/// the same class, `PathFunctionFactory.java:48-49`), which hookgate supports only at the end of
/// a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// `p.length()` where `p` does not start with `..`: the function token runs once on each
    /// node `p` reaches and adds its answer as one result (`FunctionPathToken.java:38-47`). The
    /// answer is the element count of an array or the member count of an object, and `null` for
    /// anything else, strings included (`Length.java:68-73`). A definite `p` therefore yields
    /// that number (or null), and not found when `p` reaches nothing; an indefinite `p` yields
    /// the list of one answer per node (nulls included), `[]` when it reaches nothing.
    OfEach,
    /// `$..p.length()`: Jayway rewrites it into `length($..p)`
    /// (`CompiledPath.invertScannerFunctionRelationship`, `CompiledPath.java:62-88`), and
    /// `Length.invoke` appends a wildcard to the argument and answers the size of the list
    /// `$..p.*` selects (`Length.java:44-66`): one number, `0` when nothing matches, never not
    /// found. The compiled query already ends in that wildcard.
    OfScan,
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
        let (path, call) = split_length_call(trimmed);
        let (query, length) = match call {
            None => (parse_rfc(path)?, None),
            Some(Call::Dot) => {
                let mut query = parse_rfc(path)?;
                if matches!(query.segments.first(), Some(Segment::Descendant(_))) {
                    check_scan_length(&query.segments)?;
                    query.segments.push(Segment::Selector(Selector::Wildcard));
                    (query, Some(Length::OfScan))
                } else {
                    (query, Some(Length::OfEach))
                }
            }
            // `$..length()`: the argument is `$..` itself, and the appended wildcard makes it
            // `$..*`, every node below the root.
            Some(Call::Scan) if path == "$" => (
                JpQuery::new(vec![Segment::Descendant(Box::new(Segment::Selector(
                    Selector::Wildcard,
                )))]),
                Some(Length::OfScan),
            ),
            Some(Call::Scan) => {
                // Jayway's deep scan has no predicate for a function token
                // (`ScanPathToken.createScanPredicate`, `ScanPathToken.java:90-102`), so
                // `$.a..length()` selects nothing on every document.
                return Err(format!(
                    "`..length()` after `{path}` selects nothing in Jayway; only `$..length()` \
                     counts"
                ));
            }
        };
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
        self.query.segments.is_empty() && self.length.is_none()
    }

    pub fn evaluate(&self, document: &Value) -> Resolved {
        if self.length == Some(Length::OfScan) {
            return Resolved::Value(Value::from(self.select(document).len()));
        }
        let answer = |node: &Value| match self.length {
            Some(_) => jayway_length(node),
            None => node.clone(),
        };
        if !self.definite {
            return Resolved::Value(Value::Array(
                self.select(document).into_iter().map(answer).collect(),
            ));
        }
        let target = match &self.steps {
            Some(steps) => walk(document, steps),
            None => self.select(document).first().copied(),
        };
        match target {
            Some(node) => Resolved::Value(answer(node)),
            None => Resolved::NotFound,
        }
    }

    /// The nodes the path selects, in order: each segment applied to each node of the list the
    /// previous segments left, one node after the other.
    fn select<'v>(&self, document: &'v Value) -> Vec<&'v Value> {
        let mut nodes = vec![document];
        let mut next = Vec::new();
        for segment in &self.query.segments {
            for node in &nodes {
                apply_segment(segment, node, document, &mut next);
            }
            std::mem::swap(&mut nodes, &mut next);
            next.clear();
            if nodes.is_empty() {
                break;
            }
        }
        nodes
    }
}

/// Jayway's `length()` of one node (`Length.java:68-73`): arrays and objects only.
fn jayway_length(node: &Value) -> Value {
    match node {
        Value::Array(items) => Value::from(items.len()),
        Value::Object(members) => Value::from(members.len()),
        _ => Value::Null,
    }
}

/// Appends what `segment` selects from `node` to `out`: a union's selectors one after the other
/// for this node (RFC 9535 §2.5.1.2); a descendant segment's for this node and then for each
/// node below it, depth first in document order (§2.5.2.2, and Jayway's `ScanPathToken.walk`).
fn apply_segment<'v>(
    segment: &Segment,
    node: &'v Value,
    root: &'v Value,
    out: &mut Vec<&'v Value>,
) {
    match segment {
        Segment::Selector(selector) => apply_selector(selector, node, root, out),
        Segment::Selectors(selectors) => {
            for selector in selectors {
                apply_selector(selector, node, root, out);
            }
        }
        Segment::Descendant(inner) => {
            apply_segment(inner, node, root, out);
            for child in children(node) {
                apply_segment(segment, child, root, out);
            }
        }
    }
}

/// One selector on one node, as RFC 9535 §2.3 (and jsonpath-rust's `query/selector.rs`)
/// defines it.
fn apply_selector<'v>(
    selector: &Selector,
    node: &'v Value,
    root: &'v Value,
    out: &mut Vec<&'v Value>,
) {
    match (selector, node) {
        (Selector::Name(name), Value::Object(members)) => out.extend(members.get(name)),
        (Selector::Index(index), Value::Array(items)) => out.extend(element(items, *index)),
        (Selector::Slice(start, end, step), Value::Array(items)) => {
            slice(items, *start, *end, *step, out);
        }
        (Selector::Wildcard, _) => out.extend(children(node)),
        (Selector::Filter(filter), _) => {
            out.extend(children(node).filter(|child| matches_filter(filter, child, root)));
        }
        _ => {}
    }
}

/// An array's elements or an object's member values, in document order.
fn children(node: &Value) -> impl Iterator<Item = &Value> {
    let (items, members) = match node {
        Value::Array(items) => (items.as_slice(), None),
        Value::Object(members) => (&[][..], Some(members)),
        _ => (&[][..], None),
    };
    items
        .iter()
        .chain(members.into_iter().flat_map(|members| members.values()))
}

/// An index selector: from the start, or from the end when negative.
fn element(items: &[Value], index: i64) -> Option<&Value> {
    if index >= 0 {
        items.get(usize::try_from(index).ok()?)
    } else {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        items.get(items.len().checked_sub(back)?)
    }
}

/// A slice selector (RFC 9535 §2.3.4.2.2), bounds normalised and clamped as jsonpath-rust's
/// `process_slice` does.
fn slice<'v>(
    items: &'v [Value],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    out: &mut Vec<&'v Value>,
) {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let normalise = |i: i64| if i >= 0 { i } else { len + i };
    let mut push = |i: i64| {
        if let Some(item) = usize::try_from(i).ok().and_then(|i| items.get(i)) {
            out.push(item);
        }
    };
    match step.unwrap_or(1) {
        step if step > 0 => {
            let upper = normalise(end.unwrap_or(len)).clamp(0, len);
            let mut i = normalise(start.unwrap_or(0)).clamp(0, len);
            while i < upper {
                push(i);
                i = i.saturating_add(step);
            }
        }
        step if step < 0 => {
            let lower = normalise(end.unwrap_or(-len - 1)).clamp(-1, len - 1);
            let mut i = normalise(start.unwrap_or(len - 1)).clamp(-1, len - 1);
            while lower < i {
                push(i);
                i = i.saturating_add(step);
            }
        }
        _ => {}
    }
}

/// Whether `item` passes a filter expression, `$` in it being `root`. The logical operators are
/// applied here, each comparison or test is decided by jsonpath-rust, as its
/// `Filter::process_elem` does. One deliberate difference: jsonpath-rust marks the item under
/// test with an empty path, so a filter applied to `@` itself (`[?(@[?(@ > 1)])]`) answers a
/// boolean there instead of a node list and never matches; here `@` is an ordinary node.
fn matches_filter(filter: &Filter, item: &Value, root: &Value) -> bool {
    match filter {
        Filter::Or(any) => any.iter().any(|f| matches_filter(f, item, root)),
        Filter::And(all) => all.iter().all(|f| matches_filter(f, item, root)),
        Filter::Atom(FilterAtom::Filter { expr, not }) => matches_filter(expr, item, root) != *not,
        Filter::Atom(atom) => {
            // A state whose root is the document and whose current node (`@`) is `item`.
            let state = State::data(root, State::root(item).data);
            atom.process(state)
                .ok_val()
                .and_then(|answer| answer.as_bool())
                .unwrap_or_default()
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

/// How a trailing `length()` (or `size()`) is attached to the path before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `p.length()`
    Dot,
    /// `p..length()`
    Scan,
}

fn split_length_call(path: &str) -> (&str, Option<Call>) {
    for name in ["length()", "size()"] {
        if let Some(before) = path.strip_suffix(name) {
            if let Some(path) = before.strip_suffix("..") {
                return (path, Some(Call::Scan));
            }
            if let Some(path) = before.strip_suffix('.') {
                return (path, Some(Call::Dot));
            }
        }
    }
    (path, None)
}

fn parse_rfc(path: &str) -> Result<JpQuery, String> {
    let rfc = translate(path)?;
    parse_json_path(&rfc).map_err(|e| format!("invalid JSONPath: {e}"))
}

/// One of Jayway's path tokens, as far as `$..p.length()` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Scan,
    Wildcard,
    Property,
    /// An index, slice or filter.
    Other,
}

fn token(segment: &Segment) -> Token {
    match segment {
        Segment::Selector(Selector::Wildcard) => Token::Wildcard,
        Segment::Selector(Selector::Name(_)) => Token::Property,
        Segment::Selectors(selectors)
            if selectors.iter().all(|s| matches!(s, Selector::Name(_))) =>
        {
            Token::Property
        }
        _ => Token::Other,
    }
}

/// Refuses the forms of `$..p.length()` whose Jayway answer is not the size of `$..p.*`:
///
/// - `p` ending in a wildcard, index, slice or filter right after a `..` (`$..*.length()`,
///   `$..[0].length()`): the appended wildcard then follows the scanned token, and
///   `ScanPathToken.walkArray` (`ScanPathToken.java:47-63`) applies it to every element of each
///   array it walks, and `PathToken.handleObjectProperty` (`PathToken.java:83-88`) drops object
///   members once an array has been walked.
/// - a wildcard in `p` followed by anything but wildcards (`$..a[*].b.length()`): after each
///   evaluation `FunctionPathToken.cleanWildcardPathToken` (`FunctionPathToken.java:49-64`)
///   unlinks the first wildcard after the `..` from the cached compiled path, so from the second
///   request on Jayway evaluates a different path (`$..a.b.*.*`).
fn check_scan_length(segments: &[Segment]) -> Result<(), String> {
    let mut tokens = Vec::with_capacity(segments.len() + 1);
    for segment in segments {
        if let Segment::Descendant(inner) = segment {
            tokens.push(Token::Scan);
            tokens.push(token(inner));
        } else {
            tokens.push(token(segment));
        }
    }
    let after_scan = tokens.len() >= 2 && tokens[tokens.len() - 2] == Token::Scan;
    if after_scan && tokens.last() != Some(&Token::Property) {
        return Err(
            "`length()` after `..` and a wildcard, index, slice or filter is not supported: \
             Jayway's deep scan miscounts it"
                .to_owned(),
        );
    }
    // tokens[0] is the leading `..`; the search for a wildcard starts after it.
    if let Some(first) = tokens.iter().skip(1).position(|t| *t == Token::Wildcard)
        && tokens[1 + first..].iter().any(|t| *t != Token::Wildcard)
    {
        return Err(
            "`length()` after `$..` and a wildcard that is followed by more path is not \
             supported: Jayway answers it differently from the second evaluation on"
                .to_owned(),
        );
    }
    Ok(())
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
                    // Jayway parses the path after a function's `()` as a member named `)`
                    // (`PathCompiler.readPropertyOrFunctionToken`), which no number has.
                    return Err(match name.as_str() {
                        "length" | "size" => {
                            format!("`{name}()` is supported only at the end of the path")
                        }
                        _ => format!(
                            "function `{name}()` is not supported (only a trailing `.length()`)"
                        ),
                    });
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
        for unsupported in [
            // Other Jayway functions, and `length()` anywhere but at the end: Jayway reads the
            // rest as a member named `)` (`PathCompiler.readPropertyOrFunctionToken`).
            "$.a.max()",
            "$.a.length().b",
            "$.a.size()[0]",
            "$.a.length().length()",
            // `..length()` after a path: Jayway's scan has no predicate for a function token
            // (`ScanPathToken.createScanPredicate`), so it never selects anything.
            "$.a..length()",
            // `$..p.length()` forms whose Jayway count is not the size of `$..p.*`.
            "$..*.length()",
            "$..[0].length()",
            "$..[?(@.a)].length()",
            "$..a[*].b.length()",
            "$..*.a.length()",
        ] {
            assert!(JaywayPath::compile(unsupported).is_err(), "{unsupported}");
        }
        for supported in [
            "$..a.length()",
            "$..a.*.length()",
            "$..a.*.*.size()",
            "$..length()",
        ] {
            assert!(JaywayPath::compile(supported).is_ok(), "{supported}");
        }
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

    /// Every case of Jayway 2.9.0's `length()`, with the Jayway source or test it comes from.
    #[test]
    fn length_answers_as_jayway_does() {
        let doc = json!({
            "a": [1, 2, 3], "o": {"x": 1, "y": 2}, "e": [], "s": "text", "n": 5, "t": true,
            "z": null, "nested": [[1, 2], [3]],
            "mixed": [[1, 2], {"k": 1}, "str", 5, true, null],
            "store": {"book": [{"t": "a"}, {"t": "b"}, {"t": "c"}, {"t": "d"}],
                      "bicycle": {"color": "red"}},
        });
        let cases: &[(&str, Resolved, &str)] = &[
            // Definite paths: one number, or null, or not found.
            (
                "$.a.length()",
                Resolved::Value(json!(3)),
                "array size, Length.java:68-69; JSONEntityPathFunctionTest.testLengthOfNumberArray",
            ),
            (
                "$.a.size()",
                Resolved::Value(json!(3)),
                "`size` is Length too, PathFunctionFactory.java:49; JSONEntityPathFunctionTest:61,67",
            ),
            (
                "$.o.length()",
                Resolved::Value(json!(2)),
                "member count, Length.java:70-71; JSONEntityPathFunctionTest.testLengthOfStructure",
            ),
            (
                "$.e.length()",
                Resolved::Value(json!(0)),
                "Length.java:68-69",
            ),
            (
                "$.length()",
                Resolved::Value(json!(10)),
                "the root is a map, Length.java:70-71",
            ),
            (
                "$.nested[-1].length()",
                Resolved::Value(json!(1)),
                "Length.java:68-69",
            ),
            (
                "$.s.length()",
                Resolved::Value(Value::Null),
                "a string is neither array nor map: null, Length.java:73; the null is the path's \
              one result, EvaluationContextImpl.getValue:137-149, FunctionPathToken.java:42",
            ),
            (
                "$.n.length()",
                Resolved::Value(Value::Null),
                "Length.java:73",
            ),
            (
                "$.t.length()",
                Resolved::Value(Value::Null),
                "Length.java:73",
            ),
            (
                "$.z.length()",
                Resolved::Value(Value::Null),
                "Length.java:73",
            ),
            (
                "$.zzz.length()",
                Resolved::NotFound,
                "missing member before the function on a definite path throws, PathToken.java:69-79",
            ),
            (
                "$.a[7].length()",
                Resolved::NotFound,
                "no result on a definite path, EvaluationContextImpl.getValue:138-142",
            ),
            (
                "$.s.x.length()",
                Resolved::NotFound,
                "a member of a non-object throws, PropertyPathToken.java:66-77",
            ),
            // Indefinite paths: one answer per node, in order, null for what is not countable.
            (
                "$.nested[*].length()",
                Resolved::Value(json!([2, 1])),
                "one result per node, FunctionPathToken.java:38-47; \
              JSONEntityPathFunctionTest.testPredicateWithFunctionCallTwoMatches",
            ),
            (
                "$.mixed[*].length()",
                Resolved::Value(json!([2, 1, null, null, null, null])),
                "Length.java:68-73; null results are added, EvaluationContextImpl.addResult:81-89 \
              and AbstractJsonProvider.setArrayIndex:51-62",
            ),
            (
                "$.e[*].length()",
                Resolved::Value(json!([])),
                "no node reaches the function",
            ),
            (
                "$.mixed[*].zzz.length()",
                Resolved::Value(json!([])),
                "missing members are skipped on an indefinite path, PathToken.java:70-76",
            ),
            (
                "$['o','a'].length()",
                Resolved::Value(json!([2, 3])),
                "a non-leaf multi-member token iterates, PropertyPathToken.java:84-90",
            ),
            // `$..p.length()` is `length($..p)`: the size of `$..p.*`, one number.
            (
                "$..book.length()",
                Resolved::Value(json!(4)),
                "CompiledPath.java:62-88 and Length.java:44-66; Issue_786.java ($..book.length() == 4)",
            ),
            (
                "$..nothing.length()",
                Resolved::Value(json!(0)),
                "the argument path is indefinite: an empty list, Length.java:63-65",
            ),
            (
                "$..t.length()",
                Resolved::Value(json!(0)),
                "`true` and the four titles match, and scalars have no children (the appended \
              wildcard selects nothing on them, WildcardPathToken.java:34-50)",
            ),
        ];
        for (path, expected, source) in cases {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(&compiled.evaluate(&doc), expected, "{path}: {source}");
        }
        // Children of every match, summed over matches: 2 + 3 + 0.
        let several = json!({"x": [1, 2], "y": {"x": {"a": 1, "b": 2, "c": 3}}, "z": [{"x": "s"}]});
        let compiled = JaywayPath::compile("$..x.length()").unwrap();
        assert_eq!(compiled.evaluate(&several), Resolved::Value(json!(5)));
        // `$..length()`: `$..*`, every node below the root (x, 1, 2, y, y.x, a, b, c, z, z[0], s).
        let compiled = JaywayPath::compile("$..length()").unwrap();
        assert_eq!(compiled.evaluate(&several), Resolved::Value(json!(11)));
    }

    /// GWT's `array-without-attribute-and-avalue.feature`: the filter matches one label of 7
    /// members, then none.
    #[test]
    fn length_after_a_filter_is_a_list_as_in_the_gwt_feature() {
        let path =
            JaywayPath::compile(r#"$.labels[?(@.name == "documentation")].length()"#).unwrap();
        let label = |name: &str| {
            json!({"id": 1, "node_id": "MD", "url": "u", "name": name, "color": "d73",
                   "default": true, "description": "d"})
        };
        let both = json!({"labels": [label("bug"), label("documentation")]});
        assert_eq!(path.evaluate(&both), Resolved::Value(json!([7])));
        let bug = json!({"labels": [label("bug")]});
        assert_eq!(path.evaluate(&bug), Resolved::Value(json!([])));
        assert_eq!(
            path.evaluate(&json!({"labels": []})),
            Resolved::Value(json!([]))
        );
    }

    /// Unions after a wildcard, index list, slice, filter or descendant segment: each node's
    /// selections in turn (RFC 9535 §2.5.1.2; Jayway evaluates the token chain per node, and a
    /// multi-member token iterates its names per node, `PropertyPathToken.java:84-90`, as a
    /// multi-index token does its indices, `ArrayIndexToken.java:36-38`).
    #[test]
    fn unions_are_applied_node_by_node() {
        let commits = json!({"commits": [
            {"modified": ["m1"], "added": ["a1"], "removed": ["r1"]},
            {"modified": ["m2"], "added": [], "removed": []},
        ]});
        let matrix = json!({"m": [[1, 2, 3], [4, 5, 6]]});
        let items = json!({"want": "y", "a": [
            {"k": 1, "x": "x0", "y": "y0"},
            {"x": "x1", "y": "y1"},
            {"k": 2, "x": "x2", "y": "y2", "v": "y"},
        ]});
        let tree = json!({"a": 1, "b": 2, "c": {"b": 3, "a": 4, "d": [{"a": 5}]}});
        let cases: &[(&str, &Value, Value)] = &[
            (
                "$.commits[*].['modified','added','removed'][*]",
                &commits,
                json!(["m1", "a1", "r1", "m2"]),
            ),
            (
                "$.commits[*]['removed','modified']",
                &commits,
                json!([["r1"], ["m1"], [], ["m2"]]),
            ),
            ("$.m[*][0,2]", &matrix, json!([1, 3, 4, 6])),
            ("$.m[*][-1,0]", &matrix, json!([3, 1, 6, 4])),
            ("$.m[0:2][2,1]", &matrix, json!([3, 2, 6, 5])),
            (
                "$.a[0:3:2]['y','x']",
                &items,
                json!(["y0", "x0", "y2", "x2"]),
            ),
            (
                "$.a[?(@.k)]['y','x']",
                &items,
                json!(["y0", "x0", "y2", "x2"]),
            ),
            // A filter that reads the root still sees the document's root.
            (
                "$.a[?(@.v == $.want)]['y','x']",
                &items,
                json!(["y2", "x2"]),
            ),
            ("$.a[*]['x','y'][0]", &items, json!([])),
            // Descendants: each node, depth first in document order, then its selections.
            ("$..['a','b']", &tree, json!([1, 2, 4, 3, 5])),
            (
                "$..[*]",
                &json!({"p": [1, [2]], "q": 3}),
                json!([[1, [2]], 3, 1, [2], 2]),
            ),
            (
                "$..[1,0]",
                &json!({"p": [1, [2, 3]]}),
                json!([[2, 3], 1, 3, 2]),
            ),
        ];
        for (path, doc, expected) in cases {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(
                compiled.evaluate(doc),
                Resolved::Value(expected.clone()),
                "{path}"
            );
        }
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

    mod properties {
        use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
        use jsonpath_rust::query::js_path_process;
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::{JaywayPath, walk};
        use crate::extract::tests::{definite_paths, json_documents};

        /// What jsonpath-rust selects for the whole query.
        fn jsonpath_rust(query: &JpQuery, doc: &Value) -> Vec<Value> {
            js_path_process(query, doc)
                .unwrap()
                .into_iter()
                .map(|hit| hit.val.clone())
                .collect()
        }

        /// The reference for per-node order: each segment on each node in turn, and a union
        /// as each of its selectors on that node in turn, every single selector evaluated by
        /// jsonpath-rust with the node as root (where its order is right).
        fn per_node(segments: &[Segment], doc: &Value) -> Vec<Value> {
            fn selectors(segment: &Segment) -> Vec<Selector> {
                match segment {
                    Segment::Selector(selector) => vec![selector.clone()],
                    Segment::Selectors(selectors) => selectors.clone(),
                    Segment::Descendant(_) => unreachable!("no nested descendants"),
                }
            }
            fn on(segment: &Segment, node: &Value, out: &mut Vec<Value>) {
                for selector in selectors(segment) {
                    let query = JpQuery::new(vec![Segment::Selector(selector)]);
                    out.extend(jsonpath_rust(&query, node));
                }
            }
            fn descend(segment: &Segment, node: &Value, out: &mut Vec<Value>) {
                on(segment, node, out);
                match node {
                    Value::Array(items) => items.iter().for_each(|i| descend(segment, i, out)),
                    Value::Object(members) => {
                        members.values().for_each(|v| descend(segment, v, out));
                    }
                    _ => {}
                }
            }
            let mut nodes = vec![doc.clone()];
            for segment in segments {
                let mut next = Vec::new();
                for node in &nodes {
                    match segment {
                        Segment::Descendant(inner) => descend(inner, node, &mut next),
                        other => on(other, node, &mut next),
                    }
                }
                nodes = next;
            }
            nodes
        }

        fn name() -> impl Strategy<Value = String> {
            "[ab]{1,2}"
        }

        /// Filters over the generated documents; `root` adds ones that read `$`.
        fn filter(root: bool) -> BoxedStrategy<String> {
            let local = prop_oneof![
                name().prop_map(|n| format!("[?(@.{n})]")),
                name().prop_map(|n| format!("[?(!@.{n})]")),
                (name(), name()).prop_map(|(a, b)| format!("[?(@.{a} || @['{b}'])]")),
                (name(), name()).prop_map(|(a, b)| format!("[?((@.{a}) && @.{b} == true)]")),
                Just("[?(@ == null)]".to_owned()),
                Just("[?(@ > 0)]".to_owned()),
                name().prop_map(|n| format!("[?(length(@.{n}) >= 1)]")),
            ];
            if root {
                prop_oneof![
                    local,
                    (name(), name()).prop_map(|(a, b)| format!("[?(@.{a} == $.{b})]")),
                    name().prop_map(|n| format!("[?($.{n})]")),
                ]
                .boxed()
            } else {
                local.boxed()
            }
        }

        /// One single-selector segment, in Jayway's spelling.
        fn single(root: bool) -> BoxedStrategy<String> {
            prop_oneof![
                name().prop_map(|n| format!(".{n}")),
                name().prop_map(|n| format!("['{n}']")),
                Just("[*]".to_owned()),
                Just(".*".to_owned()),
                (-3i64..4).prop_map(|i| format!("[{i}]")),
                (-3i64..4, -3i64..4).prop_map(|(a, b)| format!("[{a}:{b}]")),
                (
                    prop::option::of(-3i64..4),
                    prop::option::of(-3i64..4),
                    -2i64..3
                )
                    .prop_map(|(a, b, step)| {
                        let bound = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                        format!("[{}:{}:{step}]", bound(a), bound(b))
                    }),
                filter(root),
                name().prop_map(|n| format!("..{n}")),
                Just("..*".to_owned()),
                (-2i64..3).prop_map(|i| format!("..[{i}]")),
            ]
            .boxed()
        }

        /// A union segment: names, indices, or mixed selectors, maybe after `..`.
        fn union() -> impl Strategy<Value = String> {
            let selector = prop_oneof![
                name().prop_map(|n| format!("'{n}'")),
                (-3i64..4).prop_map(|i| i.to_string()),
                (0i64..3, 0i64..4).prop_map(|(a, b)| format!("{a}:{b}")),
                Just("*".to_owned()),
                name().prop_map(|n| format!("?(@.{n})")),
            ];
            (
                prop::collection::vec(selector, 2..4),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(selectors, descendant, dot)| {
                    let lead = if descendant {
                        ".."
                    } else if dot {
                        "."
                    } else {
                        ""
                    };
                    format!("{lead}[{}]", selectors.join(","))
                })
        }

        proptest! {
            /// The direct walk selects exactly what jsonpath-rust selects for a definite path.
            #[test]
            fn walking_agrees_with_jsonpath_rust(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                path in definite_paths(),
            ) {
                let compiled = JaywayPath::compile(&path).unwrap();
                let steps = compiled.steps().expect("definite path has steps");
                let first = jsonpath_rust(&compiled.query, &doc).into_iter().next();
                prop_assert_eq!(walk(&doc, steps).cloned(), first, "{}", path);
            }

            /// Without unions jsonpath-rust's order is right, and the adapter's evaluation
            /// selects the same nodes in the same order, filters reading `$` included.
            #[test]
            fn single_selector_paths_agree_with_jsonpath_rust(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                segments in prop::collection::vec(single(true), 0..5),
            ) {
                let path = format!("${}", segments.concat());
                let compiled = JaywayPath::compile(&path).unwrap();
                let ours: Vec<Value> = compiled.select(&doc).into_iter().cloned().collect();
                prop_assert_eq!(ours, jsonpath_rust(&compiled.query, &doc), "{}", path);
            }

            /// With unions anywhere (after wildcards, index lists, slices, filters, `..`), the
            /// selection is each node's in turn.
            #[test]
            fn unions_follow_per_node_order(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                before in prop::collection::vec(single(false), 0..3),
                unions in prop::collection::vec(union(), 1..3),
                after in prop::collection::vec(single(false), 0..2),
            ) {
                let path = format!("${}{}{}", before.concat(), unions.concat(), after.concat());
                let compiled = JaywayPath::compile(&path).unwrap();
                let ours: Vec<Value> = compiled.select(&doc).into_iter().cloned().collect();
                prop_assert_eq!(ours, per_node(&compiled.query.segments, &doc), "{}", path);
            }
        }
    }
}
