//! Signature schemes (`port`, `port-sha1`, `hmac`, `github`, `gitlab`, `none`): verification of
//! the raw body bytes, and the inverse (`sign`) used by `hookgate sign`.
//!
//! Every comparison is constant-time, and every configured secret is tried without an early
//! exit, so timing reveals neither which secret matched nor how close a guess came. Errors name
//! headers, never values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, HeaderName};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use subtle::{Choice, ConstantTimeEq};

use crate::rules::model::{HmacAlgorithm, SchemeName, VerifySection};
use crate::secret::Secret;

pub const PORT_SIGNATURE: &str = "x-port-signature";
pub const PORT_TIMESTAMP: &str = "x-port-timestamp";
pub const GITHUB_SHA256: &str = "x-hub-signature-256";
pub const GITHUB_SHA1: &str = "x-hub-signature";
pub const GITLAB_TOKEN: &str = "x-gitlab-token";

/// Replay window when a rule does not set `tolerance_secs`.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// How long schemes without a signed timestamp remember a verified MAC when a rule does not
/// set `verify.replay_window_secs`: a day covers every sender retry schedule we know of
/// (GitHub redelivers by hand, Port retries within minutes).
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 86_400;

/// Why a signature was refused. The client always gets the same answer; this goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header {0} is missing")]
    MissingHeader(String),
    #[error("header {0} is sent more than once")]
    RepeatedHeader(String),
    #[error("header {0} is malformed")]
    Malformed(String),
    #[error("timestamp is outside the {0} s window")]
    StaleTimestamp(u64),
    #[error("header {0} has 13 digits: it looks like milliseconds, but the scheme signs seconds")]
    MillisecondTimestamp(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("signature was already used inside its window (replay)")]
    Replayed,
}

#[derive(Debug, Clone)]
pub struct HmacScheme {
    header: HeaderName,
    algorithm: HmacAlgorithm,
    timestamp_header: Option<HeaderName>,
    signed: Vec<Part>,
    tolerance_secs: u64,
    /// Without a timestamp header: how long a verified MAC is remembered.
    replay_window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Timestamp,
    Body,
}

/// A compiled `[verify]` section without its secrets.
#[derive(Debug, Clone)]
pub enum Scheme {
    Port { tolerance_secs: u64 },
    PortSha1 { replay_window_secs: u64 },
    Hmac(HmacScheme),
    Github { replay_window_secs: u64 },
    Gitlab,
    None,
}

