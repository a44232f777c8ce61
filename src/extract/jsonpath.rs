//! Jayway JSONPath 2.9.0 (the dialect GWT users write, evaluated as GWT's `JsonPath.read` does
//! with the default configuration) on top of jsonpath-rust's parser and filter expressions.
//!
//! - Jayway's spellings (`.['a','b']`, dotted names with `-`, a path without `$`) are rewritten
//!   into RFC 9535, which jsonpath-rust parses.
//! - The parsed segments become Jayway's token chain (`PathCompiler.java`): a property token
//!   with one or several names, an array index token with one or several indices, a slice, a
//!   wildcard, a filter, a deep scan. Unions Jayway cannot parse (names mixed with indices, or
//!   with `*`, slices or filters) are refused.
//! - The chain is evaluated token by token on each node, as the `evaluate` methods of Jayway's
//!   `internal/path/*PathToken.java` do: a step that finds nothing (a missing member, a member of
//!   a non-object, an index of a non-array) throws `PathNotFoundException` when every token
//!   before it is definite and is skipped otherwise; a name union at the end of the path answers
//!   one object of the members present; a filter on an object tests the object itself; a deep
//!   scan reproduces `ScanPathToken.walk` with its predicates (after `..`, an index, slice,
//!   wildcard or filter is skipped on each array it matches, and the next token applied to every
//!   element). Filter expressions stay jsonpath-rust's.
//! - Where Jayway's answer depends on what earlier requests left in its cached compiled path,
//!   the path is refused at start-up (`..*` followed by a last member name or `*`, some
//!   `$..p.length()` forms). After `..[?(…)]` that state is reproduced within one evaluation.
//! - A trailing `length()`/`size()` is reproduced, including its list of one length per node
//!   after an indefinite path and its rewrite of `$..x.length()` (see [`Length`]).
//! - Jayway's split between *definite* paths (one value, or not found) and *indefinite* ones
//!   (always a list, maybe empty, unless a definite step threw) is kept, and values are
//!   returned owned, so the flattener sees exactly what Jayway would hand to Gson. GWT treats
//!   any exception as the variable being unresolved (`PostContentParameterResolver.resolve`),
//!   which is [`Resolved::NotFound`].

use std::borrow::Cow;

use jsonpath_rust::parser::model::{Filter, FilterAtom, JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::Query;
use jsonpath_rust::query::state::State;
use serde_json::{Map, Value};

use super::CompileCache;

/// A compiled path in Jayway's dialect.
#[derive(Debug, Clone)]
pub struct JaywayPath {
    /// Jayway's token chain after the root token.
    tokens: Vec<Link>,
    /// Jayway's `isPathDefinite` (`PathToken.java:186-196`): every token definite.
    definite: bool,
    /// The path as plain steps, when it is definite with no index from the end: evaluated by
    /// a direct walk, and the only kind of path a pruned parse can serve (see `shape`).
    steps: Option<Vec<Step>>,
    /// A trailing `.length()` (or `.size()`).
    length: Option<Length>,
    /// The expression is `$` itself, which GWT answers with the raw body.
    root: bool,
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
    /// the list of one answer per node (nulls included), `[]` when it reaches nothing. The
    /// function is the chain's leaf, so the last token of `p` is not.
    OfEach,
    /// `$..p.length()`: Jayway rewrites it into `length($..p)`
    /// (`CompiledPath.invertScannerFunctionRelationship`, `CompiledPath.java:62-88`), and
    /// `Length.invoke` appends a wildcard to the argument and answers the size of the list
    /// `$..p.*` selects (`Length.java:44-66`): one number, `0` when nothing matches, never not
    /// found. The compiled chain already ends in that wildcard.
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
    /// Jayway threw: a definite path that selected nothing, or a step that found nothing while
    /// every token before it was definite (GWT's `PathNotFoundException`).
    NotFound,
    Value(Value),
}

/// One of Jayway's path tokens (`internal/path/*PathToken.java`).
#[derive(Debug, Clone)]
enum Token {
    /// `PropertyPathToken`: `.a`, `['a']`, or the union `['a','b']`.
    Property(Vec<String>),
    /// `ArrayIndexToken`: `[0]`, or the union `[0,-1]`.
    Index(Vec<i64>),
    /// `ArraySliceToken`.
    Slice(Slice),
    /// `WildcardPathToken`: `*`, `[*]`.
    Wildcard,
    /// `PredicatePathToken`: `[?(…)]`.
    Filter(Filter),
    /// `ScanPathToken`: `..`, always followed by another token.
    Scan,
}

/// Jayway's slice (`ArraySliceOperation.parse`, `ArraySliceOperation.java:47-74`): a start, an
/// end or both, and no step (a third number is read past, `[::2]` does not parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slice {
    /// `[from:]`
    From(i64),
    /// `[from:to]`
    Between(i64, i64),
    /// `[:to]`
    To(i64),
}

/// A token with what Jayway asks of its place in the chain.
#[derive(Debug, Clone)]
struct Link {
    token: Token,
    /// `isLeaf()`: nothing follows (not even the `length()` function).
    leaf: bool,
    /// `isTokenDefinite()`: one name, one name union at the leaf, or one index.
    definite: bool,
    /// `isUpstreamDefinite()` (`PathToken.java:168-173`): every token before it definite.
    upstream_definite: bool,
}

/// Jayway threw (`PathNotFoundException`, or `InvalidPathException` for a filter on a scalar);
/// the whole read fails.
struct Thrown;

impl JaywayPath {
    /// Compiles `expression`, sharing the parse between rules that use the same path (with
    /// thousands of rules, the same few paths repeat).
    pub fn compile(expression: &str) -> Result<Self, String> {
        static PARSED: CompileCache<JaywayPath> = CompileCache::new();
        PARSED.get_or_compile(expression, Self::parse)
    }

    fn parse(expression: &str) -> Result<Self, String> {
        let root = expression.trim() == "$";
        let rooted = rooted(expression);
        let (path, call) = split_length_call(&rooted);
        let (tokens, length) = match call {
            None => (tokens(path)?, None),
            Some(Call::Dot) => {
                let mut tokens = tokens(path)?;
                if matches!(tokens.first(), Some(Token::Scan)) {
                    check_scan_length(&tokens)?;
                    tokens.push(Token::Wildcard);
                    (tokens, Some(Length::OfScan))
                } else {
                    (tokens, Some(Length::OfEach))
                }
            }
            // `$..length()`: the argument is `$..` itself, and the appended wildcard makes it
            // `$..*`, every node below the root.
            Some(Call::Scan) if path == "$" => {
                (vec![Token::Scan, Token::Wildcard], Some(Length::OfScan))
            }
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
        let tokens = link(tokens, length);
        check_scan_state(&tokens)?;
        let definite = tokens.iter().all(|link| link.definite);
        let steps = tokens
            .iter()
            .map(|link| match &link.token {
                Token::Property(names) if names.len() == 1 => Some(Step::Name(names[0].clone())),
                Token::Index(indices) if indices.len() == 1 => {
                    usize::try_from(indices[0]).ok().map(Step::Index)
                }
                _ => None,
            })
            .collect::<Option<Vec<Step>>>();
        Ok(Self {
            tokens,
            definite,
            steps,
            length,
            root,
        })
    }

    /// The path's steps when it is definite and counts no index from the end.
    pub fn steps(&self) -> Option<&[Step]> {
        self.steps.as_deref()
    }

    /// Whether the path is the whole document (`$`), which GWT answers with the raw body
    /// (`PostContentParameterResolver.resolveJsonPath` compares the trimmed expression to `$`).
    pub fn is_root(&self) -> bool {
        self.root
    }

    pub fn evaluate(&self, document: &Value) -> Resolved {
        if self.definite
            && let Some(steps) = &self.steps
        {
            return match walk(document, steps) {
                Some(node) => Resolved::Value(match self.length {
                    Some(_) => jayway_length(node),
                    None => node.clone(),
                }),
                None => Resolved::NotFound,
            };
        }
        let Ok(hits) = self.select(document) else {
            return Resolved::NotFound;
        };
        if self.length == Some(Length::OfScan) {
            return Resolved::Value(Value::from(hits.len()));
        }
        if self.definite {
            // `EvaluationContextImpl.getValue` (`EvaluationContextImpl.java:136-152`): no
            // result throws, else the last one (a definite chain adds at most one).
            return match hits.into_iter().last() {
                Some(hit) => Resolved::Value(hit.into_owned()),
                None => Resolved::NotFound,
            };
        }
        Resolved::Value(Value::Array(
            hits.into_iter().map(Cow::into_owned).collect(),
        ))
    }

    /// The results Jayway's evaluation adds, in order (`EvaluationContextImpl.addResult`), or
    /// [`Thrown`].
    fn select<'v>(&self, document: &'v Value) -> Result<Vec<Cow<'v, Value>>, Thrown> {
        let mut run = Run {
            tokens: &self.tokens,
            of_each: self.length == Some(Length::OfEach),
            root: document,
            hits: Vec::new(),
            leaf_array_index: None,
        };
        run.token(0, document)?;
        Ok(run.hits)
    }
}

