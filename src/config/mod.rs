//! The `Settings` tree (SPEC §3): typed, `deny_unknown_fields`, with the
//! defaults of the SPEC, loaded from TOML/YAML/JSON plus `WSGATE__*`
//! environment overrides, then validated. Every error names the file and the
//! key path, e.g. `config/wsgate.toml: upstreams[1].heartbeat.interval:
//! invalid duration "5 parsecs"`.
//!
//! Config is passed to constructors; nothing reads it from a global.

mod files;
mod redact;
mod secret;
mod units;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

pub use files::check_files;
pub use redact::{redact_url, redact_webhook_url, scrub, Redactor, DEFAULT_REDACT_QUERY};
pub use secret::{Secret, SecretError, SecretSource, REDACTED};
pub use units::{parse_duration, parse_size, Dur, Size};

/// Environment prefix of overrides: `WSGATE__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "WSGATE";
/// Separator between prefix and key parts in override names.
pub const ENV_SEPARATOR: &str = "__";
/// Where `run` and `check` look when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/wsgate.toml";

// === the tree ===

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP listener and shutdown timing.
    pub server: ServerConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// The downstream `/ws` endpoint.
    pub subscribers: SubscribersConfig,
    /// The feeds to keep connected, one actor each.
    pub upstreams: Vec<UpstreamConfig>,
    /// Extra subscribers that are not WebSocket sessions (SPEC §6).
    pub sinks: Vec<SinkConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP server: `/`, `/ws`, `/metrics`, `/healthz`, `/readyz`, `/status`.
    pub listen: String,
    /// After the delay, how long shutdown may take before the process exits 1.
    pub shutdown_timeout: Dur,
    /// On SIGTERM, keep serving with `/readyz` 503 this long (k8s endpoint removal).
    pub shutdown_delay: Dur,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: "0.0.0.0:9750".into(), shutdown_timeout: Dur::secs(10), shutdown_delay: Dur::secs(0) }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines. Logs always go to stderr.
    pub format: LogFormat,
    /// A tracing filter (`info`, `wsgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
    /// Query parameters whose values are shown as `***` wherever a URL is
    /// shown (case-insensitive; names containing `token`, `key`, `secret`
    /// or `sig` always are), so feed credentials never reach a log line.
    #[serde(deserialize_with = "string_or_seq")]
    pub redact_query: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            redact_query: DEFAULT_REDACT_QUERY.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// `log.format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[subscribers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscribersConfig {
    /// WebSocket subscribers beyond this get HTTP 503.
    pub max_connections: usize,
    /// Messages buffered per subscriber; the bound of every subscriber queue.
    pub queue_capacity: usize,
    /// Bytes of messages buffered per subscriber, beside `queue_capacity`
    /// (whichever is hit first). Queued-message memory is at most
    /// `queue_bytes` x subscribers (one larger message is still taken into
    /// an empty queue, so at most `max(queue_bytes, max_message_size)` each).
    pub queue_bytes: Size,
    /// Distinct (upstream, topic) pairs one subscriber may follow, query
    /// and `subscribe` ops together; more is HTTP 400 or an error event.
    pub max_filters: usize,
    /// Allow `/ws` without a token on a non-loopback listener. Without it,
    /// `run` refuses to start open to the network (fail closed).
    pub anonymous: bool,
    /// What happens when a subscriber's queue is full.
    pub overflow: Overflow,
    /// Token subscribers must present (inline; prefer `_env` or `_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Environment variable holding the token; an unset variable leaves `/ws` open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_env: Option<String>,
    /// File holding the token; re-read when it changes (a rotated Secret
    /// applies without a signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Browser origins allowed to connect; empty = any. A missing Origin is allowed.
    #[serde(deserialize_with = "string_or_seq")]
    pub allowed_origins: Vec<String>,
    /// A subscriber socket that accepts no data for this long is closed by
    /// the kernel (TCP_USER_TIMEOUT), so a client that never reads cannot
    /// hold memory. Applies to new connections.
    pub stall_timeout: Dur,
}

