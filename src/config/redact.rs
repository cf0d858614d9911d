//! Redaction (SPEC §11): what of a URL, a header or an error text may be
//! shown in logs, `/status`, `/`, `/metrics`, `check` output, error
//! messages and `Debug` output.
//!
//! - A URL's userinfo (`user:pw@` and `user@`) is always `***@`.
//! - A query value is `***` when its parameter name is in `log.redact_query`
//!   (case-insensitive), contains `token`, `key`, `secret` or `sig`, or is
//!   the query-auth parameter (`auth.kind = "query"`, `auth.param`).
//!   A fragment that looks like a query (`#access_token=...`) gets the same.
//! - A webhook URL is `scheme://host:port/***`: chat webhooks carry their
//!   secret in the path.
//! - The whole tree (`wsgate check`, [`Settings::redacted`]) shows every
//!   [`Secret`](super::Secret) and every header value that looks like a
//!   credential as `***`.
//!
//! Everything works on text, so a URL that does not parse is never shown
//! with its secret either; when in doubt, more is hidden rather than less.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::schema::{Settings, SinkConfig};
use super::secret::REDACTED;

/// The default of `log.redact_query` (SPEC §11).
pub const DEFAULT_REDACT_QUERY: &[&str] = &[
    "token",
    "key",
    "apikey",
    "api_key",
    "access_token",
    "auth",
    "secret",
    "signature",
    "sig",
    "password",
    "passphrase",
    "jwt",
];

/// Query parameter names holding any of these are always secret, whatever
/// `log.redact_query` says.
const ALWAYS_SECRET: &[&str] = &["token", "key", "secret", "sig"];

/// Secret pieces shorter than this are not scrubbed from error texts.
const MIN_SCRUBBED: usize = 3;

/// Header names holding any of these have their value shown as `***`.
const SECRET_HEADER_WORDS: &[&str] = &["authorization", "cookie", "auth", "password", "session", "credential"];

/// Which query parameters are secret: built once from `log.redact_query`
/// and shared (cheap to clone) by everything that shows a URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Redactor {
    /// The configured names, lower-cased for case-insensitive matching.
    names: Arc<[String]>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor { names: DEFAULT_REDACT_QUERY.iter().map(|s| s.to_string()).collect() }
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names.iter()).finish()
    }
}

impl Redactor {
    /// A redactor for the names of `log.redact_query`.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        Redactor { names: names.iter().map(|n| n.as_ref().to_ascii_lowercase()).collect() }
    }

    /// True when the value of query parameter `name` must not be shown.
    /// `auth_param` is the query-auth parameter of an upstream, if any.
    pub fn is_secret_param(&self, name: &str, auth_param: Option<&str>) -> bool {
        let name = percent_decode(name).to_ascii_lowercase();
        auth_param.is_some_and(|p| p.eq_ignore_ascii_case(&name))
            || self.names.contains(&name)
            || ALWAYS_SECRET.iter().any(|w| name.contains(w))
    }

    /// True when the value of header `name` must not be shown: credential
    /// words, plus every rule of [`Redactor::is_secret_param`].
    pub fn is_secret_header(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        SECRET_HEADER_WORDS.iter().any(|w| lower.contains(w))
            || self.is_secret_param(&lower, None)
            || self.is_secret_param(&lower.replace('-', "_"), None)
            || lower.split(['-', '_']).any(|part| self.names.iter().any(|n| n == part))
    }

    /// The substrings of `url` that [`redact_url`] hides (userinfo, secret
    /// query and fragment values), as written and percent-decoded, so that
    /// error texts from libraries that echo a URL can be scrubbed with
    /// [`scrub`].
    pub fn secrets_in(&self, url: &str, auth_param: Option<&str>) -> Vec<String> {
        let parts = Parts::split(url);
        let mut out = Vec::new();
        if let Some(userinfo) = parts.userinfo {
            out.push(userinfo.to_string());
            for piece in userinfo.split(':') {
                out.push(piece.to_string());
            }
        }
        for text in [parts.query, parts.fragment].into_iter().flatten() {
            for pair in text.split('&') {
                if let Some((name, value)) = pair.split_once('=') {
                    if self.is_secret_param(name, auth_param) {
                        out.push(value.to_string());
                    }
                }
            }
        }
        let decoded: Vec<String> = out.iter().map(|s| percent_decode(s)).collect();
        out.extend(decoded);
        // A one- or two-character piece is no real secret, and scrubbing it
        // would garble every error text it occurs in.
        out.retain(|s| s.len() >= MIN_SCRUBBED);
        out.sort();
        out.dedup();
        out
    }
}

/// `url` with its userinfo and every secret query (and fragment) value
/// replaced by `***`; `auth_param` is the query-auth parameter, if any.
/// The one function the crate uses to show an upstream URL.
pub fn redact_url(url: &str, redactor: &Redactor, auth_param: Option<&str>) -> String {
    let parts = Parts::split(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.scheme);
    if parts.userinfo.is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(parts.host);
    out.push_str(parts.path);
    if let Some(q) = parts.query {
        out.push('?');
        push_redacted_pairs(&mut out, q, redactor, auth_param);
    }
    if let Some(f) = parts.fragment {
        out.push('#');
        if f.contains('=') {
            push_redacted_pairs(&mut out, f, redactor, auth_param);
        } else {
            out.push_str(f);
        }
    }
    out
}