impl Scheme {
    /// Compiles the scheme-specific keys, returning `(field, reason)` for every problem.
    pub fn compile(section: &VerifySection) -> Result<Self, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let hmac_only = [
            ("header", section.header.is_some()),
            ("algorithm", section.algorithm.is_some()),
            ("timestamp_header", section.timestamp_header.is_some()),
            ("signed", section.signed.is_some()),
        ];
        if section.scheme != SchemeName::Hmac {
            for (field, set) in hmac_only {
                if set {
                    problems.push((field, "is only valid with scheme = \"hmac\"".to_owned()));
                }
            }
        }
        let timestamped = match section.scheme {
            SchemeName::Port => true,
            SchemeName::Hmac => section.timestamp_header.is_some(),
            _ => false,
        };
        if section.tolerance_secs.is_some() && !timestamped {
            problems.push((
                "tolerance_secs",
                "is only valid for timestamped schemes (port, hmac with timestamp_header)"
                    .to_owned(),
            ));
        }
        if section.tolerance_secs == Some(0) {
            problems.push(("tolerance_secs", "must be at least 1".to_owned()));
        }
        let has_mac = !matches!(section.scheme, SchemeName::Gitlab | SchemeName::None);
        if section.replay_window_secs.is_some() && (timestamped || !has_mac) {
            let reason = if timestamped {
                "is only valid for schemes without a timestamp (github, port-sha1, hmac without timestamp_header); this one remembers signatures for tolerance_secs"
            } else {
                "is only valid for schemes that sign the body (github, port-sha1, hmac)"
            };
            problems.push(("replay_window_secs", reason.to_owned()));
        }
        if section.replay_window_secs == Some(0) {
            problems.push(("replay_window_secs", "must be at least 1".to_owned()));
        }
        let tolerance_secs = section.tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS);
        let replay_window_secs = section
            .replay_window_secs
            .unwrap_or(DEFAULT_REPLAY_WINDOW_SECS);
        let scheme = match section.scheme {
            SchemeName::Port => Scheme::Port { tolerance_secs },
            SchemeName::PortSha1 => Scheme::PortSha1 { replay_window_secs },
            SchemeName::Github => Scheme::Github { replay_window_secs },
            SchemeName::Gitlab => Scheme::Gitlab,
            SchemeName::None => Scheme::None,
            SchemeName::Hmac => {
                let header = match &section.header {
                    None => {
                        problems.push(("header", "is required with scheme = \"hmac\"".to_owned()));
                        None
                    }
                    Some(name) => parse_header_name(name)
                        .map_err(|reason| problems.push(("header", reason)))
                        .ok(),
                };
                let timestamp_header = match &section.timestamp_header {
                    None => None,
                    Some(name) => parse_header_name(name)
                        .map_err(|reason| problems.push(("timestamp_header", reason)))
                        .ok(),
                };
                let signed = match parse_template(section.signed.as_deref().unwrap_or("{body}")) {
                    Ok(parts) => parts,
                    Err(reason) => {
                        problems.push(("signed", reason));
                        Vec::new()
                    }
                };
                if signed.contains(&Part::Timestamp) && section.timestamp_header.is_none() {
                    problems.push((
                        "signed",
                        "uses {timestamp} but no timestamp_header is set".to_owned(),
                    ));
                }
                // Otherwise the window could be bypassed by rewriting the unsigned header.
                if section.timestamp_header.is_some() && !signed.contains(&Part::Timestamp) {
                    problems.push((
                        "signed",
                        "must contain {timestamp} when timestamp_header is set, so that the MAC covers the timestamp".to_owned(),
                    ));
                }
                match header {
                    Some(header) => Scheme::Hmac(HmacScheme {
                        header,
                        algorithm: section.algorithm.unwrap_or(HmacAlgorithm::Sha256),
                        timestamp_header,
                        signed,
                        tolerance_secs,
                        replay_window_secs,
                    }),
                    None => Scheme::None,
                }
            }
        };
        if problems.is_empty() {
            Ok(scheme)
        } else {
            Err(problems)
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Port { .. } => "port",
            Scheme::PortSha1 { .. } => "port-sha1",
            Scheme::Hmac(_) => "hmac",
            Scheme::Github { .. } => "github",
            Scheme::Gitlab => "gitlab",
            Scheme::None => "none",
        }
    }

    pub fn needs_secret(&self) -> bool {
        !matches!(self, Scheme::None)
    }
}

fn parse_header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))
}

fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            parts.push(Part::Literal(rest.as_bytes()[..start].to_vec()));
        }
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("{timestamp}") {
            parts.push(Part::Timestamp);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{body}") {
            parts.push(Part::Body);
            rest = tail;
        } else {
            return Err("only {timestamp} and {body} may appear in braces".to_owned());
        }
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.as_bytes().to_vec()));
    }
    if !parts.contains(&Part::Body) {
        return Err("must contain {body}".to_owned());
    }
    Ok(parts)
}

/// What a verified signature proves, for replay detection: what identifies the signed bytes
/// under the rule's secrets, and the timestamp among them. Never the header's spelling, so hex
/// in either case, base64 with or without padding, a prefix or none are one signature.
///
/// For a scheme with one algorithm the decoded MAC identifies the signed bytes. GitHub sends a
/// SHA-1 and a SHA-256 signature of one body side by side, and either alone verifies, so a
/// captured delivery carries two MACs: there the body's SHA-256 names it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    material: Vec<u8>,
    timestamp: Option<u64>,
}

impl Signed {
    fn by_mac(mac: Vec<u8>, timestamp: Option<u64>) -> Self {
        Self {
            material: mac,
            timestamp,
        }
    }

    fn by_message(body: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Self {
            material: Sha256::digest(body).to_vec(),
            timestamp: None,
        }
    }

    /// A digest naming this signature, scoped to its scheme; never the MAC, so the replay
    /// memory (and the store, which keeps it) holds nothing a sender could reuse.
    pub fn digest(&self, scheme: &Scheme) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(scheme.name().as_bytes());
        hasher.update([0]);
        hasher.update(self.timestamp.unwrap_or(0).to_be_bytes());
        hasher.update(&self.material);
        let digest = hasher.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// A scheme with its secrets: everything needed to check one rule's signatures.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    scheme: Scheme,
    /// Newest first; all are accepted.
    secrets: Vec<Secret>,
}