impl Default for SubscribersConfig {
    fn default() -> Self {
        SubscribersConfig {
            max_connections: 10_000,
            queue_capacity: 1024,
            queue_bytes: Size::mib(8),
            max_filters: 64,
            anonymous: false,
            overflow: Overflow::DropOldest,
            auth_token: None,
            auth_token_env: None,
            auth_token_file: None,
            allowed_origins: Vec::new(),
            stall_timeout: Dur::secs(30),
        }
    }
}

impl SubscribersConfig {
    /// Where the subscriber token comes from.
    pub fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            inline: self.auth_token.as_ref(),
            env: self.auth_token_env.as_deref(),
            file: self.auth_token_file.as_ref(),
        }
    }
}

/// `subscribers.overflow`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest queued message to make room.
    DropOldest,
    /// Drop the message that does not fit.
    DropNewest,
    /// Close the subscriber with 1008 "slow consumer".
    Disconnect,
}

/// One `[[upstreams]]` entry. `Debug` shows the URL and header values
/// redacted (see the impl below).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique, `[a-z0-9_-]+`; the `upstream` label of every metric.
    pub name: String,
    /// `ws://` or `wss://`.
    pub url: String,
    /// Counts toward `/readyz`.
    #[serde(default = "yes")]
    pub required: bool,
    /// Extra handshake headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Offered subprotocols; the server's pick must be one of them.
    #[serde(default)]
    pub subprotocols: Vec<String>,
    /// Covers TCP, TLS and the upgrade together.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Largest message after reassembling fragments; larger closes with 1009.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Size,
    /// Text messages sent in order after auth, at every (re)connect.
    #[serde(default)]
    pub on_connect: Vec<String>,
    /// How to authenticate.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS for `wss://`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Pings and dead-link detection.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Backoff between attempts.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// How frames become messages.
    #[serde(default)]
    pub decode: DecodeConfig,
    /// Not a key: `log.redact_query`, put here by [`load`] (through
    /// [`Settings::share_redactor`]) so that every place that shows this
    /// upstream's URL redacts it the same way without being handed the log config.
    #[serde(skip)]
    pub redactor: Redactor,
}

const fn yes() -> bool {
    true
}
const fn default_connect_timeout() -> Dur {
    Dur::secs(10)
}
const fn default_max_message_size() -> Size {
    Size::mib(16)
}

impl UpstreamConfig {
    /// The URL as it may be shown: userinfo, `redact_query` values and the
    /// query-auth parameter as `***` (SPEC §11).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url, &self.redactor, self.query_auth_param())
    }

    /// The secret substrings of the URL (userinfo, secret query values), to
    /// [`scrub`] from error texts of libraries that might echo the URL.
    pub fn url_secrets(&self) -> Vec<String> {
        self.redactor.secrets_in(&self.url, self.query_auth_param())
    }

    /// `auth.param` when `auth.kind = "query"`: its value is always secret.
    fn query_auth_param(&self) -> Option<&str> {
        (self.auth.kind == AuthKind::Query).then(|| self.auth.param.as_deref().unwrap_or("token"))
    }

    /// A minimal upstream, for the demo and for tests.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        UpstreamConfig {
            name: name.into(),
            url: url.into(),
            required: true,
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
            redactor: Redactor::default(),
        }
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field is a compile error here until it is
        // decided whether it can be shown.
        let UpstreamConfig {
            name,
            url: _,
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
            redactor,
        } = self;
        f.debug_struct("UpstreamConfig")
            .field("name", name)
            .field("url", &self.redacted_url())
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
            .finish_non_exhaustive()
    }
}

/// `[upstreams.auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// none | bearer | basic | header | query | message
    pub kind: AuthKind,
    /// Inline token (prefer `token_env` or `token_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Environment variable holding the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the token, re-read at every (re)connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `basic`: the user name (the token is the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `header`: the header that carries the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// `query`: the query parameter that carries the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// `message`: the text sent after the upgrade; `{{token}}` is replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `message`: a reply matching this means authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<Matcher>,
    /// `message`: a reply matching this means rejected (reason `auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Matcher>,
    /// `message`: how long to wait for success, from the upgrade on.
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

/// Matches a JSON reply: the value at `pointer` equals `equals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// A JSON pointer, e.g. `/type`.
    pub pointer: String,
    /// The value it must equal.
    pub equals: serde_json::Value,
}