/// Jayway prefixes `$.` to a path that starts with neither `$` nor `@` (`PathCompiler.compile`,
/// `PathCompiler.java:64-70`: the test is on the trimmed path, the prefix goes before the
/// untrimmed one), and evaluates a path starting with `@` exactly as one starting with `$`
/// (`RootPathToken` only keeps the character for printing).
fn rooted(expression: &str) -> Cow<'_, str> {
    let trimmed = expression.trim();
    if let Some(rest) = trimmed.strip_prefix('@') {
        Cow::Owned(format!("${rest}"))
    } else if trimmed.starts_with('$') {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(format!("$.{}", expression.trim_end()))
    }
}

/// Parses a path (without `length()`) into Jayway's tokens.
fn tokens(path: &str) -> Result<Vec<Token>, String> {
    let query: JpQuery = parse_rfc(path)?;
    let mut tokens = Vec::with_capacity(query.segments.len());
    for segment in query.segments {
        if let Segment::Descendant(inner) = segment {
            tokens.push(Token::Scan);
            tokens.push(token(*inner)?);
        } else {
            tokens.push(token(segment)?);
        }
    }
    Ok(tokens)
}

fn token(segment: Segment) -> Result<Token, String> {
    Ok(match segment {
        Segment::Selector(Selector::Name(name)) => Token::Property(vec![name]),
        Segment::Selector(Selector::Index(index)) => Token::Index(vec![java_int(index)?]),
        Segment::Selector(Selector::Slice(start, end, _step)) => {
            let bound = |b: Option<i64>| b.map(java_int).transpose();
            Token::Slice(match (bound(start)?, bound(end)?) {
                (Some(from), None) => Slice::From(from),
                (Some(from), Some(to)) => Slice::Between(from, to),
                (None, Some(to)) => Slice::To(to),
                (None, None) => {
                    return Err("a slice needs a start or an end in Jayway \
                                (`ArraySliceOperation.parse`)"
                        .to_owned());
                }
            })
        }
        Segment::Selector(Selector::Wildcard) => Token::Wildcard,
        Segment::Selector(Selector::Filter(filter)) => Token::Filter(filter),
        Segment::Selectors(selectors) => {
            let names: Option<Vec<String>> = selectors
                .iter()
                .map(|s| match s {
                    Selector::Name(name) => Some(name.clone()),
                    _ => None,
                })
                .collect();
            let indices: Option<Vec<i64>> = selectors
                .iter()
                .map(|s| match s {
                    Selector::Index(index) => Some(*index),
                    _ => None,
                })
                .collect();
            match (names, indices) {
                (Some(names), _) => Token::Property(names),
                (_, Some(indices)) => Token::Index(
                    indices
                        .into_iter()
                        .map(java_int)
                        .collect::<Result<_, _>>()?,
                ),
                // `PathCompiler.readBracketPropertyToken` and `readArrayToken`
                // (`PathCompiler.java:521-639`) read only quoted names or only numbers.
                _ => {
                    return Err("a union of anything but names only or indices only does \
                                not parse in Jayway"
                        .to_owned());
                }
            }
        }
        Segment::Descendant(_) => return Err("`..` cannot follow `..`".to_owned()),
    })
}

/// Jayway reads indices with `Integer.parseInt`.
fn java_int(n: i64) -> Result<i64, String> {
    i32::try_from(n)
        .map(i64::from)
        .map_err(|_| format!("index {n} does not fit Jayway's int"))
}

/// Places each token in the chain. With `p.length()` the function token is the leaf.
fn link(tokens: Vec<Token>, length: Option<Length>) -> Vec<Link> {
    let count = tokens.len();
    let mut upstream_definite = true;
    tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let leaf = i + 1 == count && length != Some(Length::OfEach);
            // `PropertyPathToken.isTokenDefinite` (`PropertyPathToken.java:93-97`): a name
            // union at the leaf is merged into one object, elsewhere it iterates;
            // `ArrayIndexToken.isTokenDefinite` (`ArrayIndexToken.java:47-50`).
            let definite = match &token {
                Token::Property(names) => names.len() == 1 || leaf,
                Token::Index(indices) => indices.len() == 1,
                Token::Slice(_) | Token::Wildcard | Token::Filter(_) | Token::Scan => false,
            };
            let link = Link {
                token,
                leaf,
                definite,
                upstream_definite,
            };
            upstream_definite &= definite;
            link
        })
        .collect()
}

/// Refuses `..*.name` and `..*.*` (`..[*]` alike) at the end of a path. After `..*`, the token
/// that follows is applied to every element of each array the scan walks, with the element's
/// index stored in that token (`ScanPathToken.walkArray`, `ScanPathToken.java:53-61`), and a
/// member read by a leaf token is kept only while no index is stored or when the token before
/// the leaf prints as that index (`PathToken.java:83-88`), which `[*]` never does. The stored
/// index is never cleared, and Jayway caches compiled paths, so once any request's body held an
/// array under the scan, members are dropped on every later request too.
///
/// After `..[?(…)]` the same happens, but only once an array itself passes the filter; a
/// filter reading members of `@` never passes on an array, so those paths are kept, and the
/// stored index is reproduced within one evaluation.
fn check_scan_state(tokens: &[Link]) -> Result<(), String> {
    for window in tokens.windows(3) {
        let [scan, target, next] = window else {
            continue;
        };
        let reads_members = match &next.token {
            Token::Property(names) => names.len() == 1,
            Token::Wildcard => true,
            _ => false,
        };
        if matches!(scan.token, Token::Scan)
            && matches!(target.token, Token::Wildcard)
            && next.leaf
            && reads_members
        {
            return Err(
                "`..*` (or `..[*]`) followed by a last member name or `*` is not supported: \
                 Jayway drops those members once any array was scanned, in that request or \
                 an earlier one"
                    .to_owned(),
            );
        }
    }
    Ok(())
}

/// One evaluation: Jayway's `EvaluationContextImpl`.
struct Run<'p, 'v> {
    tokens: &'p [Link],
    /// The chain ends in `length()`: each result is the length of the node reached.
    of_each: bool,
    /// `$` in filters.
    root: &'v Value,
    hits: Vec<Cow<'v, Value>>,
    /// The `upstreamArrayIndex` of the leaf token (`PathToken.java:32-37`), set by
    /// `ScanPathToken.walkArray` when the leaf follows the token after `..`, and never reset.
    leaf_array_index: Option<usize>,
}

