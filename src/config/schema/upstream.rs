//! One `[[upstreams]]` entry and its tables: `auth`, `tls`, `heartbeat`,
//! `reconnect`, `decode`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::continuity::{Redundancy, Rotate};
use super::empty_is_none;
use super::integrity::{FreshnessConfig, HandshakeStep, SecretSpec, SequenceConfig, TokenCommand};
use super::reach::{Compression, ProxyConfig};
use crate::config::redact::{redact_url, redacted_headers, Redactor};
use crate::config::secret::{Secret, SecretSource};
use crate::config::units::{Dur, Size};

/// One `[[upstreams]]` entry: a feed to keep connected. `Debug` shows the
/// URL and header values redacted (see the impl below).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, 1 to 64 characters of `[a-z0-9_-]`; the `upstream`
    /// label of every metric and the `upstream` field of every envelope.
    /// Required.
    pub name: String,
    /// The feed: a `ws://` or `wss://` URL. A password in its userinfo and
    /// secret query values are shown as `***` everywhere. Exactly one of
    /// `url` and `urls` is required. Default: unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Instead of `url`: several endpoints of the same feed (SPEC §14),
    /// used as `redundancy` says; the `link` label of the link metrics is
    /// the index in this list. Default: unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// With `urls`: `failover` keeps one link and moves to the next URL at
    /// each failure; `all` keeps one link per URL and delivers each message
    /// once, from whichever link brought it first. Default: `"failover"`.
    #[serde(default)]
    pub redundancy: Redundancy,
    /// Messages remembered to drop the second copy while two or more
    /// links are live (rotation overlap, `redundancy = "all"`): keyed by
    /// `[upstreams.sequence]` key and number when configured, else by a
    /// payload hash. At least 1. Default: `4096`.
    #[serde(default = "default_dedupe_window")]
    pub dedupe_window: usize,
    /// Duration after which a link is replaced (at a random moment
    /// between 0.9 and 1.0 of it), for servers that cut links at an age or
    /// tokens that expire; `"0s"` = never. Default: `"0s"`.
    #[serde(default)]
    pub max_connection_age: Dur,
    /// How a link is replaced at `max_connection_age`:
    /// `make_before_break` (the new link beside the old, no gap, no
    /// duplicate) or `break_before_make` (for servers that allow one link
    /// per key). Default: `"make_before_break"`.
    #[serde(default)]
    pub rotate: Rotate,
    /// Duration the old link is still read after the new link's first
    /// data message, unless the two streams overlap sooner. Greater than
    /// 0. Default: `"5s"`.
    #[serde(default = "default_rotate_overlap")]
    pub rotate_overlap: Dur,
    /// Whether this upstream must be connected for `/readyz` to say ready.
    /// Default: `true`.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Extra handshake headers, name = value. Values of headers that look
    /// like credentials are shown as `***`. Default: `{}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Subprotocols offered in the handshake; the server's pick must be one
    /// of them. Default: `[]`.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Duration allowed for TCP, TLS and the upgrade together. Greater
    /// than 0. Default: `"10s"`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Size of the largest message after reassembling fragments; a larger
    /// one closes the link with 1009 (reason `oversize`). At least 1 byte.
    /// Default: `"16MiB"`.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    /// Text messages sent in order after auth, at every (re)connect
    /// (subscriptions). Default: `[]`.
    #[serde(default)]
    pub on_connect: Vec<String>,
    /// `[upstreams.auth]`: how to authenticate.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[upstreams.tls]`: TLS for `wss://` URLs.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[upstreams.heartbeat]`: pings and dead-link detection.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// `[upstreams.reconnect]`: backoff between attempts.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// `[upstreams.decode]`: how frames become messages.
    #[serde(default)]
    pub decode: DecodeConfig,
    /// `[[upstreams.handshake]]`: steps sent (and answered) at every
    /// (re)connect; excludes `on_connect` and `auth.kind = "message"`.
    /// Default: `[]`.
    #[serde(default)]
    pub handshake: Vec<HandshakeStep>,
    /// `[upstreams.secrets]`: named secrets for templates, each one of
    /// `value`, `env`, `file`. Default: `{}`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// `[upstreams.token_command]`: the token is this command's output.
    /// Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_command: Option<TokenCommand>,
    /// `[upstreams.sequence]`: gap and duplicate detection. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceConfig>,
    /// `[upstreams.freshness]`: stale topics.
    #[serde(default)]
    pub freshness: FreshnessConfig,
    /// Path of a Unix socket to connect over instead of TCP; `url` still
    /// gives the `Host` header and the path. Default: unset.
    #[serde(default, deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<PathBuf>,
    /// The `Origin` header of the handshake, for servers that want one.
    /// Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The `User-Agent` header of the handshake; unset sends `wsgate/` and
    /// the version. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Duration to wait for the server's close frame (or EOF) after ours
    /// before the socket is dropped. Greater than 0. Default: `"1s"`.
    #[serde(default = "default_close_timeout")]
    pub close_timeout: Dur,
    /// `deflate` offers permessage-deflate (RFC 7692) and honours what
    /// the server accepts; an inflated message is capped by
    /// `max_message_size` while it is inflated. `none` offers nothing.
    /// Default: `"deflate"`.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Log every frame of this upstream at debug level (opcode, length,
    /// first 200 bytes) and the handshake headers, secrets as `***`.
    /// Default: `false`.
    #[serde(default)]
    pub trace: bool,
    /// `[upstreams.proxy]`: an HTTP CONNECT or SOCKS5 proxy on the way.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Not a key: `log.redact_query`, put here by [`load`](crate::config::load())
    /// (through [`Settings::share_redactor`](crate::config::Settings::share_redactor))
    /// so that every place that shows this upstream's URL redacts it the
    /// same way without being handed the log config.
    #[serde(skip)]
    pub redactor: Redactor,
}

