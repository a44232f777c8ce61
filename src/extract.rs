//! Variable extraction exactly as GWT does it: header variables, then query (and form)
//! parameters, then JSONPath variables on the body, with GWT's flattening, regex filters and
//! defaults (reference `gwt-plugin.md` §6).
//!
//! Everything here is compiled once per rule; per request the work is one JSON parse shared by
//! every rule that needs it, then one walk per variable.

mod gson;
mod java_regex;
mod jsonpath;
mod lenient;
mod shape;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use actix_web::http::header::{HeaderMap, HeaderName};
use fancy_regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::rules::model::{HeaderEntry, IdempotencySection, QueryEntry, VariableEntry};
use crate::verify::Verified;
pub use jsonpath::JaywayPath;
use jsonpath::Resolved;
pub use shape::Shape;

pub use gson::compact as gson_compact;
pub(crate) use java_regex::Use as RegexUse;
// For the fuzz target's property (fuzz/props.rs); the gateway reaches it through `Body`.
#[doc(hidden)]
pub use lenient::{LenientError, parse as lenient_parse, same_document as lenient_same_document};

/// Resolved variables, sorted by name as GWT's `TreeMap` is.
pub type Variables = BTreeMap<String, String>;

/// Bounds the work one regex may do on hostile input; a filter that hits it counts as
/// unresolved rather than tying up a worker.
const REGEX_BACKTRACK_LIMIT: usize = 100_000;

/// Most variables one request may produce, over all of a rule's variables.
pub const MAX_VARIABLES: usize = 10_000;
/// Most bytes (names and values) one request's variables may take. Flattening repeats each
/// path in every name below it, so a small hostile body could otherwise expand a
/// thousandfold; the excess leaves the variable unresolved instead.
pub const MAX_VARIABLE_BYTES: usize = 8 * 1024 * 1024;

/// What is left of [`MAX_VARIABLES`] and [`MAX_VARIABLE_BYTES`] for one request.
#[derive(Debug)]
pub struct Budget {
    entries: usize,
    bytes: usize,
}

/// A variable would have gone over the request's [`Budget`].
#[derive(Debug)]
struct OverBudget;

impl Default for Budget {
    fn default() -> Self {
        Self {
            entries: MAX_VARIABLES,
            bytes: MAX_VARIABLE_BYTES,
        }
    }
}

impl Budget {
    fn take(&mut self, name: &str, value: &str) -> Result<(), OverBudget> {
        let bytes = name.len() + value.len();
        if self.entries == 0 || bytes > self.bytes {
            return Err(OverBudget);
        }
        self.entries -= 1;
        self.bytes -= bytes;
        Ok(())
    }
}

/// Inserts one entry if the budget allows it.
fn put(
    out: &mut Variables,
    budget: &mut Budget,
    name: String,
    value: String,
) -> Result<(), OverBudget> {
    budget.take(&name, &value)?;
    out.insert(name, value);
    Ok(())
}

/// A problem in one field of a variable or filter definition, found at start-up.
#[derive(Debug)]
pub struct CompileError {
    pub field: &'static str,
    pub reason: String,
}

/// GWT's `regexpFilter`: every match is deleted from the value.
#[derive(Debug, Clone, Default)]
struct DeletionFilter(Option<Arc<Regex>>);

impl DeletionFilter {
    fn compile(pattern: Option<&str>) -> Result<Self, CompileError> {
        match pattern {
            None | Some("") => Ok(Self(None)),
            Some(pattern) => compile_regex(pattern, RegexUse::ReplaceAll)
                .map(|regex| Self(Some(regex)))
                .map_err(|reason| CompileError {
                    field: "regex_filter",
                    reason,
                }),
        }
    }

    /// `None` when the regex gave up (backtrack limit); GWT treats a failing filter as an
    /// unresolved variable.
    fn apply<'t>(&self, value: &'t str) -> Option<Cow<'t, str>> {
        match &self.0 {
            None => Some(Cow::Borrowed(value)),
            Some(regex) => regex.try_replacen(value, 0, "").ok(),
        }
    }
}

