//! One `[[sinks]]` entry (SPEC §6, §15): a subscriber that is not a
//! WebSocket session. `kind` picks the variant; each drains its own bounded
//! queue.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::redact::{redact_url, redact_webhook_url, redacted_headers, Redactor};
use crate::config::secret::{Secret, SecretSource};
use crate::config::units::{Dur, Size};

use super::Overflow;

/// One `[[sinks]]` entry, by `kind`: `stdout`, `file`, `webhook`, `nats`
/// or `redis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// `kind = "stdout"`: JSON lines on stdout (logs go to stderr).
    Stdout {
        /// Names of the upstreams to follow; empty = all. Default: `[]`.
        #[serde(default)]
        upstreams: Vec<String>,
        /// Topics to follow; empty = all. Default: `[]`.
        #[serde(default)]
        topics: Vec<String>,
        /// Size of the messages queued at most, beside `queue_capacity`
        /// (whichever is hit first). At least 1 byte. Default: `"64MiB"`.
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
        /// Number of messages queued at most. At least 1. Default: `10000`.
        #[serde(default = "default_webhook_queue")]
        queue_capacity: usize,
        /// What happens when the queue is full: `drop_oldest`,
        /// `drop_newest`, `conflate` (see `conflate_key`) or `block` (the
        /// upstreams feeding this sink stop reading until it drains:
        /// lossless recording). Drops are counted as `overflow`.
        /// Default: `"drop_oldest"`.
        #[serde(default = "default_sink_overflow")]
        overflow: Overflow,
        /// JSON pointer whose value `overflow = "conflate"` keeps the
        /// latest message of; `""` = the topic. Default: `""`.
        #[serde(default)]
        conflate_key: String,
    },
    /// `kind = "file"`: JSON lines appended to a file, reopened on SIGHUP
    /// (logrotate).
    File {
        /// Path of the file to append to; its directory must be writable.
        /// Required.
        path: PathBuf,
        /// Names of the upstreams to follow; empty = all. Default: `[]`.
        #[serde(default)]
        upstreams: Vec<String>,
        /// Topics to follow; empty = all. Default: `[]`.
        #[serde(default)]
        topics: Vec<String>,
        /// Size of the messages queued at most, beside `queue_capacity`
        /// (whichever is hit first). At least 1 byte. Default: `"64MiB"`.
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
        /// Number of messages queued at most. At least 1. Default: `10000`.
        #[serde(default = "default_webhook_queue")]
        queue_capacity: usize,
        /// What happens when the queue is full: `drop_oldest`,
        /// `drop_newest`, `conflate` (see `conflate_key`) or `block` (the
        /// upstreams feeding this sink stop reading until it drains:
        /// lossless recording). Drops are counted as `overflow`.
        /// Default: `"drop_oldest"`.
        #[serde(default = "default_sink_overflow")]
        overflow: Overflow,
        /// JSON pointer whose value `overflow = "conflate"` keeps the
        /// latest message of; `""` = the topic. Default: `""`.
        #[serde(default)]
        conflate_key: String,
    },
    /// `kind = "webhook"`: batches of envelopes POSTed as a JSON array.
    Webhook(WebhookConfig),
    /// `kind = "nats"`: JetStream publishes, one per message (SPEC §15).
    Nats(NatsConfig),
    /// `kind = "redis"`: one `XADD` per message, pipelined (SPEC §15).
    Redis(RedisConfig),
}