const fn default_required() -> bool {
    true
}
const fn default_connect_timeout() -> Dur {
    Dur::secs(10)
}
const fn default_max_message_size() -> Size {
    Size::mib(16)
}
const fn default_compression() -> Compression {
    Compression::Deflate
}
const fn default_close_timeout() -> Dur {
    Dur::secs(1)
}
const fn default_dedupe_window() -> usize {
    4096
}
const fn default_rotate_overlap() -> Dur {
    Dur::secs(5)
}

impl UpstreamConfig {
    /// A minimal upstream, for the demo and for tests.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            urls: Vec::new(),
            redundancy: Redundancy::default(),
            dedupe_window: default_dedupe_window(),
            max_connection_age: Dur::secs(0),
            rotate: Rotate::default(),
            rotate_overlap: default_rotate_overlap(),
            required: default_required(),
            headers: BTreeMap::new(),
            subprotocols: Vec::new(),
            connect_timeout: default_connect_timeout(),
            max_message_size: default_max_message_size(),
            on_connect: Vec::new(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            reconnect: ReconnectConfig::default(),
            decode: DecodeConfig::default(),
            handshake: Vec::new(),
            secrets: BTreeMap::new(),
            token_command: None,
            sequence: None,
            freshness: FreshnessConfig::default(),
            unix_socket: None,
            origin: None,
            user_agent: None,
            close_timeout: default_close_timeout(),
            compression: default_compression(),
            trace: false,
            proxy: ProxyConfig::default(),
            redactor: Redactor::default(),
        }
    }

    /// The URL as it may be shown: userinfo, `redact_query` values and the
    /// query-auth parameter as `***` (SPEC §11).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url, &self.redactor, self.query_auth_param())
    }

    /// The secret substrings of the URL (userinfo, secret query values), to
    /// [`scrub`](crate::config::scrub) from error texts of libraries that
    /// might echo the URL.
    pub fn url_secrets(&self) -> Vec<String> {
        let param = self.query_auth_param();
        self.link_urls().into_iter().flat_map(|u| self.redactor.secrets_in(u, param)).collect()
    }

    /// `auth.param` when `auth.kind = "query"`: its value is always secret.
    pub(super) fn query_auth_param(&self) -> Option<&str> {
        (self.auth.kind == AuthKind::Query).then(|| self.auth.param.as_deref().unwrap_or("token"))
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field is a compile error here until it is
        // decided whether it can be shown.
        let UpstreamConfig {
            name,
            url: _,
            urls: _,
            redundancy,
            dedupe_window,
            max_connection_age,
            rotate,
            rotate_overlap,
            required,
            headers,
            subprotocols,
            connect_timeout,
            max_message_size,
            on_connect,
            auth,
            tls,
            heartbeat,
            reconnect,
            decode,
            handshake,
            secrets,
            token_command,
            sequence,
            freshness,
            unix_socket,
            origin,
            user_agent,
            close_timeout,
            compression,
            trace,
            proxy,
            redactor,
        } = self;
        f.debug_struct("UpstreamConfig")
            .field("name", name)
            .field("url", &self.redacted_url())
            .field("urls", &self.redacted_urls())
            .field("redundancy", redundancy)
            .field("dedupe_window", dedupe_window)
            .field("max_connection_age", max_connection_age)
            .field("rotate", rotate)
            .field("rotate_overlap", rotate_overlap)
            .field("required", required)
            .field("headers", &redacted_headers(headers, redactor))
            .field("subprotocols", subprotocols)
            .field("connect_timeout", connect_timeout)
            .field("max_message_size", max_message_size)
            .field("on_connect", on_connect)
            .field("auth", auth)
            .field("tls", tls)
            .field("heartbeat", heartbeat)
            .field("reconnect", reconnect)
            .field("decode", decode)
            .field("handshake", handshake)
            .field("secrets", secrets)
            .field("token_command", token_command)
            .field("sequence", sequence)
            .field("freshness", freshness)
            .field("unix_socket", unix_socket)
            .field("origin", origin)
            .field("user_agent", user_agent)
            .field("close_timeout", close_timeout)
            .field("compression", compression)
            .field("trace", trace)
            .field("proxy", proxy)
            .finish_non_exhaustive()
    }
}