/// Compiles a GWT (Java) regex: translated from Java's dialect by `java_regex`, for what the
/// caller does with it; fancy-regex gives the look-around Java users rely on.
///
/// Compiled regexes are shared by pattern: thousands of rules often repeat the same filter
/// (`^push refs/heads/main$`), and each compiled regex costs some 17 KiB and 0.1 ms.
pub(crate) fn compile_regex(pattern: &str, usage: RegexUse) -> Result<Arc<Regex>, String> {
    static FIND: CompileCache<Arc<Regex>> = CompileCache::new();
    static REPLACE_ALL: CompileCache<Arc<Regex>> = CompileCache::new();
    let compiled = match usage {
        RegexUse::Find => &FIND,
        RegexUse::ReplaceAll => &REPLACE_ALL,
    };
    compiled.get_or_compile(pattern, |pattern| {
        RegexBuilder::new(&java_regex::translate(pattern, usage)?)
            .backtrack_limit(REGEX_BACKTRACK_LIMIT)
            .build()
            .map(Arc::new)
            .map_err(|e| format!("invalid regex: {e}"))
    })
}

/// Compiled forms shared by their source text, for what rules repeat by the thousand (regexes,
/// JSONPath). Only compilation at start-up touches it; a failure is not kept.
pub(crate) struct CompileCache<T>(LazyLock<Mutex<HashMap<String, T>>>);

impl<T: Clone> CompileCache<T> {
    pub(crate) const fn new() -> Self {
        Self(LazyLock::new(Mutex::default))
    }

    pub(crate) fn get_or_compile(
        &self,
        source: &str,
        compile: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut compiled = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(done) = compiled.get(source) {
            return Ok(done.clone());
        }
        let done = compile(source)?;
        compiled.insert(source.to_owned(), done.clone());
        Ok(done)
    }
}

/// GWT's `toVariableName`: whitespace and `-` become `_`; nothing else changes. Whitespace is
/// Java's `\s`, which is ASCII only.
pub fn to_variable_name(raw: &str) -> String {
    raw.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '-' => '_',
            c => c,
        })
        .collect()
}

/// Variable names become Jenkins parameters and environment variables, so they are kept to
/// names every shell and Jenkins accept.
fn validate_variable_name(name: &str) -> Result<(), CompileError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(CompileError {
            field: "name",
            reason: format!(
                "`{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
            ),
        })
    }
}

/// A JSONPath variable on the body (GWT `genericVariables`).
#[derive(Debug)]
pub struct BodyVariable {
    name: String,
    path: JaywayPath,
    filter: DeletionFilter,
    default: Option<String>,
    flatten: bool,
}

impl BodyVariable {
    pub fn compile(entry: &VariableEntry) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        if let Err(error) = validate_variable_name(&entry.name) {
            errors.push(error);
        }
        let path = if entry.jsonpath.trim().is_empty() {
            errors.push(CompileError {
                field: "jsonpath",
                reason: "is empty".to_owned(),
            });
            None
        } else {
            JaywayPath::compile(&entry.jsonpath)
                .map_err(|reason| {
                    errors.push(CompileError {
                        field: "jsonpath",
                        reason,
                    })
                })
                .ok()
        };
        let filter = DeletionFilter::compile(entry.regex_filter.as_deref())
            .map_err(|error| errors.push(error))
            .ok();
        match (path, filter) {
            (Some(path), Some(filter)) if errors.is_empty() => Ok(Self {
                name: entry.name.clone(),
                path,
                filter,
                default: entry.default.clone(),
                flatten: entry.flatten.unwrap_or(true),
            }),
            _ => Err(errors),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &JaywayPath {
        &self.path
    }

    /// Adds this variable's entries for `document` (None: empty or unparsed body) to `out`.
    fn resolve(
        &self,
        document: Option<&Value>,
        raw_body: &str,
        out: &mut Variables,
        budget: &mut Budget,
    ) {
        let mut produced = Variables::new();
        if let Some(document) = document
            && self
                .produce(document, raw_body, &mut produced, budget)
                .is_err()
        {
            tracing::warn!(
                variable = %self.name,
                "Variable expands beyond the per-request limit; left unresolved."
            );
            produced.clear();
        }
        // GWT §6.5: the default replaces the bare name when nothing resolved or it resolved to "".
        if let Some(default) = &self.default {
            let empty = produced.get(&self.name).is_some_and(String::is_empty);
            if produced.is_empty() || empty {
                produced.insert(self.name.clone(), default.clone());
            }
        }
        out.extend(produced);
    }

    fn produce(
        &self,
        document: &Value,
        raw_body: &str,
        produced: &mut Variables,
        budget: &mut Budget,
    ) -> Result<(), OverBudget> {
        if self.path.is_root() {
            if self.flatten {
                flatten(&self.name, document, &self.filter, produced, budget)?;
            }
            // GWT answers `$` with the body exactly as received, unfiltered.
            return put(produced, budget, self.name.clone(), raw_body.to_owned());
        }
        let Resolved::Value(value) = self.path.evaluate(document) else {
            return Ok(());
        };
        if self.flatten {
            flatten(&self.name, &value, &self.filter, produced, budget)
        } else if let Some(rendered) = gson::scalar(&value)
            && let Some(filtered) = self.filter.apply(&rendered)
        {
            put(produced, budget, self.name.clone(), filtered.into_owned())
        } else {
            Ok(())
        }
    }
}

/// GWT's `JsonFlattener.flattenJson`: every leaf under `key_<index|member>`, then the root as
/// compact Gson JSON when it is not a string. JSON null yields nothing.
fn flatten(
    key: &str,
    value: &Value,
    filter: &DeletionFilter,
    out: &mut Variables,
    budget: &mut Budget,
) -> Result<(), OverBudget> {
    flatten_leaves(key, value, filter, out, budget)?;
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        let rendered = gson::compact(value);
        if let Some(filtered) = filter.apply(&rendered) {
            put(out, budget, to_variable_name(key), filtered.into_owned())?;
        }
    }
    Ok(())
}

