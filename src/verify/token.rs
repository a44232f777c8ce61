//! Sender tokens: where GWT reads them from, and which rules a token selects.
//!
//! Rules are indexed by the SHA-256 of their token, so a lookup never compares the token
//! itself; the digest match is then confirmed in constant time. The answer for an unknown token
//! is the same whatever was sent.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{AUTHORIZATION, HeaderMap};

use crate::rules::Rule;
use crate::secret::token_digest;

/// The token a request carries, read as GWT does, first hit wins: parameter `token` (query or
/// form), header `token`, `Authorization: Bearer <t>`, header `X-Gitlab-Token`. A present but
/// empty parameter means "no token" and stops the search, as in GWT.
pub fn given_token<'a>(params: &'a [(String, String)], headers: &'a HeaderMap) -> Option<&'a [u8]> {
    let found: &[u8] = if let Some((_, value)) = params.iter().find(|(k, _)| k == "token") {
        value.as_bytes()
    } else if let Some(value) = headers.get("token") {
        value.as_bytes()
    } else if let Some(value) = headers
        .get_all(AUTHORIZATION)
        .find_map(|v| v.as_bytes().strip_prefix(b"Bearer "))
    {
        value
    } else if let Some(value) = headers.get("x-gitlab-token") {
        value.as_bytes()
    } else {
        return None;
    };
    (!found.is_empty()).then_some(found)
}

/// A rule selected by its token (or by name with its token checked). Only this module creates
/// one, so `verify::check` can only run on rules the token actually selected.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'r> {
    pub(super) rule: &'r Arc<Rule>,
}

impl<'r> Candidate<'r> {
    pub fn rule(&self) -> &'r Arc<Rule> {
        self.rule
    }
}

/// Finds the rules a token selects.
#[derive(Debug, Default)]
pub struct TokenIndex {
    by_digest: HashMap<[u8; 32], Vec<usize>>,
    tokenless: Vec<usize>,
}

impl TokenIndex {
    pub fn build(rules: &[Arc<Rule>]) -> Self {
        let mut index = Self::default();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.token {
                Some(token) => index
                    .by_digest
                    .entry(token_digest(token.expose()))
                    .or_default()
                    .push(i),
                None => index.tokenless.push(i),
            }
        }
        index
    }

    /// Every rule whose token equals `token` (fan-out), or every tokenless rule when no token
    /// was given, in rule order. A rule with a token is never selected without it, and a
    /// tokenless rule never when a token is given (GWT's matching rule).
    pub fn candidates<'r>(
        &self,
        rules: &'r [Arc<Rule>],
        token: Option<&[u8]>,
    ) -> Vec<Candidate<'r>> {
        let indices: &[usize] = match token {
            None => &self.tokenless,
            Some(token) => self
                .by_digest
                .get(&token_digest(token))
                .map(Vec::as_slice)
                .unwrap_or_default(),
        };
        indices
            .iter()
            .map(|&i| &rules[i])
            .filter(|rule| match (&rule.token, token) {
                (Some(expected), Some(given)) => expected.matches(given),
                (None, None) => true,
                _ => false,
            })
            .map(|rule| Candidate { rule })
            .collect()
    }
}

/// The rule named in `/hooks/{rule}`, if its token (when it has one) was given.
pub fn named<'r>(rule: &'r Arc<Rule>, token: Option<&[u8]>) -> Option<Candidate<'r>> {
    match (&rule.token, token) {
        (None, _) => Some(Candidate { rule }),
        (Some(expected), Some(given)) if expected.matches(given) => Some(Candidate { rule }),
        (Some(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn token_sources_in_gwt_order() {
        let all = headers(&[
            ("token", "from-header"),
            ("Authorization", "Bearer from-bearer"),
            ("X-Gitlab-Token", "from-gitlab"),
        ]);
        let p = params(&[("token", "from-param"), ("token", "second")]);
        assert_eq!(given_token(&p, &all), Some(&b"from-param"[..]));
        assert_eq!(given_token(&[], &all), Some(&b"from-header"[..]));
        let h = headers(&[
            ("Authorization", "Basic abc"),
            ("Authorization", "Bearer from-bearer"),
            ("X-Gitlab-Token", "from-gitlab"),
        ]);
        assert_eq!(given_token(&[], &h), Some(&b"from-bearer"[..]));
        // `Bearer` is matched exactly: case and the single space matter, the rest is verbatim.
        let h = headers(&[
            ("Authorization", "bearer x"),
            ("X-Gitlab-Token", "from-gitlab"),
        ]);
        assert_eq!(given_token(&[], &h), Some(&b"from-gitlab"[..]));
        let h = headers(&[("Authorization", "Bearer  two-spaces")]);
        assert_eq!(given_token(&[], &h), Some(&b" two-spaces"[..]));
        assert_eq!(given_token(&[], &headers(&[])), None);
    }

    #[test]
    fn an_empty_token_parameter_means_no_token_and_hides_headers() {
        let h = headers(&[("token", "from-header")]);
        assert_eq!(given_token(&params(&[("token", "")]), &h), None);
        // Other parameters do not matter.
        assert_eq!(
            given_token(&params(&[("other", "x")]), &h),
            Some(&b"from-header"[..])
        );
    }
}
