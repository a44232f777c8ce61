//! Secret material (HMAC keys, sender tokens, Jenkins tokens) in a type that never prints itself.
//!
//! The value is only reachable through [`Secret::expose`], which keeps every use greppable, and
//! it is wiped from memory on drop. Equality is constant-time over SHA-256 digests, so neither
//! the content nor the length of a secret leaks through comparison timing.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::Env;

/// A secret byte string. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The raw bytes. Call this only where the bytes are used (MAC key, outgoing request).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison against untrusted input.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(&self.0, candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares two byte strings in time independent of their content and length.
///
/// Hashing first makes both sides fixed-length, so a length mismatch does not return early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.as_slice().ct_eq(db.as_slice()).into()
}

/// SHA-256 of a token, used as a lookup key so that finding a rule by token never compares
/// the token itself byte by byte.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Where a configured secret comes from: written inline, named environment variable, or file.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretSource<'a> {
    pub inline: Option<&'a str>,
    pub env: Option<&'a str>,
    pub file: Option<&'a Path>,
}

impl SecretSource<'_> {
    fn count(&self) -> usize {
        usize::from(self.inline.is_some())
            + usize::from(self.env.is_some())
            + usize::from(self.file.is_some())
    }

    /// Reads the secret. `Ok(None)` when no source is set; an error (a reason without the
    /// value) when several are set, the variable is unset or empty, or the file is unreadable
    /// or empty. Relative files are resolved against `base_dir`. One trailing newline is
    /// dropped from files, since `echo secret > file` is how most of them are made.
    pub fn read(&self, base_dir: &Path, env: &dyn Env) -> Result<Option<Secret>, String> {
        if self.count() > 1 {
            return Err("set only one of the inline value, `_env` and `_file`".to_owned());
        }
        let value = if let Some(inline) = self.inline {
            inline.as_bytes().to_vec()
        } else if let Some(name) = self.env {
            env.var(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?
                .into_bytes()
        } else if let Some(file) = self.file {
            let path = base_dir.join(file);
            let mut bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            bytes
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(match (self.env, self.file) {
                (Some(name), _) => format!("environment variable {name} is empty"),
                (_, Some(file)) => format!("{} is empty", file.display()),
                _ => "is empty".to_owned(),
            });
        }
        Ok(Some(Secret::new(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
    }

    #[test]
    fn matches_only_the_exact_bytes() {
        let s = Secret::new("token-123");
        assert!(s.matches(b"token-123"));
        assert!(!s.matches(b"token-12"));
        assert!(!s.matches(b"token-1234"));
        assert!(!s.matches(b"Token-123"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn sources_are_exclusive_and_never_empty() {
        use std::collections::HashMap;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s"), "from-file\r\n").expect("write");
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let env: HashMap<String, String> = [
            ("SET".to_owned(), "from-env".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]
        .into();
        let read = |source: SecretSource<'_>| source.read(dir.path(), &env);
        let file = Path::new("s");
        let got = read(SecretSource {
            file: Some(file),
            ..Default::default()
        })
        .expect("file")
        .expect("some");
        assert_eq!(got.expose(), b"from-file");
        let got = read(SecretSource {
            env: Some("SET"),
            ..Default::default()
        })
        .expect("env")
        .expect("some");
        assert_eq!(got.expose(), b"from-env");
        assert!(read(SecretSource::default()).expect("none").is_none());
        let err = read(SecretSource {
            env: Some("UNSET"),
            ..Default::default()
        })
        .expect_err("unset");
        assert_eq!(err, "environment variable UNSET is not set");
        let err = read(SecretSource {
            env: Some("EMPTY"),
            ..Default::default()
        })
        .expect_err("empty");
        assert_eq!(err, "environment variable EMPTY is empty");
        let err = read(SecretSource {
            file: Some(Path::new("empty")),
            ..Default::default()
        })
        .expect_err("empty file");
        assert_eq!(err, "empty is empty");
        let both = SecretSource {
            inline: Some("x"),
            env: Some("SET"),
            file: None,
        };
        assert!(read(both).is_err());
    }
}
