//! `[report] run_id`: a template over a rule's resolved variables (`$NAME` or `${NAME}`, as
//! GWT's variables are written in a Jenkins job), compiled once and rendered per call.

use crate::extract::Variables;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(String),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Template {
    /// Parses `source`; an error says what is wrong. A `$` not followed by a name is text.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err(
                "must not be empty: e.g. \"$RUN_ID\" with RUN_ID = $.context.runId".to_owned(),
            );
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '$' {
                text.push(c);
                continue;
            }
            let braced = chars.peek().is_some_and(|(_, next)| *next == '{');
            if braced {
                chars.next();
            } else if !chars.peek().is_some_and(|(_, next)| is_name_start(*next)) {
                text.push('$');
                continue;
            }
            let mut name = String::new();
            while let Some((_, next)) = chars.peek() {
                if !is_name(*next) {
                    break;
                }
                name.push(*next);
                chars.next();
            }
            if braced && (chars.next().map(|(_, c)| c) != Some('}') || name.is_empty()) {
                return Err("`${` must be followed by a variable name and `}`".to_owned());
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Variable(name));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if !parts.iter().any(|part| matches!(part, Part::Variable(_))) {
            return Err(format!(
                "`{source}` names no variable: the run id differs per call, e.g. \"$RUN_ID\""
            ));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The variables the template reads.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text with each variable's resolved value; `None` when a variable is unresolved or
    /// the result is blank (the call names no run).
    pub fn render(&self, variables: &Variables) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(variables.get(name)?),
            }
        }
        let out = out.trim();
        (!out.is_empty()).then(|| out.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_from_the_resolved_variables() {
        let variables: Variables = [("RUN_ID", "r_abc"), ("ENV", "prod"), ("EMPTY", "")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect();
        // check(template, rendered)
        let check = |source: &str, expected: Option<&str>| {
            let template = Template::parse(source).expect(source);
            assert_eq!(template.render(&variables).as_deref(), expected, "{source}");
        };
        check("$RUN_ID", Some("r_abc"));
        check("${RUN_ID}", Some("r_abc"));
        check("${ENV}-$RUN_ID", Some("prod-r_abc"));
        check("$RUN_ID$", Some("r_abc$"));
        check("cost $5 $RUN_ID", Some("cost $5 r_abc"));
        check(" $RUN_ID ", Some("r_abc"));
        check("$MISSING", None);
        check("$EMPTY", None);
        check("$ENV$MISSING", None);
    }

    #[test]
    fn a_template_that_cannot_name_a_run_is_refused() {
        let check = |source: &str, reason: &str| {
            let error = Template::parse(source).expect_err(source);
            assert!(error.contains(reason), "{source}: {error}");
        };
        check("", "must not be empty");
        check("   ", "must not be empty");
        check("r_fixed", "names no variable");
        check("$", "names no variable");
        check("${RUN_ID", "`${` must be followed");
        check("${}", "`${` must be followed");
    }

    #[test]
    fn the_variables_read_are_listed() {
        let template = Template::parse("${ENV}-$RUN_ID").unwrap();
        assert_eq!(template.variables().collect::<Vec<_>>(), ["ENV", "RUN_ID"]);
    }
}