fn flatten_leaves(
    key: &str,
    value: &Value,
    filter: &DeletionFilter,
    out: &mut Variables,
    budget: &mut Budget,
) -> Result<(), OverBudget> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_leaves(&format!("{key}_{i}"), item, filter, out, budget)?;
            }
        }
        Value::Object(members) => {
            for (member, item) in members {
                flatten_leaves(&format!("{key}_{member}"), item, filter, out, budget)?;
            }
        }
        scalar => {
            if let Some(rendered) = gson::scalar(scalar)
                && let Some(filtered) = filter.apply(&rendered)
            {
                put(out, budget, to_variable_name(key), filtered.into_owned())?;
            }
        }
    }
    Ok(())
}

/// A header (GWT `genericHeaderVariables`) or query/form parameter (`genericRequestVariables`)
/// variable.
#[derive(Debug)]
pub struct RequestVariable {
    /// Header name (matched case-insensitively) or parameter name (case-sensitively).
    key: String,
    /// The variable name GWT derives from the key.
    name: String,
    filter: DeletionFilter,
}

impl RequestVariable {
    pub fn from_header(entry: &HeaderEntry) -> Result<Self, Vec<CompileError>> {
        let name = to_variable_name(&entry.name).to_lowercase();
        Self::compile(&entry.name, name, entry.regex_filter.as_deref())
    }

    pub fn from_query(entry: &QueryEntry) -> Result<Self, Vec<CompileError>> {
        let name = to_variable_name(&entry.name);
        Self::compile(&entry.name, name, entry.regex_filter.as_deref())
    }

