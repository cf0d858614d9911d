//! Secrets: values that never reach a log line, `/status` or `check` output.
//!
//! Every secret key comes in three spellings (`token`, `token_env`,
//! `token_file`). [`SecretSource`] resolves whichever was given; the file is
//! read again at every call, so a rotated Kubernetes Secret takes effect at
//! the next (re)connect without a restart.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text shown wherever a secret would otherwise appear.
pub const REDACTED: &str = "***";

/// A secret value. `Debug`, `Display` and `Serialize` all print `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from outside (env, file, config).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: call only where it is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Where one secret comes from: at most one of the three is set (validated).
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// Inline value (`token = "..."`).
    pub inline: Option<&'a Secret>,
    /// Name of an environment variable (`token_env = "FEED_TOKEN"`).
    pub env: Option<&'a str>,
    /// Path of a file, re-read at every resolve (`token_file = "/run/..."`).
    pub file: Option<&'a PathBuf>,
}

/// Why a secret could not be read. Names the source, never the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// `*_env` names a variable that is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// `*_file` could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The configured path.
        path: String,
        /// The I/O error text.
        reason: String,
    },
    /// The value is empty after trimming.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource<'_> {
    /// True when any of the three spellings was given.
    pub fn is_set(&self) -> bool {
        self.inline.is_some() || self.env.is_some() || self.file.is_some()
    }

    /// How many of the three spellings were given (validation wants <= 1).
    pub fn count(&self) -> usize {
        usize::from(self.inline.is_some()) + usize::from(self.env.is_some()) + usize::from(self.file.is_some())
    }

    /// Reads the secret now. `Ok(None)` when no source is configured.
    pub fn resolve(&self) -> Result<Option<Secret>, SecretError> {
        if let Some(s) = self.inline {
            return Ok(Some(s.clone()));
        }
        if let Some(var) = self.env {
            let value = std::env::var(var).map_err(|_| SecretError::EnvMissing(var.to_string()))?;
            return non_empty(value.trim(), || format!("environment variable {var}")).map(Some);
        }
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SecretError::File { path: path.display().to_string(), reason: e.kind().to_string() })?;
            return non_empty(text.trim(), || format!("file {}", path.display())).map(Some);
        }
        Ok(None)
    }
}

fn non_empty(value: &str, what: impl FnOnce() -> String) -> Result<Secret, SecretError> {
    if value.is_empty() {
        Err(SecretError::Empty(what()))
    } else {
        Ok(Secret::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug and Serialize never show the value.
    #[test]
    fn secret_is_opaque() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    /// A file secret is trimmed and re-read at every resolve.
    #[test]
    fn file_secret_is_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let src = SecretSource { inline: None, env: None, file: Some(&path) };
        assert_eq!(src.resolve().unwrap().unwrap().expose(), "one");
        std::fs::write(&path, "  two  ").unwrap();
        assert_eq!(src.resolve().unwrap().unwrap().expose(), "two");
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(src.resolve(), Err(SecretError::Empty(_))));
        let missing = dir.path().join("nope");
        let src = SecretSource { inline: None, env: None, file: Some(&missing) };
        assert!(matches!(src.resolve(), Err(SecretError::File { .. })));
    }
}
