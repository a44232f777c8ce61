//! GWT's optional filter (`regexpFilterText` / `regexpFilterExpression`, reference §7): the
//! text is rendered with the resolved variables, then the expression is *searched* in it.

use std::sync::Arc;

use fancy_regex::Regex;

use crate::extract::{CompileError, RegexUse, Variables, compile_regex};
use crate::rules::model::FilterSection;

/// A compiled filter. The default (no `[filter]`) matches everything.
#[derive(Debug, Default)]
pub struct Filter {
    text: String,
    expression: String,
    regex: Option<Arc<Regex>>,
}

/// The rendered text and whether the expression was found in it.
#[derive(Debug)]
pub struct FilterOutcome {
    pub rendered_text: String,
    pub matched: bool,
}

/// Longest rendered text evaluated. Rendering re-substitutes values, so a small body could
/// otherwise render to gigabytes.
pub const MAX_RENDERED_BYTES: usize = 8 * 1024 * 1024;

/// Why a filter could not be evaluated for one call.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter expression could not be evaluated")]
    Regex(#[source] fancy_regex::Error),
    #[error("filter text renders to more than {MAX_RENDERED_BYTES} bytes")]
    TooLong,
}

impl Filter {
    pub fn compile(section: Option<&FilterSection>) -> Result<Self, Vec<CompileError>> {
        let Some(section) = section else {
            return Ok(Self::default());
        };
        let regex = if section.expression.is_empty() {
            None
        } else {
            let regex = compile_regex(&section.expression, RegexUse::Find).map_err(|reason| {
                vec![CompileError {
                    field: "expression",
                    reason,
                }]
            })?;
            Some(regex)
        };
        Ok(Self {
            text: section.text.clone(),
            expression: section.expression.clone(),
            regex,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// Renders the text and searches the expression in it. An empty expression matches
    /// anything; a non-empty one is searched even in an empty text. The expression itself is
    /// never rendered, as in GWT.
    pub fn evaluate(&self, variables: &Variables) -> Result<FilterOutcome, FilterError> {
        let rendered_text =
            render_text(&self.text, variables, MAX_RENDERED_BYTES).ok_or(FilterError::TooLong)?;
        let matched = match &self.regex {
            None => true,
            Some(regex) => regex.is_match(&rendered_text).map_err(FilterError::Regex)?,
        };
        Ok(FilterOutcome {
            rendered_text,
            matched,
        })
    }
}

/// GWT's `Renderer.renderText`: longest variable name first (ties in name order), each a
/// literal replace-all of `$NAME` and then `${NAME}`. Unknown `$X` stays as written, and a
/// substituted value can itself be rewritten by a later, shorter name, exactly as in GWT.
/// Lengths and order are Java's (UTF-16 code units). `None` once the text passes `limit` bytes.
pub fn render_text(text: &str, variables: &Variables, limit: usize) -> Option<String> {
    if text.is_empty() {
        return Some(String::new());
    }
    if text.len() > limit {
        return None;
    }
    let mut names: Vec<(&String, &String)> = variables.iter().collect();
    names.sort_by(|(a, _), (b, _)| {
        let utf16 = |s: &str| s.encode_utf16().count();
        utf16(b)
            .cmp(&utf16(a))
            .then_with(|| a.encode_utf16().cmp(b.encode_utf16()))
    });
    let mut rendered = text.to_owned();
    for (name, value) in names {
        if !rendered.contains('$') {
            break;
        }
        for pattern in [format!("${name}"), format!("${{{name}}}")] {
            if rendered.contains(&pattern) {
                rendered = rendered.replace(&pattern, value);
                if rendered.len() > limit {
                    return None;
                }
            }
        }
    }
    Some(rendered)
}