    fn compile(key: &str, name: String, filter: Option<&str>) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        if key.trim().is_empty() {
            errors.push(CompileError {
                field: "name",
                reason: "is empty".to_owned(),
            });
        }
        let filter = DeletionFilter::compile(filter)
            .map_err(|error| errors.push(error))
            .ok();
        match filter {
            Some(filter) if errors.is_empty() => Ok(Self {
                key: key.to_owned(),
                name,
                filter,
            }),
            _ => Err(errors),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts value `i` through the deletion filter as `<name>_<i>`, and as the bare `<name>` too
    /// when `bare`. A value the filter gives up on is left out, as GWT leaves it unresolved.
    fn put_value(
        &self,
        out: &mut Variables,
        budget: &mut Budget,
        i: usize,
        value: &str,
        bare: bool,
    ) -> Result<(), OverBudget> {
        let Some(filtered) = self.filter.apply(value) else {
            return Ok(());
        };
        if bare {
            put(out, budget, self.name.clone(), filtered.to_string())?;
        }
        put(
            out,
            budget,
            format!("{}_{i}", self.name),
            filtered.into_owned(),
        )
    }
}

/// Header variables: `<name>_<i>` for every value and `<name>` for the first, even when there
/// are several (GWT §6.2). Entries past the request's budget are left out.
pub fn resolve_headers(
    variables: &[RequestVariable],
    headers: &HeaderMap,
    out: &mut Variables,
    budget: &mut Budget,
) {
    for variable in variables {
        let values = headers
            .get_all(variable.key.as_str())
            .map(|value| String::from_utf8_lossy(value.as_bytes()));
        for (i, value) in values.enumerate() {
            if variable.put_value(out, budget, i, &value, i == 0).is_err() {
                return;
            }
        }
    }
}

/// Query and form parameter variables: `<name>_<i>` for every value, `<name>` only when there
/// is exactly one (GWT §6.3). Entries past the request's budget are left out: a 1 MiB form of
/// `a=&a=&…` would otherwise give hundreds of thousands of them.
pub fn resolve_query(
    variables: &[RequestVariable],
    params: &[(String, String)],
    out: &mut Variables,
    budget: &mut Budget,
) {
    for variable in variables {
        let values: Vec<&str> = params
            .iter()
            .filter(|(name, _)| *name == variable.key)
            .map(|(_, value)| value.as_str())
            .collect();
        for (i, value) in values.iter().enumerate() {
            if variable
                .put_value(out, budget, i, value, values.len() == 1)
                .is_err()
            {
                return;
            }
        }
    }
}

/// JSONPath variables on the body. `document` is `None` for an empty body, where every
/// variable is unresolved and only defaults apply.
pub fn resolve_body(
    variables: &[BodyVariable],
    document: Option<&Value>,
    raw_body: &str,
    out: &mut Variables,
    budget: &mut Budget,
) {
    for variable in variables {
        variable.resolve(document, raw_body, out, budget);
    }
}

/// The body as the JSONPath variables see it.
#[derive(Debug)]
pub struct Body<'a> {
    /// `None` for an empty body.
    doc: Option<Value>,
    /// What `$` answers: the body as received, or for a form post the synthesised JSON.
    raw: Cow<'a, str>,
}

/// The body is not JSON although the rule's variables need it (answered 400).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("body is not valid JSON at line {line}, column {column}")]
pub struct BodyError {
    pub line: usize,
    pub column: usize,
}

