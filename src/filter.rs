//! GWT's optional filter (`regexpFilterText` / `regexpFilterExpression`, reference §7): the
//! text is rendered with the resolved variables, then the expression is *searched* in it.

use fancy_regex::Regex;

use crate::extract::{CompileError, Variables, compile_regex};
use crate::rules::model::FilterSection;

/// A compiled filter. The default (no `[filter]`) matches everything.
#[derive(Debug, Default)]
pub struct Filter {
    text: String,
    expression: String,
    regex: Option<Regex>,
}

/// The rendered text and whether the expression was found in it.
#[derive(Debug)]
pub struct FilterOutcome {
    pub rendered_text: String,
    pub matched: bool,
}

/// The expression could not be evaluated on this text (fancy-regex's backtrack limit).
#[derive(Debug, thiserror::Error)]
#[error("filter expression could not be evaluated: {0}")]
pub struct FilterError(#[source] fancy_regex::Error);

impl Filter {
    pub fn compile(section: Option<&FilterSection>) -> Result<Self, Vec<CompileError>> {
        let Some(section) = section else {
            return Ok(Self::default());
        };
        let regex = if section.expression.is_empty() {
            None
        } else {
            let regex = compile_regex(&section.expression).map_err(|reason| {
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
        let rendered_text = render_text(&self.text, variables);
        let matched = match &self.regex {
            None => true,
            Some(regex) => regex.is_match(&rendered_text).map_err(FilterError)?,
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
pub fn render_text(text: &str, variables: &Variables) -> String {
    if text.is_empty() {
        return String::new();
    }
    let mut names: Vec<(&String, &String)> = variables.iter().collect();
    names.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    let mut rendered = text.to_owned();
    for (name, value) in names {
        if !rendered.contains('$') {
            break;
        }
        rendered = rendered.replace(&format!("${name}"), value);
        rendered = rendered.replace(&format!("${{{name}}}"), value);
    }
    rendered
}