// === [upstreams.auth] ===

/// `[upstreams.auth]`. The token comes from exactly one of `token`,
/// `token_env`, `token_file` when the kind needs one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How the token is presented: `none`, `bearer`, `basic`, `header`,
    /// `query` or `message`. Default: `"none"`.
    pub kind: AuthKind,
    /// The token, inline (prefer `token_env` or `token_file`). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Name of the environment variable holding the token. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Path of a file holding the token, trimmed, re-read at every
    /// (re)connect (a rotated Kubernetes Secret applies). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `basic` only, and required there: the user name (the token is the
    /// password). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `header` only, and required there: the header that carries the
    /// token (e.g. `"X-Api-Key"`). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// `query` only, and required there: the query parameter that carries
    /// the token; its value is redacted in every log line. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// `message` only, and required there: the text sent after the
    /// upgrade; `{{token}}` is replaced by the token. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `message` only, and required there: a reply matching this means
    /// authenticated. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<Matcher>,
    /// `message` only: a reply matching this means rejected (reason
    /// `auth`). Replies matching neither are ignored. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Matcher>,
    /// `message`: duration to wait for the success reply, from the upgrade
    /// on; running out is failure reason `auth`. Greater than 0. Default: `"5s"`.
    pub timeout: Dur,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            kind: AuthKind::None,
            token: None,
            token_env: None,
            token_file: None,
            username: None,
            header_name: None,
            param: None,
            message: None,
            success: None,
            failure: None,
            timeout: Dur::secs(5),
        }
    }
}

impl AuthConfig {
    /// Where the token comes from.
    pub fn token_source(&self) -> SecretSource<'_> {
        SecretSource { inline: self.token.as_ref(), env: self.token_env.as_deref(), file: self.token_file.as_ref() }
    }
}

/// `auth.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic` with `username` and the token as password.
    Basic,
    /// The token in the header `header_name`.
    Header,
    /// The token in the query parameter `param` (redacted everywhere).
    Query,
    /// A message after the upgrade, answered by a success or failure reply.
    Message,
}

