//! The `Settings` tree (SPEC §3): every key an operator can write, with its
//! serde spelling. The `///` docs are the operator reference: what a key
//! does, its unit, and its default, written the way it is written in the
//! file (`Default: "10s".`, in backticks), or `Required.` or `Default: unset.`
//! A test holds every written default to the real one.
//!
//! Conventions: durations are humantime strings (`"500ms"`, `"20s"`,
//! `"1m30s"`); sizes are bytes or strings with `B`, `KB`, `MB`, `GB`
//! (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024). Unknown keys
//! are an error. Every secret has `*_env` and `*_file` spellings.
//!
//! This file holds the root and the process-wide tables; the per-feed
//! `[[upstreams]]` tree is in `upstream.rs`, `[[sinks]]` in `sink.rs`.

mod cluster;
mod continuity;
mod integrity;
mod reach;
mod sink;
mod upstream;

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::redact::DEFAULT_REDACT_QUERY;
use super::secret::{Secret, SecretSource};
use super::units::{Dur, Size};

pub use cluster::ClusterConfig;
pub use continuity::{Redundancy, Rotate};
pub use integrity::{
    FreshnessConfig, GovernorConfig, HandshakeStep, OnProblem, SecretSpec, SequenceConfig, TokenCommand,
};
pub use reach::{Compression, ProxyConfig};
pub use sink::{NatsConfig, RedisConfig, SinkConfig, SinkFormat, WebhookConfig};
pub use upstream::{
    AuthConfig, AuthKind, DecodeConfig, DecodeFormat, HeartbeatConfig, InvalidPolicy, Matcher, ReconnectConfig,
    TlsConfig, UpstreamConfig,
};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[server]`: the HTTP listener and shutdown timing.
    pub server: ServerConfig,
    /// `[log]`: log format, level and URL redaction.
    pub log: LogConfig,
    /// `[subscribers]`: the downstream `/ws` endpoint.
    pub subscribers: SubscribersConfig,
    /// `[[upstreams]]`: the feeds to keep connected, one actor each.
    /// Cannot be set from the environment. Default: `[]`.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[sinks]]`: extra subscribers that are not WebSocket sessions
    /// (SPEC §6). Cannot be set from the environment. Default: `[]`.
    pub sinks: Vec<SinkConfig>,
    /// `[reconnect_governor]`: connects rationed across all upstreams.
    pub reconnect_governor: GovernorConfig,
    /// `[cluster]`: replicas sharing the upstreams over NATS (SPEC §15).
    pub cluster: ClusterConfig,
}

// === [server] ===

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Socket address of the HTTP server: `/`, `/ws`, `/metrics`,
    /// `/healthz`, `/readyz`, `/status`. A change needs a restart.
    /// Default: `"0.0.0.0:9750"`.
    pub listen: String,
    /// Duration that shutdown may take after `shutdown_delay` before the
    /// process gives up and exits 1. Greater than 0. Default: `"10s"`.
    pub shutdown_timeout: Dur,
    /// Duration to keep serving with `/readyz` 503 after SIGTERM, so a load
    /// balancer removes the endpoint first (Kubernetes). Default: `"0s"`.
    pub shutdown_delay: Dur,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: "0.0.0.0:9750".into(), shutdown_timeout: Dur::secs(10), shutdown_delay: Dur::secs(0) }
    }
}

// === [log] ===

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines (one object per line).
    /// Logs always go to stderr. Default: `"text"`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `wsgate=debug,actix=warn`); `RUST_LOG`
    /// overrides it. Default: `"info"`.
    pub level: String,
    /// Query parameters whose values are shown as `***` wherever a URL is
    /// shown (case-insensitive; names containing `token`, `key`, `secret`
    /// or `sig` always are), so feed credentials never reach a log line.
    /// A list, or from the environment one comma-separated string.
    /// Default: `["token", "key", "apikey", "api_key", "access_token", "auth",
    /// "secret", "signature", "sig", "password", "passphrase", "jwt"]`.
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

// === [subscribers] ===

/// `[subscribers]`: the `/ws` endpoint. Changes apply to new connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscribersConfig {
    /// Number of WebSocket subscribers at once; beyond it `/ws` answers
    /// HTTP 503. Sinks do not count. At least 1. Default: `10000`.
    pub max_connections: usize,
    /// Messages buffered per subscriber: the bound of every subscriber
    /// queue. At least 1. Default: `1024`.
    pub queue_capacity: usize,
    /// Size of the messages buffered per subscriber, beside
    /// `queue_capacity` (whichever is hit first). Queued-message memory is
    /// at most `queue_bytes` x subscribers (one larger message is still
    /// taken into an empty queue, so at most `max(queue_bytes,
    /// max_message_size)` each). At least 1 byte. Default: `"8MiB"`.
    pub queue_bytes: Size,
    /// Number of distinct (upstream, topic) pairs one subscriber may follow,
    /// query and `subscribe` ops together; more is HTTP 400 or an error
    /// event. At least 1. Default: `64`.
    pub max_filters: usize,
    /// Allow `/ws` without a token on a non-loopback listener. Without it,
    /// `run` refuses to start open to the network (fail closed).
    /// Default: `false`.
    pub anonymous: bool,
    /// What happens when a subscriber's queue is full: `drop_oldest`,
    /// `drop_newest`, `disconnect` or `conflate` (`block` is for sinks
    /// only). Default: `"drop_oldest"`.
    pub overflow: Overflow,
    /// JSON pointer whose value is the key `overflow = "conflate"` keeps
    /// the latest message of (per upstream); `""` = the topic. Messages
    /// without a value there are never conflated. Default: `""`.
    pub conflate_key: String,
    /// Number of messages kept per upstream for replay (`/ws?since=`, the
    /// `resume` op); 0 = replay off (and no `hello` event). Default: `0`.
    pub history: usize,
    /// Size of the messages kept per upstream for replay (message bytes as
    /// received), beside `history` (whichever is hit first).
    /// Default: `"64MiB"`.
    pub history_bytes: Size,
    /// Token subscribers must present, inline (prefer `_env` or `_file`).
    /// At most one of the three spellings. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Name of the environment variable holding the subscriber token; an
    /// unset variable leaves `/ws` open. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_env: Option<String>,
    /// Path of a file holding the subscriber token, trimmed; re-read when
    /// it changes (a rotated Secret applies without a signal). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Browser origins allowed to connect (`"https://app.example.com"`);
    /// empty = any. A missing `Origin` header is allowed (non-browser
    /// clients). A list, or from the environment one comma-separated
    /// string. Default: `[]`.
    #[serde(deserialize_with = "string_or_seq")]
    pub allowed_origins: Vec<String>,
    /// Duration a subscriber socket may accept no data before the kernel
    /// closes it (TCP_USER_TIMEOUT), so a client that never reads cannot
    /// hold memory. Greater than 0. Default: `"30s"`.
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
            conflate_key: String::new(),
            history: 0,
            history_bytes: Size::mib(64),
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
    /// Keep at most one message per (upstream, `conflate_key` value): the
    /// newest replaces the queued ones of its key (counted as dropped); a
    /// message whose key has nothing queued drops the oldest.
    Conflate,
    /// Sinks only: the upstreams feeding a full queue stop reading their
    /// socket until it drains; nothing is dropped.
    Block,
}

// === serde helpers ===

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

#[cfg(test)]
mod tests;