impl SinkConfig {
    /// The metric `kind` label of this sink.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::File { .. } => "file",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Nats(_) => "nats",
            SinkConfig::Redis(_) => "redis",
        }
    }

    /// (upstreams, topics) filters; empty = all.
    pub fn filters(&self) -> (&[String], &[String]) {
        match self {
            SinkConfig::Stdout { upstreams, topics, .. } | SinkConfig::File { upstreams, topics, .. } => {
                (upstreams, topics)
            }
            SinkConfig::Webhook(w) => (&w.upstreams, &w.topics),
            SinkConfig::Nats(n) => (&n.upstreams, &n.topics),
            SinkConfig::Redis(r) => (&r.upstreams, &r.topics),
        }
    }

    /// `queue_capacity`, `overflow` and `conflate_key`: how this sink's
    /// queue is bounded and what happens when it is full (the webhook:
    /// `drop_oldest` or `block`, applied to what it holds, no conflation).
    pub fn queue_policy(&self) -> (usize, Overflow, &str) {
        match self {
            SinkConfig::Stdout { queue_capacity, overflow, conflate_key, .. }
            | SinkConfig::File { queue_capacity, overflow, conflate_key, .. } => {
                (*queue_capacity, *overflow, conflate_key)
            }
            SinkConfig::Webhook(w) => (w.queue_capacity, w.overflow, ""),
            SinkConfig::Nats(n) => (n.queue_capacity, n.overflow, &n.conflate_key),
            SinkConfig::Redis(r) => (r.queue_capacity, r.overflow, &r.conflate_key),
        }
    }

    /// `queue_bytes`: the byte bound of this sink's queue.
    pub fn queue_bytes(&self) -> Size {
        match self {
            SinkConfig::Stdout { queue_bytes, .. } | SinkConfig::File { queue_bytes, .. } => *queue_bytes,
            SinkConfig::Webhook(w) => w.queue_bytes,
            SinkConfig::Nats(n) => n.queue_bytes,
            SinkConfig::Redis(r) => r.queue_bytes,
        }
    }
}

/// `[[sinks]] kind = "webhook"`. Network errors, 429 and 5xx are retried
/// with the default `upstreams.reconnect` backoff while the queue holds the
/// batch; other 4xx drop the batch, counted. `Debug` shows the URL as
/// `scheme://host:port/***` and header values redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `http://` or `https://` endpoint; shown as
    /// `scheme://host:port/***` (chat webhooks carry a secret in the path).
    /// Required.
    pub url: String,
    /// Number of envelopes per POST at most. At least 1. Default: `100`.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Duration after which a partial batch is sent. Greater than 0.
    /// Default: `"1s"`.
    #[serde(default = "default_batch_timeout")]
    pub batch_timeout: Dur,
    /// Number of envelopes waiting to be sent; the oldest are dropped when
    /// full, counted. At least `batch_size`. Default: `10000`.
    #[serde(default = "default_webhook_queue")]
    pub queue_capacity: usize,
    /// Size of the messages queued at most, beside `queue_capacity`
    /// (whichever is hit first). At least 1 byte. Default: `"64MiB"`.
    #[serde(default = "default_sink_queue_bytes")]
    pub queue_bytes: Size,
    /// What happens when `queue_capacity` envelopes wait: `drop_oldest`
    /// (counted as `overflow`) or `block` (the upstreams feeding this sink
    /// stop reading until batches go out). Default: `"drop_oldest"`.
    #[serde(default = "default_sink_overflow")]
    pub overflow: Overflow,
    /// Extra request headers, name = value. Values of headers that look
    /// like credentials are shown as `***`. Default: `{}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bearer token, inline (prefer `_env` or `_file`). At most one of the
    /// three spellings. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// Name of the environment variable holding the Bearer token.
    /// Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_env: Option<String>,
    /// Path of a file holding the Bearer token, trimmed, re-read for every
    /// batch. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Names of the upstreams to follow; empty = all. Default: `[]`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Topics to follow; empty = all. Default: `[]`.
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
            overflow,
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
            .field("overflow", overflow)
            .field("headers", &redacted_headers(headers, &Redactor::default()))
            .field("auth_token", auth_token)
            .field("auth_token_env", auth_token_env)
            .field("auth_token_file", auth_token_file)
            .field("upstreams", upstreams)
            .field("topics", topics)
            .finish()
    }
}

// === broker sinks (SPEC §15) ===

/// What a broker sink stores per message: `format` of the nats and redis sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    /// The §5 envelope (`upstream`, `topic`, `seq`, `received_at`, `data`).
    Envelope,
    /// The frame's bytes as the upstream sent them.
    Raw,
}