/// Matches a JSON reply: the value at `pointer` equals `equals`, e.g.
/// `{ pointer = "/type", equals = "connection_established" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// A JSON pointer (RFC 6901), empty or starting with `/`, e.g.
    /// `"/type"`. Required.
    pub pointer: String,
    /// The JSON value found there must equal this (string, number, bool,
    /// ...). Required.
    pub equals: serde_json::Value,
}

impl Matcher {
    /// True when `doc` has `equals` at `pointer`.
    pub fn matches(&self, doc: &serde_json::Value) -> bool {
        doc.pointer(&self.pointer) == Some(&self.equals)
    }
}

// === [upstreams.tls] ===

/// `[upstreams.tls]`: `wss://` URLs only. An empty string means unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Path of extra PEM roots (a private CA); the bundled roots always
    /// apply too. Default: unset.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Path of the client certificate chain for mutual TLS, PEM; goes with
    /// `client_key_file`. Default: unset.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Path of the client private key for mutual TLS, PEM; goes with
    /// `client_cert_file`. Default: unset.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Tests only: accept any certificate (logs a warning at every
    /// connect). Default: `false`.
    pub insecure_skip_verify: bool,
}

// === [upstreams.heartbeat] ===

/// `[upstreams.heartbeat]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Duration between WebSocket pings. Greater than 0. Default: `"20s"`.
    pub interval: Dur,
    /// Duration after a ping within which some frame (of any kind) must
    /// arrive, else the link is dead and reconnects (reason `dead_link`).
    /// Greater than 0. Default: `"20s"`.
    pub timeout: Dur,
    /// Duration without a data message after which the link reconnects
    /// (reason `idle`), for feeds that go silent but still pong; `"0s"` =
    /// off. Default: `"0s"`.
    pub idle_timeout: Dur,
    /// Text also sent every `interval`, for servers that want JSON pings;
    /// empty = none. Default: `""`.
    pub app_message: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Dur::secs(20),
            timeout: Dur::secs(20),
            idle_timeout: Dur::secs(0),
            app_message: String::new(),
        }
    }
}

// === [upstreams.reconnect] ===

/// `[upstreams.reconnect]`: exponential backoff between connect attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Duration of the first delay. Greater than 0. Default: `"500ms"`.
    pub initial: Dur,
    /// Duration of the largest delay; at least `initial`. Default: `"30s"`.
    pub max: Dur,
    /// Factor by which the delay grows per attempt, at least 1.
    /// Default: `2.0`.
    pub multiplier: f64,
    /// Randomization factor in [0, 1]: each delay is drawn from
    /// delay x (1 +/- jitter). Default: `0.5`.
    pub jitter: f64,
    /// Duration of failures after which the upstream gives up (state
    /// `stopped`, until reload or restart); `"0s"` = retry forever.
    /// Default: `"0s"`.
    pub max_elapsed: Dur,
    /// Duration connected after which the backoff resets to `initial`.
    /// Greater than 0. Default: `"30s"`.
    pub stable_after: Dur,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial: Dur::ms(500),
            max: Dur::secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            max_elapsed: Dur::secs(0),
            stable_after: Dur::secs(30),
        }
    }
}

// === [upstreams.decode] ===

/// `[upstreams.decode]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// What the feed's messages are: `json`, `text` or `binary`.
    /// Default: `"json"`.
    pub format: DecodeFormat,
    /// JSON pointer of the routing topic (`json` format), empty or starting
    /// with `/`; absent in a message, or another format -> topic `""`.
    /// Default: `"/type"`.
    pub topic: String,
    /// What to do with invalid JSON: counted, then dropped (`drop`) or
    /// passed on as text (`pass`). Default: `"drop"`.
    pub invalid: InvalidPolicy,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig { format: DecodeFormat::Json, topic: "/type".into(), invalid: InvalidPolicy::Drop }
    }
}

/// `decode.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeFormat {
    /// Messages are JSON documents.
    Json,
    /// Messages are UTF-8 text.
    Text,
    /// Messages are bytes (base64 in envelopes).
    Binary,
}

/// `decode.invalid`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidPolicy {
    /// Count and drop, for every subscriber.
    Drop,
    /// Count and pass on as text.
    Pass,
}