impl SignatureCheck {
    pub fn new(scheme: Scheme, secrets: Vec<Secret>) -> Self {
        Self { scheme, secrets }
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Whether this check accepts a signature made with one of `other`'s secrets under the same
    /// scheme, so a request signed for one rule also verifies for the other.
    pub fn shares_a_secret_with(&self, other: &SignatureCheck) -> bool {
        self.scheme.name() == other.scheme.name()
            && self.secrets.iter().any(|mine| {
                other
                    .secrets
                    .iter()
                    .any(|theirs| crate::secret::constant_time_eq(mine.expose(), theirs.expose()))
            })
    }

    /// Until when (Unix seconds) a verified signature must be remembered: while its timestamp
    /// is still inside the window, or for the replay window of schemes that sign none.
    pub fn remember_until(&self, signed: &Signed, now: SystemTime) -> u64 {
        let memory = self.replay_memory_secs().unwrap_or(0);
        match signed.timestamp {
            // The window check accepts the timestamp up to `tolerance` seconds either side.
            Some(ts) => ts.saturating_add(memory).saturating_add(1),
            None => unix_seconds(now).saturating_add(memory),
        }
    }

    /// How long a verified signature of this scheme is remembered: the timestamp window for
    /// timestamped schemes, `replay_window_secs` for the others, `None` without a MAC.
    pub fn replay_memory_secs(&self) -> Option<u64> {
        match &self.scheme {
            Scheme::Port { tolerance_secs } => Some(*tolerance_secs),
            Scheme::Hmac(hmac) if hmac.timestamp_header.is_some() => Some(hmac.tolerance_secs),
            Scheme::Hmac(hmac) => Some(hmac.replay_window_secs),
            Scheme::PortSha1 { replay_window_secs } | Scheme::Github { replay_window_secs } => {
                Some(*replay_window_secs)
            }
            Scheme::Gitlab | Scheme::None => None,
        }
    }

    /// Checks the signature of `body` as received with `headers`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        self.verify_signed(headers, body, now).map(drop)
    }