impl Matcher {
    /// True when `doc` has `equals` at `pointer`.
    pub fn matches(&self, doc: &serde_json::Value) -> bool {
        doc.pointer(&self.pointer) == Some(&self.equals)
    }
}

/// `[upstreams.tls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Extra PEM roots (private CA); bundled roots always apply.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mutual TLS, PEM.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Client private key for mutual TLS, PEM.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Tests only: accept any certificate (logs a warning at every connect).
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    fn is_customized(&self) -> bool {
        self != &TlsConfig::default()
    }
}

/// `[upstreams.heartbeat]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// A WebSocket ping every interval.
    pub interval: Dur,
    /// No frame of any kind within this after a ping -> dead link, reconnect.
    pub timeout: Dur,
    /// Above zero: no data message within this -> reconnect (reason `idle`).
    pub idle_timeout: Dur,
    /// Optional text also sent every interval (JSON pings).
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

/// `[upstreams.reconnect]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay.
    pub initial: Dur,
    /// Largest delay.
    pub max: Dur,
    /// Growth per attempt (>= 1).
    pub multiplier: f64,
    /// Randomization factor in [0, 1].
    pub jitter: f64,
    /// 0 = retry forever; else give up after this long -> state `stopped`.
    pub max_elapsed: Dur,
    /// Connected this long -> backoff resets to `initial`.
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

/// `[upstreams.decode]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// json | text | binary
    pub format: DecodeFormat,
    /// JSON pointer of the routing topic (json format); absent -> topic `""`.
    pub topic: String,
    /// What to do with invalid JSON: counted, then dropped or passed as text.
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

/// One `[[sinks]]` entry (SPEC §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on stdout.
    Stdout {
        /// Upstreams to follow; empty = all.
        #[serde(default)]
        upstreams: Vec<String>,
        /// Topics to follow; empty = all.
        #[serde(default)]
        topics: Vec<String>,
        /// Bytes of messages queued at most (oldest dropped beyond, counted).
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
    },
    /// JSON lines appended to a file, reopened on SIGHUP.
    File {
        /// The file to append to.
        path: PathBuf,
        /// Upstreams to follow; empty = all.
        #[serde(default)]
        upstreams: Vec<String>,
        /// Topics to follow; empty = all.
        #[serde(default)]
        topics: Vec<String>,
        /// Bytes of messages queued at most (oldest dropped beyond, counted).
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
    },
    /// Batches of envelopes POSTed as a JSON array.
    Webhook(WebhookConfig),
}