/// A webhook URL as it may be shown: `scheme://host:port/***` (the port is
/// the default one of the scheme when none is written). Without a scheme
/// or host, just `***`.
pub fn redact_webhook_url(url: &str) -> String {
    let parts = Parts::split(url);
    let Some(scheme) = parts.scheme.strip_suffix("://").filter(|s| !s.is_empty()) else {
        return REDACTED.into();
    };
    if parts.host.is_empty() {
        return REDACTED.into();
    }
    let has_port = match parts.host.rfind(':') {
        // `[::1]` has colons but no port; `[::1]:80` and `h:80` have one.
        Some(i) => !parts.host[i..].contains(']'),
        None => false,
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    match (has_port, default_port) {
        (false, Some(port)) => format!("{scheme}://{}:{port}/{REDACTED}", parts.host),
        _ => format!("{scheme}://{}/{REDACTED}", parts.host),
    }
}

/// Replaces every occurrence of each of `secrets` in `text` by `***`,
/// longest first (so a secret that contains another is hidden whole).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in sorted {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

fn push_redacted_pairs(out: &mut String, text: &str, redactor: &Redactor, auth_param: Option<&str>) {
    for (i, pair) in text.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if redactor.is_secret_param(name, auth_param) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
}

/// A URL cut into the pieces redaction needs, by text alone.
struct Parts<'a> {
    /// `wss://`, or empty when there is no `://`.
    scheme: &'a str,
    /// Everything before the last `@` of the authority.
    userinfo: Option<&'a str>,
    /// Host and port (or, without a scheme, the text before the path).
    host: &'a str,
    /// From the first `/` up to `?` or `#`.
    path: &'a str,
    /// After `?`, up to `#`.
    query: Option<&'a str>,
    /// After `#`.
    fragment: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(url: &'a str) -> Parts<'a> {
        let (scheme, rest) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        // The userinfo may itself hold `?`, `#` or `:` when a password was
        // written unencoded: an `@` before the first `/` ends it, whatever
        // comes before.
        let first_slash = rest.find('/').unwrap_or(rest.len());
        let (userinfo, rest) = match (scheme.is_empty(), rest[..first_slash].rfind('@')) {
            (false, Some(at)) => (Some(&rest[..at]), &rest[at + 1..]),
            _ => (None, rest),
        };
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, rest) = rest.split_at(host_end);
        let (before_frag, fragment) = match rest.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (rest, None),
        };
        let (path, query) = match before_frag.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (before_frag, None),
        };
        Parts { scheme, userinfo, host, path, query, fragment }
    }
}

/// `%41` -> `A`; invalid escapes and non-UTF-8 results are kept as written.
fn percent_decode(text: &str) -> String {
    if !text.contains('%') && !text.contains('+') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

// === the tree as it may be shown ===

impl Settings {
    /// Hands the redactor built from `log.redact_query` to every upstream
    /// (see [`UpstreamConfig::redactor`](super::UpstreamConfig::redactor)). [`load`](super::load()) calls it;
    /// code that builds or edits `Settings` by hand calls it after changing `log`.
    pub fn share_redactor(&mut self) {
        let redactor = Redactor::new(&self.log.redact_query);
        for u in &mut self.upstreams {
            u.redactor = redactor.clone();
        }
    }

    /// A copy fit for printing: secrets and secret-bearing URL parts as `***`,
    /// header values that look like credentials too.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        let redactor = Redactor::new(&self.log.redact_query);
        for u in &mut s.upstreams {
            if !u.url.is_empty() {
                u.url = u.redacted_url();
            }
            u.urls = u.redacted_urls();
            u.headers = redacted_headers(&u.headers, &redactor);
            u.proxy.url = redact_url(&u.proxy.url, &redactor, None);
        }
        for sink in &mut s.sinks {
            match sink {
                SinkConfig::Webhook(w) => {
                    w.url = redact_webhook_url(&w.url);
                    w.headers = redacted_headers(&w.headers, &redactor);
                }
                SinkConfig::Nats(n) => n.url = redact_url(&n.url, &redactor, None),
                SinkConfig::Redis(r) => r.url = redact_url(&r.url, &redactor, None),
                SinkConfig::Stdout { .. } | SinkConfig::File { .. } => {}
            }
        }
        s.cluster.nats_url = redact_url(&s.cluster.nats_url, &redactor, None);
        s
    }

    /// The effective config as TOML, secrets redacted (`wsgate check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Header values that look like credentials (see [`Redactor::is_secret_header`]) as `***`.
pub(super) fn redacted_headers(headers: &BTreeMap<String, String>, redactor: &Redactor) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if redactor.is_secret_header(name) { REDACTED.to_string() } else { value.clone() };
            (name.clone(), shown)
        })
        .collect()
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