/// `[[sinks]] kind = "nats"`: every message is a JetStream publish to
/// `subject`, with `Nats-Msg-Id: {upstream}:{run}:{seq}` (a retried
/// publish is stored once) and the `wsgate-*` headers; acks are awaited,
/// failed publishes retried with a backoff while the queue holds the rest.
/// `Debug` shows the URL's userinfo and every secret as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The NATS server, `nats://host:port` (`tls://` for TLS). Userinfo
    /// in it is shown as `***`. Default: `"nats://127.0.0.1:4222"`.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// The JetStream stream; created when missing, bound to the literal
    /// prefix of `subject` followed by `>`. Default: `"WSGATE"`.
    #[serde(default = "default_nats_stream")]
    pub stream: String,
    /// Subject template: `{upstream}` and `{topic}` are replaced by the
    /// message's values, each character outside `[A-Za-z0-9_-]` as `_`
    /// (an empty topic as `_`). Default: `"wsgate.{upstream}.{topic}"`.
    #[serde(default = "default_nats_subject")]
    pub subject: String,
    /// What the body is: `envelope` or `raw` (the frame's bytes; the
    /// headers are the same). Default: `"envelope"`.
    #[serde(default = "default_sink_format")]
    pub format: SinkFormat,
    /// Number of publishes awaiting their ack at most; then the sink queue
    /// fills and its `overflow` applies. At least 1. Default: `1024`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Number of messages queued at most, beside what is in flight.
    /// At least 1. Default: `10000`.
    #[serde(default = "default_webhook_queue")]
    pub queue_capacity: usize,
    /// Size of the messages queued at most, beside `queue_capacity`
    /// (whichever is hit first). At least 1 byte. Default: `"64MiB"`.
    #[serde(default = "default_sink_queue_bytes")]
    pub queue_bytes: Size,
    /// What happens when the queue is full: `drop_oldest`, `drop_newest`,
    /// `conflate` (see `conflate_key`) or `block` (the upstreams feeding
    /// this sink stop reading until it drains), drops counted as
    /// `overflow`. Default: `"drop_oldest"`.
    #[serde(default = "default_sink_overflow")]
    pub overflow: Overflow,
    /// JSON pointer whose value `overflow = "conflate"` keeps the latest
    /// message of; `""` = the topic. Default: `""`.
    #[serde(default)]
    pub conflate_key: String,
    /// Path of a NATS credentials file (JWT + nkey seed), read at start.
    /// Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// Auth token, inline (prefer `_env` or `_file`). At most one of the
    /// three spellings. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Name of the environment variable holding the auth token. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Path of a file holding the auth token, trimmed, read at start and
    /// again at every reconnect. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// User name, with one of the `password` spellings. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password, inline (prefer `_env` or `_file`). Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of the environment variable holding the password. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file holding the password, trimmed, read at start and
    /// again at every reconnect. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Names of the upstreams to follow; empty = all. Default: `[]`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Topics to follow; empty = all. Default: `[]`.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// `[[sinks]] kind = "redis"`: `XADD stream MAXLEN ~ maxlen * upstream ..