/// `[[sinks]] kind = "webhook"`. `Debug` shows the URL as
/// `scheme://host:port/***` and header values redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// Envelopes per POST at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partial batch is sent after this long.
    #[serde(default = "default_batch_timeout")]
    pub batch_timeout: Dur,
    /// Envelopes waiting to be sent; oldest dropped when full, counted.
    #[serde(default = "default_webhook_queue")]
    pub queue_capacity: usize,
    /// Bytes of messages queued at most, beside `queue_capacity`.
    #[serde(default = "default_sink_queue_bytes")]
    pub queue_bytes: Size,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bearer token (inline; prefer `_env` or `_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Environment variable holding the Bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_env: Option<String>,
    /// File holding the Bearer token, re-read for every batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Upstreams to follow; empty = all.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Topics to follow; empty = all.
    #[serde(default)]
    pub topics: Vec<String>,
}

const fn default_batch_size() -> usize {
    100
}
const fn default_batch_timeout() -> Dur {
    Dur::secs(1)
}
const fn default_webhook_queue() -> usize {
    10_000
}
const fn default_sink_queue_bytes() -> Size {
    Size::mib(64)
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field is a compile error here until it is
        // decided whether it can be shown.
        let WebhookConfig {
            url,
            batch_size,
            batch_timeout,
            queue_capacity,
            queue_bytes,
            headers,
            auth_token,
            auth_token_env,
            auth_token_file,
            upstreams,
            topics,
        } = self;
        f.debug_struct("WebhookConfig")
            .field("url", &redact_webhook_url(url))
            .field("batch_size", batch_size)
            .field("batch_timeout", batch_timeout)
            .field("queue_capacity", queue_capacity)
            .field("queue_bytes", queue_bytes)
            .field("headers", &redacted_headers(headers, &Redactor::default()))
            .field("auth_token", auth_token)
            .field("auth_token_env", auth_token_env)
            .field("auth_token_file", auth_token_file)
            .field("upstreams", upstreams)
            .field("topics", topics)
            .finish()
    }
}

impl WebhookConfig {
    /// Where the Bearer token comes from.
    pub fn token_source(&self) -> SecretSource<'_> {
        SecretSource {
            inline: self.auth_token.as_ref(),
            env: self.auth_token_env.as_deref(),
            file: self.auth_token_file.as_ref(),
        }
    }
}

impl SinkConfig {
    /// The metric `kind` label of this sink.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::File { .. } => "file",
            SinkConfig::Webhook(_) => "webhook",
        }
    }

    /// (upstreams, topics) filters; empty = all.
    pub fn filters(&self) -> (&[String], &[String]) {
        match self {
            SinkConfig::Stdout { upstreams, topics, .. } | SinkConfig::File { upstreams, topics, .. } => {
                (upstreams, topics)
            }
            SinkConfig::Webhook(w) => (&w.upstreams, &w.topics),
        }
    }

    /// `queue_bytes`: the byte bound of this sink's queue.
    pub fn queue_bytes(&self) -> Size {
        match self {
            SinkConfig::Stdout { queue_bytes, .. } | SinkConfig::File { queue_bytes, .. } => *queue_bytes,
            SinkConfig::Webhook(w) => w.queue_bytes,
        }
    }
}

/// Accepts `["a", "b"]` from files and `"a,b"` from environment overrides.
fn string_or_seq<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
        Either::Many(v) => v,
    })
}

/// `ca_file = ""` (as in the SPEC's example) means "not set".
fn empty_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()).map(PathBuf::from))
}

// === errors ===

/// A configuration problem: which file, which key, what is wrong. Exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `<built-in>` for the demo, `<environment>` for overrides.
    pub source: String,
    /// The key path, e.g. `upstreams[1].heartbeat.interval`; empty for whole-file problems.
    pub key: String,
    /// What is wrong, never containing a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === loading ===

/// Where the text of a config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file; its extension picks the format.
    File(PathBuf),
    /// Text held in the binary (the demo), in TOML.
    BuiltIn(String),
}

impl ConfigSource {
    fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::BuiltIn(_) => "<built-in>".into(),
        }
    }
}

/// Loads from `source` plus the process environment, then validates.
pub fn load(source: &ConfigSource) -> Result<Settings, ConfigError> {
    load_with_env(source, std::env::vars())
}

/// As [`load`], with the environment given explicitly (tests).
pub fn load_with_env(
    source: &ConfigSource,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let origin = source.name();
    let err = |key: &str, message: String| ConfigError { source: origin.clone(), key: key.into(), message };

    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let env: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    for name in env.keys() {
        let first = name[prefix.len()..].split(ENV_SEPARATOR).next().unwrap_or("").to_ascii_lowercase();
        if first == "upstreams" || first == "sinks" {
            return Err(ConfigError {
                source: "<environment>".into(),
                key: first,
                message: format!(
                    "{name}: arrays of tables (upstreams, sinks) cannot be overridden from the environment; edit the config file"
                ),
            });
        }
    }

    let file_source = match source {
        ConfigSource::File(path) => {
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => config::FileFormat::Toml,
                Some("yaml" | "yml") => config::FileFormat::Yaml,
                Some("json") => config::FileFormat::Json,
                _ => return Err(err("", "unknown file extension (expected .toml, .yaml, .yml or .json)".into())),
            };
            let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
            config::File::from_str(&text, format)
        }
        ConfigSource::BuiltIn(text) => config::File::from_str(text.as_str(), config::FileFormat::Toml),
    };
    let environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .source(Some(env.clone().into_iter().collect()));
    let built = config::Config::builder()
        .add_source(file_source)
        .add_source(environment)
        .build()
        .map_err(|e| err("", syntax_message(&e)))?;
    let root: config::Value = built.try_deserialize().map_err(|e| err("", e.to_string()))?;
    let mut settings: Settings = serde_path_to_error::deserialize(root).map_err(|e| {
        let key = e.path().to_string();
        let mut key = if key == "." { String::new() } else { key };
        let mut message = friendly(e.into_inner().to_string());
        // config says `missing configuration field "upstreams[0]url"`: name the key itself.
        if let Some(field) = message.strip_prefix("missing configuration field ") {
            let field = field.trim_matches('"');
            let field = field.rsplit([']', '.']).next().unwrap_or(field).to_string();
            key = if key.is_empty() { field } else { format!("{key}.{field}") };
            message = "missing required key".into();
        }
        let env_name = env_name_for(&key);
        if env.contains_key(&env_name) {
            message.push_str(&format!(" (from environment variable {env_name})"));
        }
        ConfigError { source: origin.clone(), key, message }
    })?;
    settings.share_redactor();
    validate(&settings).map_err(|(key, message)| {
        let env_name = env_name_for(&key);
        let source = if env.contains_key(&env_name) { format!("<environment> {env_name}") } else { origin.clone() };
        ConfigError { source, key, message }
    })?;
    Ok(settings)
}

/// The config crate says "enum LogFormat does not have variant constructor
/// xml for key `log.format`"; say what the choices are instead.
fn friendly(message: String) -> String {
    const CHOICES: &[(&str, &str)] = &[
        ("LogFormat", "text, json"),
        ("Overflow", "drop_oldest, drop_newest, disconnect"),
        ("AuthKind", "none, bearer, basic, header, query, message"),
        ("DecodeFormat", "json, text, binary"),
        ("InvalidPolicy", "drop, pass"),
    ];
    // The key is named separately; drop the config crate's own copy of it.
    let message = match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let Some(rest) = message.strip_prefix("enum ") else { return message };
    let Some((name, rest)) = rest.split_once(" does not have variant constructor ") else { return message };
    let value = rest.split(" for key ").next().unwrap_or(rest);
    match CHOICES.iter().find(|(n, _)| *n == name) {
        Some((_, choices)) => format!("unknown variant {value:?} (expected one of: {choices})"),
        None => format!("unknown variant {value:?}"),
    }
}

/// `server.listen` -> `WSGATE__SERVER__LISTEN`
fn env_name_for(key: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for part in key.split('.') {
        name.push_str(ENV_SEPARATOR);
        name.push_str(&part.to_ascii_uppercase());
    }
    name
}

/// The config crate's parse errors repeat the origin; keep just the reason.
fn syntax_message(e: &config::ConfigError) -> String {
    format!("cannot parse: {e}")
}

// === validation ===

type Invalid = (String, String);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

/// Checks what serde cannot: ranges, uniqueness, consistency between keys.
pub fn validate(s: &Settings) -> Result<(), Invalid> {
    s.server.listen.parse::<SocketAddr>().map_err(|_| {
        bad("server.listen", format!("invalid address {:?} (expected e.g. \"0.0.0.0:9750\")", s.server.listen))
    })?;
    if s.server.shutdown_timeout.is_zero() {
        return Err(bad("server.shutdown_timeout", "must be greater than 0s"));
    }
    tracing_subscriber::EnvFilter::try_new(&s.log.level)
        .map_err(|e| bad("log.level", format!("invalid filter {:?}: {e}", s.log.level)))?;
    for (i, name) in s.log.redact_query.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(bad(format!("log.redact_query[{i}]"), "must not be empty"));
        }
    }

    let sub = &s.subscribers;
    if sub.max_connections == 0 {
        return Err(bad("subscribers.max_connections", "must be at least 1"));
    }
    if sub.queue_capacity == 0 {
        return Err(bad("subscribers.queue_capacity", "must be at least 1"));
    }
    if sub.queue_bytes.0 == 0 {
        return Err(bad("subscribers.queue_bytes", "must be at least 1 byte"));
    }
    if sub.max_filters == 0 {
        return Err(bad("subscribers.max_filters", "must be at least 1"));
    }
    if sub.stall_timeout.is_zero() {
        return Err(bad("subscribers.stall_timeout", "must be greater than 0s"));
    }
    if sub.token_source().count() > 1 {
        return Err(bad("subscribers.auth_token", "set only one of auth_token, auth_token_env, auth_token_file"));
    }
    for (i, origin) in sub.allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(bad(
                format!("subscribers.allowed_origins[{i}]"),
                format!("invalid origin {origin:?} (expected e.g. \"https://app.example.com\")"),
            ));
        }
    }

    let mut names = HashSet::new();
    for (i, u) in s.upstreams.iter().enumerate() {
        validate_upstream(u).map_err(|(k, m)| (format!("upstreams[{i}].{k}"), m))?;
        if !names.insert(u.name.as_str()) {
            return Err(bad(format!("upstreams[{i}].name"), format!("duplicate upstream name {:?}", u.name)));
        }
    }
    for (i, sink) in s.sinks.iter().enumerate() {
        validate_sink(sink, &names).map_err(|(k, m)| (format!("sinks[{i}].{k}"), m))?;
    }
    Ok(())
}

fn validate_upstream(u: &UpstreamConfig) -> Result<(), Invalid> {
    if u.name.is_empty()
        || u.name.len() > 64
        || !u.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(bad("name", format!("invalid name {:?} (1 to 64 characters of [a-z0-9_-])", u.name)));
    }
    let secure = if u.url.starts_with("wss://") {
        true
    } else if u.url.starts_with("ws://") {
        false
    } else {
        return Err(bad("url", format!("invalid url {:?} (must start with ws:// or wss://)", u.redacted_url())));
    };
    let uri: awc::http::Uri = u.url.parse().map_err(|_| bad("url", format!("invalid url {:?}", u.redacted_url())))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("url", format!("invalid url {:?}: no host", u.redacted_url())));
    }
    for (name, value) in &u.headers {
        awc::http::header::HeaderName::try_from(name.as_str())
            .map_err(|_| bad(format!("headers.{name}"), "invalid header name"))?;
        awc::http::header::HeaderValue::try_from(value.as_str())
            .map_err(|_| bad(format!("headers.{name}"), "invalid header value"))?;
    }
    if u.connect_timeout.is_zero() {
        return Err(bad("connect_timeout", "must be greater than 0s"));
    }
    if u.max_message_size.0 == 0 {
        return Err(bad("max_message_size", "must be at least 1 byte"));
    }
    validate_auth(&u.auth).map_err(|(k, m)| (format!("auth.{k}"), m))?;
    if !secure && u.tls.is_customized() {
        return Err(bad("tls", "tls settings apply to wss:// urls only"));
    }
    if u.tls.client_cert_file.is_some() != u.tls.client_key_file.is_some() {
        return Err(bad("tls.client_key_file", "client_cert_file and client_key_file go together"));
    }
    let hb = &u.heartbeat;
    if hb.interval.is_zero() {
        return Err(bad("heartbeat.interval", "must be greater than 0s"));
    }
    if hb.timeout.is_zero() {
        return Err(bad("heartbeat.timeout", "must be greater than 0s"));
    }
    let r = &u.reconnect;
    if r.initial.is_zero() {
        return Err(bad("reconnect.initial", "must be greater than 0s"));
    }
    if r.max < r.initial {
        return Err(bad("reconnect.max", format!("must be at least reconnect.initial ({})", r.initial)));
    }
    if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
        return Err(bad("reconnect.multiplier", format!("must be >= 1, got {}", r.multiplier)));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        return Err(bad("reconnect.jitter", format!("must be in [0, 1], got {}", r.jitter)));
    }
    if r.stable_after.is_zero() {
        return Err(bad("reconnect.stable_after", "must be greater than 0s"));
    }
    if !(u.decode.topic.is_empty() || u.decode.topic.starts_with('/')) {
        return Err(bad(
            "decode.topic",
            format!("invalid JSON pointer {:?} (must be empty or start with /)", u.decode.topic),
        ));
    }
    Ok(())
}

fn validate_auth(a: &AuthConfig) -> Result<(), Invalid> {
    let src = a.token_source();
    if src.count() > 1 {
        return Err(bad("token", "set only one of token, token_env, token_file"));
    }
    let needs_token = match a.kind {
        AuthKind::None => false,
        AuthKind::Bearer | AuthKind::Basic | AuthKind::Header | AuthKind::Query => true,
        AuthKind::Message => a.message.as_deref().is_some_and(|m| m.contains("{{token}}")),
    };
    if needs_token && !src.is_set() {
        return Err(bad(
            "token",
            format!("auth kind {:?} needs one of token, token_env, token_file", a.kind).to_lowercase(),
        ));
    }
    let only = |field: &str, present: bool, kind: AuthKind| -> Result<(), Invalid> {
        if present && a.kind != kind {
            return Err(bad(field, format!("only applies to auth kind {kind:?}").to_lowercase()));
        }
        if !present && a.kind == kind {
            return Err(bad(field, format!("required for auth kind {kind:?}").to_lowercase()));
        }
        Ok(())
    };
    if a.kind == AuthKind::None && src.is_set() {
        return Err(bad("kind", "a token is configured but auth kind is none"));
    }
    only("username", a.username.is_some(), AuthKind::Basic)?;
    only("header_name", a.header_name.is_some(), AuthKind::Header)?;
    only("param", a.param.is_some(), AuthKind::Query)?;
    only("message", a.message.is_some(), AuthKind::Message)?;
    only("success", a.success.is_some(), AuthKind::Message)?;
    if a.failure.is_some() && a.kind != AuthKind::Message {
        return Err(bad("failure", "only applies to auth kind message"));
    }
    if let Some(h) = &a.header_name {
        awc::http::header::HeaderName::try_from(h.as_str()).map_err(|_| bad("header_name", "invalid header name"))?;
    }
    for (field, m) in [("success", &a.success), ("failure", &a.failure)] {
        if let Some(m) = m {
            if !(m.pointer.is_empty() || m.pointer.starts_with('/')) {
                return Err(bad(format!("{field}.pointer"), "invalid JSON pointer (must be empty or start with /)"));
            }
        }
    }
    if a.timeout.is_zero() {
        return Err(bad("timeout", "must be greater than 0s"));
    }
    Ok(())
}

fn validate_sink(sink: &SinkConfig, upstreams: &HashSet<&str>) -> Result<(), Invalid> {
    let (ups, _) = sink.filters();
    for (i, u) in ups.iter().enumerate() {
        if !upstreams.contains(u.as_str()) {
            return Err(bad(format!("upstreams[{i}]"), format!("unknown upstream {u:?}")));
        }
    }
    if sink.queue_bytes().0 == 0 {
        return Err(bad("queue_bytes", "must be at least 1 byte"));
    }
    match sink {
        SinkConfig::Stdout { .. } => {}
        SinkConfig::File { path, .. } => {
            if path.as_os_str().is_empty() {
                return Err(bad("path", "must not be empty"));
            }
        }
        SinkConfig::Webhook(w) => {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                || w.url.parse::<awc::http::Uri>().is_err()
            {
                return Err(bad(
                    "url",
                    format!("invalid url {:?} (must start with http:// or https://)", redact_webhook_url(&w.url)),
                ));
            }
            if w.batch_size == 0 {
                return Err(bad("batch_size", "must be at least 1"));
            }
            if w.batch_timeout.is_zero() {
                return Err(bad("batch_timeout", "must be greater than 0s"));
            }
            if w.queue_capacity < w.batch_size {
                return Err(bad("queue_capacity", "must be at least batch_size"));
            }
            if w.token_source().count() > 1 {
                return Err(bad("auth_token", "set only one of auth_token, auth_token_env, auth_token_file"));
            }
        }
    }
    Ok(())
}

// === output ===

impl Settings {
    /// Hands the redactor built from `log.redact_query` to every upstream
    /// (see [`UpstreamConfig::redactor`]). [`load`] calls it; code that
    /// builds or edits `Settings` by hand calls it after changing `log`.
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
            u.url = u.redacted_url();
            u.headers = redacted_headers(&u.headers, &redactor);
        }
        for sink in &mut s.sinks {
            if let SinkConfig::Webhook(w) = sink {
                w.url = redact_webhook_url(&w.url);
                w.headers = redacted_headers(&w.headers, &redactor);
            }
        }
        s
    }

    /// The effective config as TOML, secrets redacted (`wsgate check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Header values that look like credentials (see [`Redactor::is_secret_header`]) as `***`.
fn redacted_headers(headers: &BTreeMap<String, String>, redactor: &Redactor) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if redactor.is_secret_header(name) { REDACTED.to_string() } else { value.clone() };
            (name.clone(), shown)
        })
        .collect()
}

#[cfg(test)]
mod tests;
