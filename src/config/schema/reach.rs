//! `[upstreams.proxy]` (SPEC §12): how an upstream's TCP connection reaches
//! the feed when it has to go through an HTTP CONNECT or SOCKS5 proxy.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::redact::{redact_url, Redactor};
use crate::config::secret::{Secret, SecretSource};

/// `[upstreams.proxy]`. The password comes from at most one of `password`,
/// `password_env`, `password_file`, and is a secret (never shown).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `"env"`: `wss://` uses `HTTPS_PROXY`, `ws://` `HTTP_PROXY`, else
    /// `ALL_PROXY` (each lower-case first, then upper-case), and `NO_PROXY`
    /// exempts hosts as curl does (host suffixes, IPs, `*`); `"none"`: no
    /// proxy; or a proxy URL: `http://host:port` (CONNECT),
    /// `socks5://host:port` (names resolved here), `socks5h://host:port`
    /// (names resolved by the proxy). Default: `"env"`.
    pub url: String,
    /// User name for the proxy (Basic for CONNECT, RFC 1929 for SOCKS5);
    /// a user name in the proxy URL's userinfo is used when this is unset.
    /// Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The proxy password, inline (prefer `password_env` or
    /// `password_file`). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of the environment variable holding the proxy password.
    /// Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file holding the proxy password, trimmed, re-read at every
    /// (re)connect. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `compression`: whether permessage-deflate (RFC 7692) is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Offer permessage-deflate with `client_max_window_bits`; whatever
    /// the server accepts is honoured.
    Deflate,
    /// Offer nothing: frames arrive uncompressed.
    None,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig { url: "env".into(), username: None, password: None, password_env: None, password_file: None }
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProxyConfig { url, username, password, password_env, password_file } = self;
        f.debug_struct("ProxyConfig")
            .field("url", &redact_url(url, &Redactor::default(), None))
            .field("username", username)
            .field("password", password)
            .field("password_env", password_env)
            .field("password_file", password_file)
            .finish()
    }
}

impl ProxyConfig {
    /// Where the password comes from.
    pub fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            inline: self.password.as_ref(),
            env: self.password_env.as_deref(),
            file: self.password_file.as_ref(),
        }
    }
}
