//! One `[[sinks]]` entry (SPEC §6): a subscriber that is not a WebSocket
//! session. `kind` picks the variant; each drains its own bounded queue.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::redact::{redact_webhook_url, redacted_headers, Redactor};
use crate::config::secret::{Secret, SecretSource};
use crate::config::units::{Dur, Size};

/// One `[[sinks]]` entry, by `kind`: `stdout`, `file` or `webhook`.
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
        /// Size of the messages queued at most; beyond it the oldest are
        /// dropped, counted. At least 1 byte. Default: `"64MiB"`.
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
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
        /// Size of the messages queued at most; beyond it the oldest are
        /// dropped, counted. At least 1 byte. Default: `"64MiB"`.
        #[serde(default = "default_sink_queue_bytes")]
        queue_bytes: Size,
    },
    /// `kind = "webhook"`: batches of envelopes POSTed as a JSON array.
    Webhook(WebhookConfig),
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