impl<'v> Run<'_, 'v> {
    /// Token `i` on `node`, or the end of the chain when `i` is past the last token.
    fn token(&mut self, i: usize, node: &'v Value) -> Result<(), Thrown> {
        let Some(link) = self.tokens.get(i) else {
            self.add(node);
            return Ok(());
        };
        match &link.token {
            Token::Property(names) => self.property(i, link, names, node),
            Token::Index(indices) => {
                let Some(items) = self.array_model(link, node)? else {
                    return Ok(());
                };
                for &index in indices {
                    self.array_index(i, items, index)?;
                }
                Ok(())
            }
            Token::Slice(slice) => {
                let Some(items) = self.array_model(link, node)? else {
                    return Ok(());
                };
                let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
                // `ArraySliceToken.java:48-102`: a negative start counts from the end only in
                // `[from:]`; in `[from:to]` each index is read as `handleArrayIndex` reads it.
                let (from, to) = match *slice {
                    Slice::From(from) => ((if from < 0 { len + from } else { from }).max(0), len),
                    // Indices before `-len` select nothing, so starting there changes nothing
                    // and `[-2147483648:1]` does not loop two billion times.
                    Slice::Between(from, to) => (from.max(-len), to.min(len)),
                    Slice::To(to) => (0, (if to < 0 { len + to } else { to }).min(len)),
                };
                for index in from..to {
                    self.array_index(i, items, index)?;
                }
                Ok(())
            }
            // `WildcardPathToken.java:34-50`: an object's members, an array's elements, and
            // nothing of a scalar.
            Token::Wildcard => {
                match node {
                    Value::Object(members) => {
                        for member in members.values() {
                            self.member(i, link, member)?;
                        }
                    }
                    Value::Array(items) => {
                        for item in items {
                            // A PathNotFoundException from below is swallowed (lines 41-47);
                            // nothing below an indefinite token throws anyway.
                            let _ = self.token(i + 1, item);
                        }
                    }
                    _ => {}
                }
                Ok(())
            }
            // `PredicatePathToken.java:45-70`: an object is tested itself, an array's elements
            // one by one; a scalar throws when every token before is definite.
            Token::Filter(filter) => match node {
                Value::Object(_) => {
                    if matches_filter(filter, node, self.root) {
                        self.token(i + 1, node)?;
                    }
                    Ok(())
                }
                Value::Array(items) => {
                    for item in items {
                        if matches_filter(filter, item, self.root) {
                            self.token(i + 1, item)?;
                        }
                    }
                    Ok(())
                }
                _ if link.upstream_definite => Err(Thrown),
                _ => Ok(()),
            },
            Token::Scan => self.walk(i, node),
        }
    }

    /// `PropertyPathToken.evaluate` (`PropertyPathToken.java:62-91`) and the property part of
    /// `PathToken.handleObjectProperty` (`PathToken.java:45-123`).
    fn property(
        &mut self,
        i: usize,
        link: &Link,
        names: &[String],
        node: &'v Value,
    ) -> Result<(), Thrown> {
        let Value::Object(members) = node else {
            return if link.upstream_definite {
                Err(Thrown)
            } else {
                Ok(())
            };
        };
        match names {
            [name] => match members.get(name) {
                Some(member) => self.member(i, link, member),
                // A missing leaf adds nothing (lines 58-68); a missing member mid-path throws
                // when this token and all before it are definite (lines 69-79).
                None if !link.leaf && link.upstream_definite => Err(Thrown),
                None => Ok(()),
            },
            // The leaf union: one object of the members present, in the union's order
            // (lines 92-122); it is added even when empty.
            _ if link.leaf => {
                let mut merged = Map::new();
                for name in names {
                    if let Some(member) = members.get(name) {
                        merged.insert(name.clone(), member.clone());
                    }
                }
                self.hits.push(Cow::Owned(Value::Object(merged)));
                Ok(())
            }
            // Elsewhere each name in turn, missing ones skipped (the token is not definite).
            _ => {
                for name in names {
                    if let Some(member) = members.get(name) {
                        self.token(i + 1, member)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A member found by token `i` (`PathToken.java:82-91`). At the leaf it is added unless
    /// `ScanPathToken.walkArray` stored an index in the leaf and the token before it is not
    /// that single index (lines 83-88; Jayway's fix for `$..[2].author`, `Issue273.java`).
    fn member(&mut self, i: usize, link: &Link, member: &'v Value) -> Result<(), Thrown> {
        if link.leaf
            && let Some(stored) = self.leaf_array_index
        {
            let before = i.checked_sub(1).map(|b| &self.tokens[b].token);
            let same = matches!(before, Some(Token::Index(indices))
                if indices.len() == 1 && usize::try_from(indices[0]).ok() == Some(stored));
            if !same {
                return Ok(());
            }
        }
        self.token(i + 1, member)
    }

    /// `ArrayPathToken.checkArrayModel` (`ArrayPathToken.java:34-52`): null or a non-array
    /// throws when every token before is definite, and is skipped otherwise.
    fn array_model(&self, link: &Link, node: &'v Value) -> Result<Option<&'v [Value]>, Thrown> {
        match node {
            Value::Array(items) => Ok(Some(items)),
            _ if link.upstream_definite => Err(Thrown),
            _ => Ok(None),
        }
    }

    /// `PathToken.handleArrayIndex` (`PathToken.java:134-147`): a negative index counts from
    /// the end, and one out of range adds nothing and does not throw.
    fn array_index(&mut self, i: usize, items: &'v [Value], index: i64) -> Result<(), Thrown> {
        let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
        let effective = if index < 0 { len + index } else { index };
        match usize::try_from(effective).ok().and_then(|e| items.get(e)) {
            Some(item) => self.token(i + 1, item),
            None => Ok(()),
        }
    }

    /// `ScanPathToken.walk` (`ScanPathToken.java:39-88`) for the scan at `i`: each object and
    /// array, the node itself first and then its children in document order, is offered to
    /// the token after the scan when that token's scan predicate matches it.
    fn walk(&mut self, i: usize, node: &'v Value) -> Result<(), Thrown> {
        let target = i + 1;
        match node {
            Value::Object(members) => {
                if self.scan_matches(target, node) {
                    self.token(target, node)?;
                }
                for member in members.values() {
                    self.walk(i, member)?;
                }
            }
            Value::Array(items) => {
                if self.scan_matches(target, node) {
                    if self.tokens[target].leaf {
                        self.token(target, node)?;
                    } else {
                        // The target token itself is skipped: the one after it runs on every
                        // element, with the element's index stored in it (lines 53-61).
                        let next_is_leaf = self.tokens.get(target + 1).is_some_and(|l| l.leaf);
                        for (index, item) in items.iter().enumerate() {
                            if next_is_leaf {
                                self.leaf_array_index = Some(index);
                            }
                            self.token(target + 1, item)?;
                        }
                    }
                }
                for item in items {
                    self.walk(i, item)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `ScanPathToken.createScanPredicate` and its predicates (`ScanPathToken.java:90-205`).
    fn scan_matches(&self, target: usize, node: &Value) -> bool {
        let link = &self.tokens[target];
        match &link.token {
            // An object with every name, or any object for a union that iterates.
            Token::Property(names) => match node {
                Value::Object(members) => {
                    !link.definite || names.iter().all(|name| members.contains_key(name))
                }
                _ => false,
            },
            Token::Index(_) | Token::Slice(_) => node.is_array(),
            Token::Wildcard => true,
            Token::Filter(filter) => matches_filter(filter, node, self.root),
            Token::Scan => false,
        }
    }

    /// `EvaluationContextImpl.addResult`: the node, or its `length()`.
    fn add(&mut self, node: &'v Value) {
        self.hits.push(if self.of_each {
            Cow::Owned(jayway_length(node))
        } else {
            Cow::Borrowed(node)
        });
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
/// anything else selects nothing. On a definite chain of single names and indices that is
/// Jayway's evaluation: whatever selects nothing either throws or adds no result, and both are
/// not found.
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
fn check_scan_length(tokens: &[Token]) -> Result<(), String> {
    let after_scan = tokens.len() >= 2 && matches!(tokens[tokens.len() - 2], Token::Scan);
    if after_scan && !matches!(tokens.last(), Some(Token::Property(_))) {
        return Err(
            "`length()` after `..` and a wildcard, index, slice or filter is not supported: \
             Jayway's deep scan miscounts it"
                .to_owned(),
        );
    }
    // tokens[0] is the leading `..`; the search for a wildcard starts after it.
    if let Some(first) = tokens
        .iter()
        .skip(1)
        .position(|t| matches!(t, Token::Wildcard))
        && tokens[1 + first..]
            .iter()
            .any(|t| !matches!(t, Token::Wildcard))
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

    /// Evaluates each case, `None` for not found (`Resolved::NotFound`), and reports the
    /// source that establishes it.
    fn check_cases(doc: &Value, cases: &[(&str, Option<Value>, &str)]) {
        for (path, expected, source) in cases {
            let compiled = JaywayPath::compile(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let expected = match expected {
                Some(value) => Resolved::Value(value.clone()),
                None => Resolved::NotFound,
            };
            assert_eq!(compiled.evaluate(doc), expected, "{path}: {source}");
        }
    }

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
            // Unions Jayway does not parse: `readBracketPropertyToken` wants `]` or `,` and a
            // quote after each name, `readArrayToken` only digits, `-`, `:` and `,`, and
            // `readWildCardToken` a `]` after `*` (`PathCompiler.java:491-639`).
            "$['a',0]",
            "$[0,'a']",
            "$[*,0]",
            "$['a',*]",
            "$[0,1:2]",
            "$[?(@.a),?(@.b)]",
            // Slices with neither start nor end (`ArraySliceOperation.java:63-71`), and
            // indices past Java's int (`Integer.parseInt`, `ArraySliceOperation.java:81`).
            "$[:]",
            "$[::2]",
            "$[2147483648]",
            "$[0:2147483648]",
            // Without `$`, Jayway prefixes `$.` (`PathCompiler.java:67-70`): `..a` becomes
            // `$...a` (a `.` after `..`, `PathCompiler.java:172-174`), and a leading blank
            // stays after the `$.` (`$. a`, no name).
            "..a",
            " a.b",
            // `..*` then a last member or `*`: Jayway's answer depends on earlier requests.
            "$..*.a",
            "$..[*].a",
            "$..*['a']",
            "$..*.*",
            "$.x..[*].*",
        ] {
            assert!(JaywayPath::compile(unsupported).is_err(), "{unsupported}");
        }
        for supported in [
            "$..a.length()",
            "$..a.*.length()",
            "$..a.*.*.size()",
            "$..length()",
            "$..*.a.b",
            "$..*[0]",
            "$..*['a','b']",
            "$..[*][?(@.a)]",
            "$..[?(@.a)].b",
            "$..[0].a",
            "$[1:5:2]",
            "a.b",
            "@.a",
            "@",
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
        let indices = JaywayPath::compile("$.a[0,1].n").unwrap();
        assert_eq!(indices.evaluate(&doc), Resolved::Value(json!([1, 2])));
        let filter = JaywayPath::compile("$.a[?(@.n == 2)].n").unwrap();
        assert_eq!(filter.evaluate(&doc), Resolved::Value(json!([2])));
        // A name union at the end is definite in Jayway: one object, not a list
        // (`PropertyPathToken.isTokenDefinite`, `PropertyPathToken.java:93-97`).
        let union = JaywayPath::compile("$.a[0]['n','m']").unwrap();
        assert_eq!(union.evaluate(&doc), Resolved::Value(json!({"n": 1})));
    }

    /// Item by item, where Jayway throws `PathNotFoundException` (not found for GWT) and where
    /// it skips: a step that finds nothing throws only when every token before it is definite.
    #[test]
    fn missing_members_and_type_mismatches_as_jayway() {
        let doc = json!({
            "a": [{"n": 1}, {"n": 2}], "o": {"k": 1}, "s": "text", "n": 5, "z": null, "e": [],
        });
        let cases: &[(&str, Option<Value>, &str)] = &[
            // A missing member.
            (
                "$.zzz[*]",
                None,
                "missing member mid-path, upstream and token definite: throws, PathToken.java:69-79",
            ),
            (
                "$.labels[?(@.name == 'x')]",
                None,
                "the same before a filter, PathToken.java:78",
            ),
            ("$.o.zzz[*].x", None, "PathToken.java:78"),
            (
                "$.zzz",
                None,
                "a missing leaf adds nothing (PathToken.java:58-68) and a definite path with \
                 no result throws, EvaluationContextImpl.java:137-143",
            ),
            (
                "$.a[*].zzz[*]",
                Some(json!([])),
                "after an indefinite token a missing member is skipped, PathToken.java:70-76",
            ),
            ("$.a[*].zzz", Some(json!([])), "PathToken.java:58-68"),
            (
                "$.a[0,1].zzz[*]",
                Some(json!([])),
                "an index union is indefinite, ArrayIndexToken.java:47-50",
            ),
            (
                "$.o[?(@.k == 1)].zzz[*]",
                Some(json!([])),
                "a filter is indefinite, PredicatePathToken.java:101-104",
            ),
            // A member of something else than an object.
            (
                "$.a.n",
                None,
                "a member of an array throws when upstream definite, PropertyPathToken.java:66-77",
            ),
            ("$.a.b[*]", None, "PropertyPathToken.java:66-77"),
            (
                "$.z.b[*]",
                None,
                "a member of null, PropertyPathToken.java:66-77",
            ),
            (
                "$.a[0].n.x[*]",
                None,
                "a member of a number, PropertyPathToken.java:66-77",
            ),
            (
                "$.o[*].x",
                Some(json!([])),
                "skipped after a wildcard, PropertyPathToken.java:67-69",
            ),
            // A wildcard on a scalar or null selects nothing and never throws.
            ("$.s[*]", Some(json!([])), "WildcardPathToken.java:34-50"),
            ("$.n[*]", Some(json!([])), "WildcardPathToken.java:34-50"),
            (
                "$.z[*]",
                Some(json!([])),
                "null is neither map nor list, WildcardPathToken.java:35-39",
            ),
            ("$.z.*", Some(json!([])), "WildcardPathToken.java:34-50"),
            // An index, index union or slice of null or a non-array throws when upstream
            // definite.
            (
                "$.z[0]",
                None,
                "ArrayPathToken.java:35-42; DeepScanTest.definite_upstream_illegal_array_access_throws",
            ),
            ("$.z[0,1]", None, "ArrayPathToken.java:35-42"),
            (
                "$.z[1:]",
                None,
                "ArraySliceToken.java:33, ArrayPathToken.java:35-42",
            ),
            ("$.o[0]", None, "ArrayPathToken.java:43-50"),
            ("$.o[0][*]", None, "ArrayPathToken.java:43-50"),
            ("$.s[0][*]", None, "ArrayPathToken.java:43-50"),
            ("$.n[0:2]", None, "ArrayPathToken.java:43-50"),
            (
                "$.a[*][0]",
                Some(json!([])),
                "skipped after a wildcard, ArrayPathToken.java:44-46",
            ),
            // A filter on a scalar or null throws `InvalidPathException` when upstream definite.
            ("$.s[?(@.k)]", None, "PredicatePathToken.java:65-69"),
            ("$.z[?(@.k)]", None, "PredicatePathToken.java:65-69"),
            (
                "$.a[*].n[?(@ == 1)]",
                Some(json!([])),
                "PredicatePathToken.java:66",
            ),
            // An index out of range never throws; only a definite path without result does.
            (
                "$.a[5][*]",
                Some(json!([])),
                "IndexOutOfBoundsException is swallowed, PathToken.java:145-146",
            ),
            ("$.a[-5][*]", Some(json!([])), "PathToken.java:137-146"),
            ("$.e[0][*]", Some(json!([])), "PathToken.java:145-146"),
            (
                "$.a[5].n",
                None,
                "no result on a definite path, EvaluationContextImpl.java:137-143; \
                 JsonPathTest.access_index_out_of_bounds_does_not_throw_exception",
            ),
            ("$.a[-1].n", Some(json!(2)), "PathToken.java:137"),
            // Null values.
            (
                "$.z",
                Some(Value::Null),
                "NullHandlingTest.null_property_returns_null",
            ),
            (
                "$.a[*].zzz.length()",
                Some(json!([])),
                "PathToken.java:70-76",
            ),
        ];
        check_cases(&doc, cases);
        // DeepScanTest.definite_upstream_illegal_array_access_throws.
        for (body, path) in [
            (json!({"foo": {"bar": null}}), "$.foo.bar.[5]"),
            (json!({"foo": {"bar": null}}), "$.foo.bar.[5, 10]"),
            (json!({"foo": {"bar": 4}}), "$.foo.bar.[5]"),
            (json!({"foo": {"bar": 4}}), "$.foo.bar.[5, 10]"),
            (json!({"foo": {"bar": []}}), "$.foo.bar.[5]"),
        ] {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(
                compiled.evaluate(&body),
                Resolved::NotFound,
                "{path} on {body}"
            );
        }
    }

    /// A name union at the end of a path is one object of the members present; elsewhere it
    /// iterates the names per node (`PropertyPathToken.java:52-58`, `79-90`).
    #[test]
    fn name_unions_as_jayway() {
        let doc = json!({
            "pr": {"title": "T", "body": "B", "n": null},
            "commits": [{"modified": ["m"], "added": ["a"]}, {"modified": ["m2"], "x": 1}, "s"],
        });
        let cases: &[(&str, Option<Value>, &str)] = &[
            (
                "$.pr['title','body']",
                Some(json!({"title": "T", "body": "B"})),
                "merged into one map, definite: PathToken.java:92-122, PropertyPathToken.java:93-97; \
                 MultiPropTest.multi_prop_can_be_read_from_root",
            ),
            (
                "$.pr['body','title']",
                Some(json!({"body": "B", "title": "T"})),
                "put in the union's order into json-smart's LinkedHashMap, PathToken.java:97-118",
            ),
            (
                "$.pr['title','zzz']",
                Some(json!({"title": "T"})),
                "absent members are skipped, PathToken.java:109-116; MultiPropTest:30-32",
            ),
            (
                "$.pr['x','y']",
                Some(json!({})),
                "the map is added even when empty, PathToken.java:121",
            ),
            (
                "$.pr['n','title']",
                Some(json!({"n": null, "title": "T"})),
                "a null member is present, PathToken.java:100-101",
            ),
            (
                "$.pr['title','title']",
                Some(json!({"title": "T"})),
                "Map.put, PathToken.java:118",
            ),
            (
                "$.zzz['a','b']",
                None,
                "the missing member before it throws, PathToken.java:78",
            ),
            (
                "$.pr.title['a','b']",
                None,
                "a union on a string throws, PropertyPathToken.java:66-77",
            ),
            (
                "$.commits[*]['modified','added']",
                Some(json!([{"modified": ["m"], "added": ["a"]}, {"modified": ["m2"]}])),
                "one map per object after a wildcard; the string is skipped, PropertyPathToken.java:67-69",
            ),
            (
                "$.commits[*]['modified','added'][*]",
                Some(json!(["m", "a", "m2"])),
                "not the leaf: each name per node, PropertyPathToken.java:84-90 (GWT's \
                 gitlab-push-specific-folder.feature)",
            ),
            (
                "$.commits[*]['added','modified'][*]",
                Some(json!(["a", "m", "m2"])),
                "PropertyPathToken.java:87-90",
            ),
            (
                "$['pr','zzz'].title",
                Some(json!(["T"])),
                "MultiPropTest.nonexistent_non_leaf_multi_props_ignored",
            ),
            (
                "$['zzz','pr'].zzz",
                Some(json!([])),
                "an iterating union is indefinite, PathToken.java:70-76",
            ),
            (
                "$..['title','body']",
                Some(json!([{"title": "T", "body": "B"}])),
                "only objects holding every name, ScanPathToken.java:192-204; \
                 DeepScanTest.when_deep_scanning_leaf_multi_props_work",
            ),
            (
                "$..['modified','added']",
                Some(json!([{"modified": ["m"], "added": ["a"]}])),
                "ScanPathToken.java:203-204",
            ),
            (
                "$..['modified','added'][*]",
                Some(json!(["m", "a", "m2"])),
                "not the leaf: every object, even one without every name, ScanPathToken.java:192-196; \
                 MultiPropTest.deep_scan_does_not_affect_non_leaf_multi_props",
            ),
        ];
        check_cases(&doc, cases);
        // MultiPropTest.multi_props_can_be_in_the_middle.
        let x = json!({"x": [null, {"a": {"v": 5}, "b": {"v": 4}, "c": {"v": 1}}]});
        for path in [
            "$.x[1]['a', 'c'].v",
            "$.x[*]['a', 'c'].v",
            "$[*][*]['a', 'c'].v",
            "$.x[1]['d', 'a', 'c', 'm'].v",
            "$.x[*]['d', 'a', 'c', 'm'].v",
        ] {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(
                compiled.evaluate(&x),
                Resolved::Value(json!([5, 1])),
                "{path}"
            );
        }
    }

    /// A filter on an object tests the object itself; on an array, each element
    /// (`PredicatePathToken.java:45-64`).
    #[test]
    fn filters_as_jayway() {
        let doc = json!({
            "o": {"k": 1, "v": "x"}, "a": [{"k": 1}, {"k": 2, "v": "y"}], "want": 1,
        });
        let cases: &[(&str, Option<Value>, &str)] = &[
            (
                "$.o[?(@.k == 1)]",
                Some(json!([{"k": 1, "v": "x"}])),
                "PredicatePathToken.java:46-54",
            ),
            (
                "$.o[?(@.k == 2)]",
                Some(json!([])),
                "PredicatePathToken.java:47",
            ),
            (
                "$.o[?(@.k == 1)].v",
                Some(json!(["x"])),
                "PredicatePathToken.java:52",
            ),
            (
                "$.o[?(@.k == $.want)]",
                Some(json!([{"k": 1, "v": "x"}])),
                "the root is the document's, PredicatePathToken.java:47",
            ),
            (
                "$[?(@.want == 1)].want",
                Some(json!([1])),
                "the root object itself",
            ),
            (
                "$.a[?(@.k == 1)]",
                Some(json!([{"k": 1}])),
                "PredicatePathToken.java:55-64",
            ),
            (
                "$.a[*][?(@.k == 2)].v",
                Some(json!(["y"])),
                "each element is an object tested itself, PredicatePathToken.java:46-54",
            ),
        ];
        check_cases(&doc, cases);
    }

    /// `ScanPathToken.walk` (`ScanPathToken.java:39-88`): every object and array, itself before
    /// its children, is offered to the token after `..` when that token's scan predicate
    /// matches it; on an array, an index, slice, wildcard or filter that is not the leaf is
    /// skipped and the next token runs on every element.
    #[test]
    fn deep_scans_as_jayway() {
        let arr = json!({"arr": [{"x": {"y": 1}}, {"x": {"y": 2}}]});
        let cases: &[(&str, Option<Value>, &str)] = &[
            (
                "$..[1].x.y",
                Some(json!([1, 2])),
                "the index is skipped, `.x.y` runs on every element, ScanPathToken.java:53-61",
            ),
            (
                "$..[5].x.y",
                Some(json!([1, 2])),
                "ScanPathToken.java:53-61",
            ),
            (
                "$..[0:1].x.y",
                Some(json!([1, 2])),
                "ScanPathToken.java:53-61",
            ),
            (
                "$..[1].x",
                Some(json!([{"y": 2}])),
                "a leaf member after the index is kept only for that element, \
                 PathToken.java:83-88; Issue273",
            ),
            (
                "$..[-1].x",
                Some(json!([])),
                "`[-1]` never prints as an element's index, PathToken.java:84-85",
            ),
            ("$..[0,1].x", Some(json!([])), "PathToken.java:84-85"),
            ("$..[0:1].x", Some(json!([])), "PathToken.java:84-85"),
            (
                "$..[1]['x','z']",
                Some(json!([{"x": {"y": 1}}, {"x": {"y": 2}}])),
                "a leaf union has no such check, PathToken.java:92-122",
            ),
            (
                "$..*.x.y",
                Some(json!([1, 2])),
                "a wildcard on an object, skipped on an array, ScanPathToken.java:53-61, 74-78",
            ),
            (
                "$..x",
                Some(json!([{"y": 1}, {"y": 2}])),
                "ScanPathToken.java:172-205",
            ),
            (
                "$..[?(@.y)]",
                Some(json!([{"y": 1}, {"y": 2}])),
                "objects are tested themselves, ScanPathToken.java:76-78, PredicatePathToken.java:46-54",
            ),
            (
                "$..[?(@.arr)].arr[0].x",
                Some(json!([{"y": 1}])),
                "the root object too",
            ),
        ];
        check_cases(&arr, cases);
        // Jayway's own tests.
        let cases: &[(Value, &str, Value, &str)] = &[
            (
                json!({"x": [0, 1, [0, 1, 2, 3, null], null]}),
                "$..[2][3]",
                json!([3]),
                "DeepScanTest.when_deep_scanning_non_array_subscription_is_ignored",
            ),
            (
                json!({"x": [0, 1, [0, 1, 2, 3, null], null], "y": [0, 1, 2]}),
                "$..[2][3]",
                json!([3]),
                "DeepScanTest:25-26",
            ),
            (
                json!({"x": [0, 1, [0, 1, 2], null], "y": [0, 1, 2]}),
                "$..[2][3]",
                json!([]),
                "DeepScanTest:28-29",
            ),
            (
                json!({"x": [null, null, [0, 1, 2, 3, null], null], "y": [0, 1, null]}),
                "$..[2][3]",
                json!([3]),
                "DeepScanTest.when_deep_scanning_null_subscription_is_ignored",
            ),
            (
                json!({"x": [0, 1, [0, 1, 2, 3, 10], null]}),
                "$..[4]",
                json!([10]),
                "DeepScanTest.when_deep_scanning_array_index_oob_is_ignored",
            ),
            (
                json!({"x": {"foo": {"bar": 4}}, "y": {"foo": 1}}),
                "$..foo",
                json!([{"bar": 4}, 1]),
                "DeepScanTest.when_deep_scanning_illegal_property_access_is_ignored",
            ),
            (
                json!({"x": {"foo": {"bar": 4}}, "y": {"foo": 1}}),
                "$..foo.bar",
                json!([4]),
                "DeepScanTest:65-66",
            ),
            (
                json!({"x": {"foo": {"bar": 4}}, "y": {"foo": 1}}),
                "$..[*].foo.bar",
                json!([4]),
                "DeepScanTest:67-68",
            ),
            (
                json!({"x": {"foo": {"baz": 4}}, "y": {"foo": 1}}),
                "$..[*].foo.bar",
                json!([]),
                "DeepScanTest:69-70",
            ),
            (
                json!({"x": {"foo": {"bar": 4}}, "y": {"foo": 1}}),
                "$..foo[?(@.bar)].bar",
                json!([4]),
                "DeepScanTest.when_deep_scanning_illegal_predicate_is_ignored",
            ),
            (
                json!([{"a": "a-val", "b": "b-val", "c": "c-val"}, [1, 5], {"a": "a-val"}]),
                "$..['a', 'c']",
                json!([{"a": "a-val", "c": "c-val"}]),
                "DeepScanTest.when_deep_scanning_leaf_multi_props_work",
            ),
            (
                json!([{"a": "aa"}, {"b": "bb"}, {"b": {"b": "bb"}, "ab": {"a": {"a": "aa"}, "b": {"b": "bb"}}}]),
                "$..['a']",
                json!(["aa", {"a": "aa"}, "aa"]),
                "DeepScanTest.scan_for_single_property",
            ),
            (
                json!([{"a": "aa"}, {"x": "xx"}, {"a": {"x": "xx"}}, {"z": {"a": {"x": "xx"}}}]),
                "$..['a'].x",
                json!(["xx", "xx"]),
                "DeepScanTest.scan_for_property_path",
            ),
            (
                json!([
                    {"mammal": true, "color": {"val": "brown"}},
                    {"mammal": true, "color": {"val": "white"}},
                    {"mammal": false},
                ]),
                "$..[?(@.mammal == true)].color",
                json!([{"val": "brown"}, {"val": "white"}]),
                "DeepScanTest.scans_can_be_filtered",
            ),
            (
                json!({"index": "index", "data": {"array": [{"object1": {"name": "robert"}}]}}),
                "$..array[0]",
                json!([{"object1": {"name": "robert"}}]),
                "DeepScanTest.deepScanPathDefault",
            ),
            (
                json!([[{"author": "Nigel Rees"}, {"author": "Evelyn Waugh"},
                        {"author": "Herman Melville"}, {"author": "J. R. R. Tolkien"}],
                       {"color": "red", "price": 19.95}]),
                "$..[2].author",
                json!(["Herman Melville"]),
                "Issue273.testGetPropertyFromArray",
            ),
            (
                json!({"store": {"book": [{"author": "Nigel Rees"}, {"author": "Evelyn Waugh"},
                                          {"author": "Herman Melville"}, {"author": "J. R. R. Tolkien"}],
                                 "bicycle": {"color": "red"}}, "expensive": 10}),
                "$..[2].author",
                json!(["Herman Melville"]),
                "Issue273.testGetPropertyFromObject",
            ),
            (
                json!({"store": {
                    "book": [
                        {"author": "Nigel Rees", "address": {"city": "London"}},
                        {"author": "J. R. R. Tolkien", "isbn": "0-395-19395-8",
                         "address": {"city": "Stockholm"}},
                    ],
                    "bicycle": {"color": "red", "address": {"city": "Stockholm"}},
                }}),
                "$..[?(@.address.city == 'Stockholm')].author",
                json!(["J. R. R. Tolkien"]),
                "ScanPathTokenTest.a_document_can_be_scanned_for_predicate_match",
            ),
        ];
        for (doc, path, expected, source) in cases {
            let compiled = JaywayPath::compile(path).unwrap();
            assert_eq!(
                compiled.evaluate(doc),
                Resolved::Value(expected.clone()),
                "{path}: {source}"
            );
        }
        // After `..[?(…)]`, an array that passes the filter stores an element index in the leaf
        // member token (`ScanPathToken.java:58`), and from then on every member the leaf reads
        // is dropped (`PathToken.java:83-88`): `y.m` after `l` is lost. (Jayway keeps that
        // index in its cached path for later requests too; hookgate starts each evaluation
        // afresh.)
        let poisoned = json!({"x": {"m": 1}, "l": [{"m": 2}], "y": {"m": 3}});
        let compiled = JaywayPath::compile("$..[?(!@.k)].m").unwrap();
        assert_eq!(compiled.evaluate(&poisoned), Resolved::Value(json!([1])));
        // Not the leaf: no such check, `.m.n` is read everywhere.
        let deeper = json!({"x": {"m": {"n": 1}}, "l": [{"m": {"n": 2}}], "y": {"m": {"n": 3}}});
        let compiled = JaywayPath::compile("$..[?(!@.k)].m.n").unwrap();
        assert_eq!(
            compiled.evaluate(&deeper),
            Resolved::Value(json!([1, 2, 2, 3]))
        );
    }

    /// Jayway's slices (`ArraySliceToken.java:48-102`): no step, a negative start counts from
    /// the end only without an end, and `[from:to]` reads each index from `from` up as an
    /// index token would.
    #[test]
    fn slices_as_jayway() {
        let nums = json!([1, 3, 5, 7, 8, 13, 20]);
        let cases: &[(&str, Option<Value>, &str)] = &[
            (
                "$[:3]",
                Some(json!([1, 3, 5])),
                "ArraySlicingTest.get_from_index",
            ),
            (
                "$[1:5]",
                Some(json!([3, 5, 7, 8])),
                "ArraySlicingTest.get_between_index",
            ),
            (
                "$[0:1]",
                Some(json!([1])),
                "ArraySlicingTest.get_between_index_2",
            ),
            (
                "$[-2147483648:1]",
                Some(json!([1, 3, 5, 7, 8, 13, 20, 1])),
                "ArraySliceToken.sliceBetween: indices below -len select nothing",
            ),
            (
                "$[1:15]",
                Some(json!([3, 5, 7, 8, 13, 20])),
                "ArraySlicingTest.get_between_index_out_of_bounds",
            ),
            (
                "$[-3:]",
                Some(json!([8, 13, 20])),
                "ArraySlicingTest.get_from_tail_index",
            ),
            (
                "$[3:]",
                Some(json!([7, 8, 13, 20])),
                "ArraySlicingTest.get_from_tail",
            ),
            (
                "$[0,1,2]",
                Some(json!([1, 3, 5])),
                "ArraySlicingTest.get_indexes",
            ),
            ("$[9:]", Some(json!([])), "ArraySliceToken.java:59-61"),
            ("$[:-5]", Some(json!([1, 3])), "ArraySliceToken.java:90-95"),
            (
                "$[0:-1]",
                Some(json!([])),
                "the end is not counted from the back in [from:to], ArraySliceToken.java:72-76",
            ),
            (
                "$[-2:2]",
                Some(json!([13, 20, 1, 3])),
                "indices -2, -1, 0, 1 each read from the end when negative, \
                 ArraySliceToken.java:80-82, PathToken.java:137",
            ),
            (
                "$[1:5:2]",
                Some(json!([3, 5, 7, 8])),
                "a step is read past, ArraySliceOperation.java:57-60",
            ),
        ];
        check_cases(&nums, cases);
    }

    /// Jayway prefixes `$.` to a path that starts with neither `$` nor `@`
    /// (`PathCompiler.java:67-70`), and `@` is a root like `$` (`PathCompiler.java:97-99`,
    /// `RootPathToken.java:61-68`).
    #[test]
    fn paths_without_a_root_as_jayway() {
        let doc = json!({"a": [{"n": 1, "b": 1, "c": 2}, {"b": 5, "c": 2}], "o": {"a": 2}});
        let cases: &[(&str, Option<Value>, &str)] = &[
            ("a[0].n", Some(json!(1)), "`$.a[0].n`"),
            ("a[?(@.b==4)].c", Some(json!([])), "NullHandlingTest.path2"),
            ("a[?(@.b==5)].c", Some(json!([2])), "NullHandlingTest.path"),
            (
                "o.a  ",
                Some(json!(2)),
                "trailing blanks are trimmed, PathCompiler.java:65-69",
            ),
            (
                "['o']['a']",
                Some(json!(2)),
                "`$.['o']`: the `.` before `[` is dropped, PathCompiler.java:163-176",
            ),
            (
                "[0]",
                None,
                "`$.[0]` on an object throws, ArrayPathToken.java:43-50",
            ),
            (
                "*",
                Some(json!([doc["a"].clone(), doc["o"].clone()])),
                "`$.*`",
            ),
            (
                ".a",
                Some(json!([doc["a"].clone(), 2])),
                "`$..a`, a deep scan",
            ),
            ("length()", Some(json!(2)), "`$.length()`"),
            ("@.o.a", Some(json!(2)), "`@` is a root token"),
            (" @.o.a", Some(json!(2)), "the test is on the trimmed path"),
            ("@", Some(doc.clone()), "RootPathToken.java:62-64"),
            ("$", Some(doc.clone()), "RootPathToken.java:62-64"),
        ];
        check_cases(&doc, cases);
        // GWT answers `$` with the raw body, comparing the trimmed expression
        // (`PostContentParameterResolver.resolveJsonPath`); `@` is an ordinary path there.
        assert!(JaywayPath::compile(" $ ").unwrap().is_root());
        assert!(!JaywayPath::compile("@").unwrap().is_root());
        assert!(!JaywayPath::compile("$.length()").unwrap().is_root());
        let on_array = json!([10, 20]);
        let first = JaywayPath::compile("[0]").unwrap();
        assert_eq!(first.evaluate(&on_array), Resolved::Value(json!(10)));
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
    /// Unions after a wildcard, index list, slice, filter or descendant segment: each node's
    /// selections in turn (Jayway evaluates the token chain per node; a name union that is not
    /// the leaf iterates its names per node, `PropertyPathToken.java:84-90`, as an index union
    /// does its indices, `ArrayIndexToken.java:36-38`), and a name union at the leaf is one
    /// object per node (`PathToken.java:92-122`).
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
                "$.commits[*]['removed','modified'][*]",
                &commits,
                json!(["r1", "m1", "m2"]),
            ),
            (
                "$.commits[*]['removed','modified']",
                &commits,
                json!([
                    {"removed": ["r1"], "modified": ["m1"]},
                    {"removed": [], "modified": ["m2"]},
                ]),
            ),
            ("$.m[*][0,2]", &matrix, json!([1, 3, 4, 6])),
            ("$.m[*][-1,0]", &matrix, json!([3, 1, 6, 4])),
            ("$.m[0:2][2,1]", &matrix, json!([3, 2, 6, 5])),
            (
                "$.a[0:3]['y','x']",
                &items,
                json!([
                    {"y": "y0", "x": "x0"},
                    {"y": "y1", "x": "x1"},
                    {"y": "y2", "x": "x2"},
                ]),
            ),
            (
                "$.a[?(@.k)]['y','x']",
                &items,
                json!([{"y": "y0", "x": "x0"}, {"y": "y2", "x": "x2"}]),
            ),
            (
                "$.a[?(@.k)]['y','x'].length()",
                &items,
                json!([null, null, null, null]),
            ),
            // A filter that reads the root still sees the document's root.
            (
                "$.a[?(@.v == $.want)]['y','x']",
                &items,
                json!([{"y": "y2", "x": "x2"}]),
            ),
            ("$.a[*]['x','y'][0]", &items, json!([])),
            // Descendants: each node, itself first, then its children in document order.
            (
                "$..['a','b']",
                &tree,
                json!([{"a": 1, "b": 2}, {"a": 4, "b": 3}]),
            ),
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
        use jsonpath_rust::query::js_path_process;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::super::{
            JaywayPath, Resolved, jayway_length, parse_rfc, split_length_call, walk,
        };
        use crate::extract::tests::{definite_paths, json_documents};

        /// What jsonpath-rust (RFC 9535) selects for `path` (without `length()`) on `doc`.
        fn rfc(path: &str, doc: &Value) -> Vec<Value> {
            let query = parse_rfc(path).unwrap();
            js_path_process(&query, doc)
                .unwrap()
                .into_iter()
                .map(|hit| hit.val.clone())
                .collect()
        }

        /// One step of the reference, and how it is spelled.
        #[derive(Debug, Clone)]
        enum Step {
            Name(String),
            Names(Vec<String>),
            Index(i64),
            Indices(Vec<i64>),
            Wildcard(&'static str),
            /// A filter reading only `@`, as written.
            Filter(String),
            ScanName(String),
            ScanNames(Vec<String>),
            ScanWildcard,
        }

        impl Step {
            fn spelling(&self) -> String {
                let names = |names: &[String]| {
                    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
                    quoted.join(",")
                };
                match self {
                    Step::Name(name) => format!(".{name}"),
                    Step::Names(names_) => format!("[{}]", names(names_)),
                    Step::Index(index) => format!("[{index}]"),
                    Step::Indices(indices) => {
                        let listed: Vec<String> = indices.iter().map(i64::to_string).collect();
                        format!("[{}]", listed.join(","))
                    }
                    Step::Wildcard(spelling) => (*spelling).to_owned(),
                    Step::Filter(filter) => filter.clone(),
                    Step::ScanName(name) => format!("..{name}"),
                    Step::ScanNames(names_) => format!("..[{}]", names(names_)),
                    Step::ScanWildcard => "..*".to_owned(),
                }
            }

            /// `isTokenDefinite` of the step's last token.
            fn definite(&self, leaf: bool) -> bool {
                match self {
                    Step::Name(_) | Step::Index(_) => true,
                    Step::Names(_) => leaf,
                    _ => false,
                }
            }

            fn is_scan(&self) -> bool {
                matches!(
                    self,
                    Step::ScanName(_) | Step::ScanNames(_) | Step::ScanWildcard
                )
            }
        }

        /// The node and every object and array below it, each before its children.
        fn self_and_below<'v>(node: &'v Value, out: &mut Vec<&'v Value>) {
            match node {
                Value::Object(members) => {
                    out.push(node);
                    members.values().for_each(|v| self_and_below(v, out));
                }
                Value::Array(items) => {
                    out.push(node);
                    items.iter().for_each(|v| self_and_below(v, out));
                }
                _ => {}
            }
        }

        fn merged(members: &Map<String, Value>, names: &[String]) -> Value {
            let mut merged = Map::new();
            for name in names {
                if let Some(v) = members.get(name) {
                    merged.insert(name.clone(), v.clone());
                }
            }
            Value::Object(merged)
        }

        /// Jayway's answer computed another way: step by step over the whole node list, each
        /// selection made by jsonpath-rust on one node (where RFC 9535 and Jayway agree), with
        /// Jayway's rules applied around it: a step that finds nothing fails the read while
        /// every step before it is definite, a leaf name union merges, a filter on an object
        /// tests the object, and `..` offers every object and array to the step after it.
        /// `None` is a failed read.
        fn reference(steps: &[Step], doc: &Value, length: bool) -> Option<Vec<Value>> {
            let mut nodes = vec![doc.clone()];
            let mut upstream_definite = true;
            for (k, step) in steps.iter().enumerate() {
                let leaf = k + 1 == steps.len() && !length;
                let mut next = Vec::new();
                for node in &nodes {
                    let mut below = Vec::new();
                    self_and_below(node, &mut below);
                    match (step, node) {
                        (Step::Name(name), Value::Object(members)) => match members.get(name) {
                            Some(member) => next.push(member.clone()),
                            None if !leaf && upstream_definite => return None,
                            None => {}
                        },
                        (Step::Names(names), Value::Object(members)) if leaf => {
                            next.push(merged(members, names));
                        }
                        (Step::Names(names), Value::Object(members)) => {
                            next.extend(names.iter().filter_map(|n| members.get(n)).cloned());
                        }
                        (Step::Index(_) | Step::Indices(_), Value::Array(_)) => {
                            next.extend(rfc(&format!("${}", step.spelling()), node));
                        }
                        (Step::Wildcard(_), _) => next.extend(rfc("$.*", node)),
                        (Step::Filter(filter), Value::Array(_)) => {
                            next.extend(rfc(&format!("${filter}"), node));
                        }
                        (Step::Filter(filter), Value::Object(_)) => {
                            let wrapped = Value::Array(vec![node.clone()]);
                            next.extend(rfc(&format!("${filter}"), &wrapped));
                        }
                        (Step::ScanName(name), _) => {
                            for scanned in below {
                                if let Some(member) = scanned.get(name)
                                    && scanned.is_object()
                                {
                                    next.push(member.clone());
                                }
                            }
                        }
                        (Step::ScanNames(names), _) => {
                            for scanned in below {
                                let Value::Object(members) = scanned else {
                                    continue;
                                };
                                if !leaf {
                                    next.extend(
                                        names.iter().filter_map(|n| members.get(n)).cloned(),
                                    );
                                } else if names.iter().all(|n| members.contains_key(n)) {
                                    next.push(merged(members, names));
                                }
                            }
                        }
                        (Step::ScanWildcard, _) => {
                            for scanned in below {
                                next.extend(rfc("$.*", scanned));
                            }
                        }
                        _ if upstream_definite => return None,
                        _ => {}
                    }
                }
                upstream_definite &= step.definite(leaf);
                nodes = next;
            }
            if length {
                nodes = nodes.iter().map(jayway_length).collect();
            }
            Some(nodes)
        }

        fn name() -> impl Strategy<Value = String> + Clone {
            "[ab]{1,2}"
        }

        fn step() -> impl Strategy<Value = Step> {
            let names = prop::collection::vec(name(), 2..4);
            prop_oneof![
                3 => name().prop_map(Step::Name),
                1 => names.clone().prop_map(Step::Names),
                2 => (-3i64..4).prop_map(Step::Index),
                1 => prop::collection::vec(-3i64..4, 2..4).prop_map(Step::Indices),
                1 => prop_oneof![Just("[*]"), Just(".*")].prop_map(Step::Wildcard),
                1 => prop_oneof![
                    name().prop_map(|n| format!("[?(@.{n})]")),
                    name().prop_map(|n| format!("[?(!@.{n})]")),
                    (name(), name()).prop_map(|(a, b)| format!("[?(@.{a} || @['{b}'])]")),
                    (name(), name()).prop_map(|(a, b)| format!("[?((@.{a}) && @.{b} == true)]")),
                    Just("[?(@ == null)]".to_owned()),
                    Just("[?(@ > 0)]".to_owned()),
                    name().prop_map(|n| format!("[?(length(@.{n}) >= 1)]")),
                ]
                .prop_map(Step::Filter),
                1 => name().prop_map(Step::ScanName),
                1 => names.prop_map(Step::ScanNames),
                1 => Just(Step::ScanWildcard),
            ]
        }

        proptest! {
            /// The direct walk answers what the token evaluation answers on a definite path,
            /// and selects what jsonpath-rust selects first.
            #[test]
            fn walking_agrees_with_the_token_evaluation(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                path in definite_paths(),
            ) {
                let compiled = JaywayPath::compile(&path).unwrap();
                let steps = compiled.steps().expect("definite path has steps");
                let walked = walk(&doc, steps);
                let evaluated = match compiled.select(&doc) {
                    Ok(hits) => hits.into_iter().last().map(|hit| hit.into_owned()),
                    Err(_) => None,
                };
                let answer = |node: &Value| match compiled.length {
                    Some(_) => jayway_length(node),
                    None => node.clone(),
                };
                prop_assert_eq!(walked.map(answer), evaluated, "{}", path);
                let (plain, _) = split_length_call(&path);
                let first = rfc(plain, &doc).into_iter().next();
                prop_assert_eq!(walked.cloned(), first, "{}", path);
            }

            /// Chains of names, name and index unions, indices, wildcards, filters on `@` and
            /// deep scans for names and `*`, with or without a trailing `length()`, answer
            /// what the step-by-step reference answers, order included.
            #[test]
            fn chains_agree_with_a_step_by_step_reference(
                doc in json_documents("[ab]{1,2}", "[ab]{0,2}"),
                steps in prop::collection::vec(step(), 0..5),
                length in prop::bool::weighted(0.25),
            ) {
                // `$..p.length()` counts `$..p.*` instead; it has its own cases.
                let length = length && !steps.first().is_some_and(Step::is_scan);
                let spelled: String = steps.iter().map(Step::spelling).collect();
                let path = format!("${spelled}{}", if length { ".length()" } else { "" });
                let refused = !length
                    && steps.len() >= 2
                    && matches!(steps[steps.len() - 2], Step::ScanWildcard)
                    && matches!(steps[steps.len() - 1], Step::Name(_) | Step::Wildcard(_));
                let compiled = JaywayPath::compile(&path);
                prop_assert_eq!(compiled.is_err(), refused, "{}: {:?}", path, compiled.err());
                let Ok(compiled) = compiled else {
                    return Ok(());
                };
                let definite = steps
                    .iter()
                    .enumerate()
                    .all(|(k, step)| step.definite(k + 1 == steps.len() && !length));
                let expected = match reference(&steps, &doc, length) {
                    None => Resolved::NotFound,
                    Some(nodes) if definite => {
                        nodes.into_iter().last().map_or(Resolved::NotFound, Resolved::Value)
                    }
                    Some(nodes) => Resolved::Value(Value::Array(nodes)),
                };
                prop_assert_eq!(compiled.evaluate(&doc), expected, "{}", path);
            }
        }
    }
}