    /// Checks the signature of `body` as received with `headers`; on success, the MAC as
    /// decoded and the timestamp it covers (`None` for `gitlab` and `none`, which sign nothing).
    pub fn verify_signed(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<Signed>, SignatureError> {
        match &self.scheme {
            Scheme::None => Ok(None),
            Scheme::Gitlab => {
                let given = single_header(headers, GITLAB_TOKEN)?;
                let mut ok = Choice::from(0);
                for secret in &self.secrets {
                    ok |= Choice::from(u8::from(secret.matches(given)));
                }
                accept(ok).map(|()| None)
            }
            Scheme::Github { .. } => {
                let (header, prefix, algorithm): (&str, &[u8], _) =
                    if headers.contains_key(GITHUB_SHA256) {
                        (GITHUB_SHA256, b"sha256=", HmacAlgorithm::Sha256)
                    } else if headers.contains_key(GITHUB_SHA1) {
                        (GITHUB_SHA1, b"sha1=", HmacAlgorithm::Sha1)
                    } else {
                        return Err(SignatureError::MissingHeader(GITHUB_SHA256.to_owned()));
                    };
                let value = single_header(headers, header)?;
                let expected = value
                    .strip_prefix(prefix)
                    .and_then(|hex| decode_hex(hex, digest_len(algorithm)))
                    .ok_or_else(|| SignatureError::Malformed(header.to_owned()))?;
                self.check_mac(algorithm, &[body], &expected)?;
                Ok(Some(Signed::by_message(body)))
            }
            Scheme::PortSha1 { .. } => {
                let value = single_header(headers, PORT_SIGNATURE)?;
                let expected = decode_mac(value, HmacAlgorithm::Sha1)
                    .ok_or_else(|| SignatureError::Malformed(PORT_SIGNATURE.to_owned()))?;
                self.check_mac(HmacAlgorithm::Sha1, &[body], &expected)?;
                Ok(Some(Signed::by_mac(expected, None)))
            }
            Scheme::Port { tolerance_secs } => {
                let value = single_header(headers, PORT_SIGNATURE)?;
                let timestamp = single_header(headers, PORT_TIMESTAMP)?;
                let ts = check_window(timestamp, PORT_TIMESTAMP, *tolerance_secs, now)?;
                let encoded = value
                    .trim_ascii()
                    .strip_prefix(b"v1,")
                    .ok_or_else(|| SignatureError::Malformed(PORT_SIGNATURE.to_owned()))?;
                let expected = decode_base64(encoded, 32)
                    .ok_or_else(|| SignatureError::Malformed(PORT_SIGNATURE.to_owned()))?;
                let raw =
                    self.check_mac(HmacAlgorithm::Sha256, &[timestamp, b".", body], &expected);
                if let Err(error) = raw {
                    // Port's execution agent signs the compact JSON but sends it with spaces;
                    // only then is the body validated and compacted.
                    let compact = compact_json(body).ok_or(error)?;
                    self.check_mac(
                        HmacAlgorithm::Sha256,
                        &[timestamp, b".", &compact],
                        &expected,
                    )?;
                }
                Ok(Some(Signed::by_mac(expected, Some(ts))))
            }
            Scheme::Hmac(hmac) => {
                let header = hmac.header.as_str();
                let value = single_header(headers, header)?;
                let (timestamp, ts) = match &hmac.timestamp_header {
                    Some(name) => {
                        let raw = single_header(headers, name.as_str())?;
                        let ts = check_window(raw, name.as_str(), hmac.tolerance_secs, now)?;
                        (raw, Some(ts))
                    }
                    None => (&b""[..], None),
                };
                let expected = decode_mac(value, hmac.algorithm)
                    .ok_or_else(|| SignatureError::Malformed(header.to_owned()))?;
                let parts: Vec<&[u8]> = hmac
                    .signed
                    .iter()
                    .map(|part| match part {
                        Part::Literal(bytes) => bytes.as_slice(),
                        Part::Timestamp => timestamp,
                        Part::Body => body,
                    })
                    .collect();
                self.check_mac(hmac.algorithm, &parts, &expected)?;
                Ok(Some(Signed::by_mac(expected, ts)))
            }
        }
    }

    fn check_mac(
        &self,
        algorithm: HmacAlgorithm,
        parts: &[&[u8]],
        expected: &[u8],
    ) -> Result<(), SignatureError> {
        let mut ok = Choice::from(0);
        for secret in &self.secrets {
            let mac = compute_mac(algorithm, secret.expose(), parts);
            ok |= mac.as_slice().ct_eq(expected);
        }
        accept(ok)
    }

    /// The headers that make `body` a validly signed request at `now`, using the newest
    /// secret. For `gitlab` this is the secret itself, since that is what GitLab sends.
    pub fn sign(&self, body: &[u8], now: SystemTime) -> Vec<(String, String)> {
        let Some(secret) = self.secrets.first() else {
            return Vec::new();
        };
        let timestamp = unix_seconds(now).to_string();
        match &self.scheme {
            Scheme::None => Vec::new(),
            Scheme::Gitlab => vec![(
                "X-Gitlab-Token".to_owned(),
                String::from_utf8_lossy(secret.expose()).into_owned(),
            )],
            Scheme::Github { .. } => {
                let mac = compute_mac(HmacAlgorithm::Sha256, secret.expose(), &[body]);
                vec![(
                    "X-Hub-Signature-256".to_owned(),
                    format!("sha256={}", hex::encode(mac)),
                )]
            }
            Scheme::PortSha1 { .. } => {
                let mac = compute_mac(HmacAlgorithm::Sha1, secret.expose(), &[body]);
                vec![("X-Port-Signature".to_owned(), hex::encode(mac))]
            }
            Scheme::Port { .. } => {
                let mac = compute_mac(
                    HmacAlgorithm::Sha256,
                    secret.expose(),
                    &[timestamp.as_bytes(), b".", body],
                );
                vec![
                    ("X-Port-Timestamp".to_owned(), timestamp),
                    (
                        "X-Port-Signature".to_owned(),
                        format!("v1,{}", STANDARD.encode(mac)),
                    ),
                ]
            }
            Scheme::Hmac(hmac) => {
                let parts: Vec<&[u8]> = hmac
                    .signed
                    .iter()
                    .map(|part| match part {
                        Part::Literal(bytes) => bytes.as_slice(),
                        Part::Timestamp => timestamp.as_bytes(),
                        Part::Body => body,
                    })
                    .collect();
                let mac = compute_mac(hmac.algorithm, secret.expose(), &parts);
                let mut headers = Vec::new();
                if let Some(name) = &hmac.timestamp_header {
                    headers.push((name.as_str().to_owned(), timestamp.clone()));
                }
                headers.push((hmac.header.as_str().to_owned(), hex::encode(mac)));
                headers
            }
        }
    }
}

fn accept(ok: Choice) -> Result<(), SignatureError> {
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The one value of a signature header; a repeated header is refused rather than guessed at.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h [u8], SignatureError> {
    let mut values = headers.get_all(name);
    let first = values
        .next()
        .ok_or_else(|| SignatureError::MissingHeader(name.to_owned()))?;
    if values.next().is_some() {
        return Err(SignatureError::RepeatedHeader(name.to_owned()));
    }
    Ok(first.as_bytes())
}

/// Parses a timestamp header (Unix seconds) and checks it is inside the window.
fn check_window(
    timestamp: &[u8],
    header: &str,
    tolerance_secs: u64,
    now: SystemTime,
) -> Result<u64, SignatureError> {
    // Canonical decimal only: with a leading zero, `{body}{timestamp}` templates would let a
    // digit move from the end of the body into the timestamp and still verify.
    let digits = std::str::from_utf8(timestamp.trim_ascii())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .filter(|s| s.len() == 1 || !s.starts_with('0'))
        .ok_or_else(|| SignatureError::Malformed(header.to_owned()))?;
    let ts: u64 = digits
        .parse()
        .map_err(|_| SignatureError::Malformed(header.to_owned()))?;
    if unix_seconds(now).abs_diff(ts) > tolerance_secs {
        // Seconds have 10 digits until 2286; 13 digits is a sender using milliseconds, the
        // commonest integration mistake, so the log says so.
        if digits.len() == 13 {
            return Err(SignatureError::MillisecondTimestamp(header.to_owned()));
        }
        return Err(SignatureError::StaleTimestamp(tolerance_secs));
    }
    Ok(ts)
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn compute_mac(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        HmacAlgorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HmacAlgorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HmacAlgorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

fn digest_len(algorithm: HmacAlgorithm) -> usize {
    match algorithm {
        HmacAlgorithm::Sha1 => 20,
        HmacAlgorithm::Sha256 => 32,
        HmacAlgorithm::Sha512 => 64,
    }
}

/// Decodes a MAC sent as hex (any case, optional `<alg>=` prefix) or base64.
fn decode_mac(value: &[u8], algorithm: HmacAlgorithm) -> Option<Vec<u8>> {
    let prefix: &[u8] = match algorithm {
        HmacAlgorithm::Sha1 => b"sha1=",
        HmacAlgorithm::Sha256 => b"sha256=",
        HmacAlgorithm::Sha512 => b"sha512=",
    };
    let value = value.trim_ascii();
    let value = match value.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => &value[prefix.len()..],
        _ => value,
    };
    let len = digest_len(algorithm);
    decode_hex(value, len).or_else(|| decode_base64(value, len))
}

fn decode_hex(value: &[u8], len: usize) -> Option<Vec<u8>> {
    if value.len() != len * 2 {
        return None;
    }
    hex::decode(value).ok()
}

fn decode_base64(value: &[u8], len: usize) -> Option<Vec<u8>> {
    // Bound the work before decoding: a MAC of `len` bytes is at most this long in base64.
    if value.len() > len.div_ceil(3) * 4 {
        return None;
    }
    let bytes = STANDARD
        .decode(value)
        .or_else(|_| STANDARD_NO_PAD.decode(value))
        .ok()?;
    (bytes.len() == len).then_some(bytes)
}

/// The body with the whitespace between JSON tokens removed, or `None` when the body is not
/// valid JSON or has none to remove. Numbers and escapes stay byte-identical, unlike a parse
/// and re-serialise.
///
/// Only a valid JSON body is compacted: in valid JSON whitespace outside strings can only sit
/// between tokens, so removing it cannot change a number (`1 2`) or a literal (`tr ue`), and
/// bytes whose meaning differs from the signed ones can never verify.
pub fn compact_json(body: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        } else {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    (out.len() != body.len()).then_some(out)
}

#[cfg(test)]
mod tests;