impl BodyError {
    /// The position of byte `offset`, 1-based, as serde_json counts it (columns in bytes).
    fn at(bytes: &[u8], offset: usize) -> Self {
        let before = &bytes[..offset.min(bytes.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        Self { line, column }
    }
}

impl<'a> Body<'a> {
    /// Parses the verified body once, building only what `shape` reads. A form post becomes
    /// `{"<field>": ["<value>", …]}` over its fields without `token`, as GWT synthesises it
    /// (§3), but from the signed body only: GWT's servlet also merges the query string in,
    /// which would let an unsigned `?env=prod` appended to a captured signed post override
    /// the signed `env` (a deliberate difference, listed in the README).
    pub fn parse(verified: &Verified<'a>, shape: &Shape) -> Result<Self, BodyError> {
        let inbound = verified.inbound();
        if inbound.form {
            let mut fields = serde_json::Map::new();
            for (name, value) in inbound
                .form_fields()
                .iter()
                .filter(|(name, _)| name != "token")
            {
                if let Value::Array(values) = fields
                    .entry(name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    values.push(Value::String(value.clone()));
                }
            }
            let doc = Value::Object(fields);
            let raw = serde_json::to_string_pretty(&doc).unwrap_or_default();
            return Ok(Self {
                doc: Some(doc),
                raw: Cow::Owned(raw),
            });
        }
        let bytes: &'a [u8] = &inbound.body;
        if bytes.is_empty() {
            return Ok(Self {
                doc: None,
                raw: Cow::Borrowed(""),
            });
        }
        // Checked once here, so neither the parse nor `$` (the raw text) needs to again.
        let text = std::str::from_utf8(bytes).map_err(|e| BodyError::at(bytes, e.valid_up_to()))?;
        let doc = match shape.parse(text) {
            Ok(doc) => doc,
            // GWT reads bodies with json-smart's permissive grammar, so a body with trailing
            // commas or single quotes is a normal GWT payload. It is tried only once the
            // strict parse failed, and what it refuses too is answered with the strict
            // parse's position, which is where the body stops being JSON.
            Err(strict) => match lenient::parse(text) {
                Ok(doc) => {
                    tracing::debug!(reason = %strict, "Body read with GWT's permissive JSON grammar.");
                    doc
                }
                Err(_) => {
                    return Err(BodyError {
                        line: strict.line(),
                        column: strict.column(),
                    });
                }
            },
        };
        Ok(Self {
            doc: Some(doc),
            raw: Cow::Borrowed(text),
        })
    }
}

/// Every variable of the verified rule, merged in GWT's order: headers, then query and form
/// parameters, then the body; later sources overwrite equal names.
pub fn resolve(verified: &Verified<'_>, body: Option<&Body<'_>>) -> Variables {
    let rule = verified.rule();
    let inbound = verified.inbound();
    // One budget for the whole request. The signed body's variables draw on it first, so
    // unsigned headers and query parameters cannot use it up and leave them unresolved.
    let mut budget = Budget::default();
    let (document, raw) = match body {
        Some(body) => (body.doc.as_ref(), body.raw.as_ref()),
        None => (None, ""),
    };
    let mut from_body = Variables::new();
    resolve_body(
        &rule.body_variables,
        document,
        raw,
        &mut from_body,
        &mut budget,
    );
    let mut out = Variables::new();
    resolve_headers(
        &rule.header_variables,
        inbound.headers,
        &mut out,
        &mut budget,
    );
    let params = request_params(inbound);
    resolve_query(&rule.query_variables, &params, &mut out, &mut budget);
    // GWT's merge order: the body overwrites equal names from headers and parameters.
    out.extend(from_body);
    out
}

/// The parameters `[[query]]` variables read. For a form post a signed field wins over the
/// query string: a name the form has is read from the form only, so an unsigned `?env=prod`
/// can neither replace nor join a signed `env`.
fn request_params<'i>(inbound: &'i crate::verify::Inbound<'_>) -> Cow<'i, [(String, String)]> {
    let form = inbound.form_fields();
    if form.is_empty() {
        return Cow::Borrowed(&inbound.params);
    }
    let signed: std::collections::HashSet<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    Cow::Owned(
        inbound
            .query_params()
            .iter()
            .filter(|(name, _)| !signed.contains(name.as_str()))
            .chain(form)
            .cloned()
            .collect(),
    )
}

/// Where a rule's idempotency key comes from (`[idempotency]`).
#[derive(Debug)]
pub struct IdempotencySpec {
    source: KeySource,
    pub ttl_secs: u64,
}

#[derive(Debug)]
enum KeySource {
    Path(JaywayPath),
    Header(HeaderName),
}

impl IdempotencySpec {
    pub fn compile(section: &IdempotencySection) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        if section.ttl_secs == 0 {
            errors.push(CompileError {
                field: "ttl_secs",
                reason: "must be at least 1".to_owned(),
            });
        }
        let source = match (&section.key, &section.header) {
            (Some(key), None) => JaywayPath::compile(key)
                .map(KeySource::Path)
                .map_err(|reason| {
                    errors.push(CompileError {
                        field: "key",
                        reason,
                    })
                })
                .ok(),
            (None, Some(header)) => HeaderName::from_bytes(header.as_bytes())
                .map(KeySource::Header)
                .map_err(|_| {
                    errors.push(CompileError {
                        field: "header",
                        reason: format!("`{header}` is not a header name"),
                    })
                })
                .ok(),
            _ => {
                errors.push(CompileError {
                    field: "key",
                    reason: "set exactly one of `key` (JSONPath) or `header`".to_owned(),
                });
                None
            }
        };
        match source {
            Some(source) if errors.is_empty() => Ok(Self {
                source,
                ttl_secs: section.ttl_secs,
            }),
            _ => Err(errors),
        }
    }

    /// Whether the key is read from the JSON body.
    pub fn needs_json(&self) -> bool {
        matches!(self.source, KeySource::Path(_))
    }

    /// The key's JSONPath, when it is read from the body.
    pub fn path(&self) -> Option<&JaywayPath> {
        match &self.source {
            KeySource::Path(path) => Some(path),
            KeySource::Header(_) => None,
        }
    }

    /// The key's value for this call; `None` when the call does not carry one (it is then
    /// delivered without de-duplication).
    pub fn key(&self, verified: &Verified<'_>, body: Option<&Body<'_>>) -> Option<String> {
        let value = match &self.source {
            KeySource::Header(name) => verified
                .inbound()
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            KeySource::Path(path) => match path.evaluate(body?.doc.as_ref()?) {
                Resolved::Value(value) => gson::scalar(&value),
                Resolved::NotFound => None,
            },
        };
        value.filter(|v| !v.is_empty())
    }
}
