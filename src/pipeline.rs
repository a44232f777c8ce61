//! The per-rule pipeline after verification: parse the body → resolve the variables → render
//! and search the filter → pick the idempotency key. `serve` and `hookgate test` both run
//! exactly this, so what `test` shows is what `serve` does.
//!
//! Invariant: `hookgate test` and the trigger path share one pipeline function; the GWT
//! scenario corpus (`tests/gwt/`) is run through both and must give the same answers.

use crate::extract::{self, Body, BodyError, Shape, Variables};
use crate::filter::FilterError;
use crate::verify::Verified;

/// The filter inputs and result GWT echoes for every rule it evaluated.
#[derive(Debug)]
pub struct Evaluation {
    pub variables: Variables,
    pub rendered_text: String,
}

/// What a verified call comes to for one rule.
#[derive(Debug)]
pub enum Evaluated {
    /// The filter matched: the call is to be dispatched, de-duplicated by `key` if the rule
    /// has `[idempotency]` and the call carries one.
    Matched {
        evaluation: Evaluation,
        key: Option<String>,
    },
    /// The filter did not match: nothing is dispatched.
    Filtered(Evaluation),
}

/// Why the pipeline stopped before a filter result.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// The rule reads the body as JSON and neither the strict nor the lenient parse took it
    /// (answered 400 with the position).
    #[error(transparent)]
    InvalidBody(BodyError),
    /// The filter could not be evaluated (backtrack limit, rendering too long).
    #[error("the filter could not be evaluated: {error}")]
    FilterFailed {
        evaluation: Evaluation,
        #[source]
        error: FilterError,
    },
}

/// The body of one call, parsed at most once however many rules read it.
#[derive(Debug)]
pub struct Bodies<'a> {
    /// Several rules read the body: parse it whole, since one rule's pruned shape would not
    /// serve another's paths.
    shared: bool,
    parsed: Option<Result<Body<'a>, BodyError>>,
}

impl Bodies<'_> {
    /// For a call evaluated against `readers` rules.
    pub fn new(readers: usize) -> Self {
        Self {
            shared: readers > 1,
            parsed: None,
        }
    }
}

/// Runs one verified rule's pipeline on its call.
pub fn evaluate<'a>(
    verified: &Verified<'a>,
    bodies: &mut Bodies<'a>,
) -> Result<Evaluated, Stopped> {
    let rule = verified.rule();
    let body = if rule.needs_json() {
        let shape = if bodies.shared {
            &Shape::Whole
        } else {
            &rule.body_shape
        };
        match bodies
            .parsed
            .get_or_insert_with(|| Body::parse(verified, shape))
        {
            Ok(body) => Some(&*body),
            Err(error) => return Err(Stopped::InvalidBody(*error)),
        }
    } else {
        None
    };
    let variables = extract::resolve(verified, body);
    let outcome = match rule.filter.evaluate(&variables) {
        Ok(outcome) => outcome,
        Err(error) => {
            let evaluation = Evaluation {
                variables,
                rendered_text: String::new(),
            };
            return Err(Stopped::FilterFailed { evaluation, error });
        }
    };
    let evaluation = Evaluation {
        variables,
        rendered_text: outcome.rendered_text,
    };
    if !outcome.matched {
        return Ok(Evaluated::Filtered(evaluation));
    }
    let key = rule
        .idempotency
        .as_ref()
        .and_then(|spec| spec.key(verified, body));
    Ok(Evaluated::Matched { evaluation, key })
}