/// topic .. seq .. data ..` per message, pipelined; a failed pipeline is
/// sent again after a backoff while the queue holds the rest. `Debug`
/// shows the URL's userinfo and the password as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The Redis server, `redis://[user@]host:port[/db]`. Userinfo in it is
    /// shown as `***`. Default: `"redis://127.0.0.1:6379"`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// Stream key template: `{upstream}` and `{topic}` are replaced by the
    /// message's values (as they are). Default: `"wsgate:{upstream}"`.
    #[serde(default = "default_redis_stream")]
    pub stream: String,
    /// Entries kept per stream, approximately (`XADD MAXLEN ~`). At least 1.
    /// Default: `100000`.
    #[serde(default = "default_maxlen")]
    pub maxlen: u64,
    /// What `data` holds: `envelope` (the envelope's `data` as JSON text)
    /// or `raw` (the frame's bytes). Default: `"envelope"`.
    #[serde(default = "default_sink_format")]
    pub format: SinkFormat,
    /// Number of messages queued at most, beside the pipeline on the wire.
    /// At least 1. Default: `10000`.
    #[serde(default = "default_webhook_queue")]
    pub queue_capacity: usize,
    /// Size of the messages queued at most, beside `queue_capacity`
    /// (whichever is hit first). At least 1 byte. Default: `"64MiB"`.
    #[serde(default = "default_sink_queue_bytes")]
    pub queue_bytes: Size,
    /// What happens when the queue is full: `drop_oldest`, `drop_newest`,
    /// `conflate` (see `conflate_key`) or `block` (the upstreams feeding
    /// this sink stop reading until it drains), drops counted as
    /// `overflow`. Default: `"drop_oldest"`.
    #[serde(default = "default_sink_overflow")]
    pub overflow: Overflow,
    /// JSON pointer whose value `overflow = "conflate"` keeps the latest
    /// message of; `""` = the topic. Default: `""`.
    #[serde(default)]
    pub conflate_key: String,
    /// Password (`AUTH`), inline (prefer `_env` or `_file`). At most one
    /// of the three spellings; wins over a password in `url`. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of the environment variable holding the password. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Path of a file holding the password, trimmed, read at start and
    /// again at every reconnect. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Names of the upstreams to follow; empty = all. Default: `[]`.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Topics to follow; empty = all. Default: `[]`.
    #[serde(default)]
    pub topics: Vec<String>,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_nats_stream() -> String {
    "WSGATE".into()
}
fn default_nats_subject() -> String {
    "wsgate.{upstream}.{topic}".into()
}
const fn default_sink_format() -> SinkFormat {
    SinkFormat::Envelope
}
const fn default_max_in_flight() -> usize {
    1024
}
const fn default_sink_overflow() -> Overflow {
    Overflow::DropOldest
}
fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_redis_stream() -> String {
    "wsgate:{upstream}".into()
}
const fn default_maxlen() -> u64 {
    100_000
}

impl NatsConfig {
    /// Where the auth token comes from.
    pub fn token_source(&self) -> SecretSource<'_> {
        SecretSource { inline: self.token.as_ref(), env: self.token_env.as_deref(), file: self.token_file.as_ref() }
    }

    /// Where the password comes from.
    pub fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            inline: self.password.as_ref(),
            env: self.password_env.as_deref(),
            file: self.password_file.as_ref(),
        }
    }
}

impl RedisConfig {
    /// Where the password comes from.
    pub fn password_source(&self) -> SecretSource<'_> {
        SecretSource {
            inline: self.password.as_ref(),
            env: self.password_env.as_deref(),
            file: self.password_file.as_ref(),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so a new field is a compile error here until it is
        // decided whether it can be shown.
        let NatsConfig {
            url,
            stream,
            subject,
            format,
            max_in_flight,
            queue_capacity,
            queue_bytes,
            overflow,
            conflate_key,
            creds_file,
            token,
            token_env,
            token_file,
            username,
            password,
            password_env,
            password_file,
            upstreams,
            topics,
        } = self;
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(url, &Redactor::default(), None))
            .field("stream", stream)
            .field("subject", subject)
            .field("format", format)
            .field("max_in_flight", max_in_flight)
            .field("queue_capacity", queue_capacity)
            .field("queue_bytes", queue_bytes)
            .field("overflow", overflow)
            .field("conflate_key", conflate_key)
            .field("creds_file", creds_file)
            .field("token", token)
            .field("token_env", token_env)
            .field("token_file", token_file)
            .field("username", username)
            .field("password", password)
            .field("password_env", password_env)
            .field("password_file", password_file)
            .field("upstreams", upstreams)
            .field("topics", topics)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RedisConfig {
            url,
            stream,
            maxlen,
            format,
            queue_capacity,
            queue_bytes,
            overflow,
            conflate_key,
            password,
            password_env,
            password_file,
            upstreams,
            topics,
        } = self;
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(url, &Redactor::default(), None))
            .field("stream", stream)
            .field("maxlen", maxlen)
            .field("format", format)
            .field("queue_capacity", queue_capacity)
            .field("queue_bytes", queue_bytes)
            .field("overflow", overflow)
            .field("conflate_key", conflate_key)
            .field("password", password)
            .field("password_env", password_env)
            .field("password_file", password_file)
            .field("upstreams", upstreams)
            .field("topics", topics)
            .finish()
    }
}
