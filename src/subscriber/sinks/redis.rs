//! The `redis` sink (SPEC §15): every message one entry of a Redis stream.
//!
//! `XADD {stream} MAXLEN ~ {maxlen} * upstream .. topic .. seq .. data ..
//! received_at ..`, up to [`PIPELINE`] commands per round trip. `data` is
//! the envelope's `data` as JSON text (raw: the frame's bytes). A pipeline
//! that fails (no connection, no answer in time) is sent again after a
//! backoff on a new connection; Redis has no de-duplication, so a pipeline
//! that was applied but whose answer was lost is stored twice (at least
//! once). A command Redis refuses (`WRONGTYPE`: the key is not a stream)
//! drops its messages, counted as `error`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult};
use tracing::{info, warn};

use super::broker::{Broker, Control};
use crate::config::{redact_url, scrub, NameTemplate, Redactor, RedisConfig, SinkFormat};
use crate::fanout::Delivery;
use crate::model::DataKind;

/// Commands per pipeline at most (one round trip).
const PIPELINE: usize = 512;
/// Longest wait for a connection, and for the answer to one pipeline.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a failed pipeline means for its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Send it again on a new connection after a backoff.
    Retry,
    /// Redis refused it (a server error answer): drop, counted as `error`.
    Reject,
}

/// The one place that decides between retrying and dropping a pipeline.
fn verdict(e: &RedisError) -> Verdict {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Verdict::Retry;
    }
    match e.kind() {
        // Loading, read-only replica, cluster moves, busy: will pass.
        redis::ErrorKind::Server(_) if e.is_unrecoverable_error() => Verdict::Retry,
        redis::ErrorKind::Server(_) => Verdict::Reject,
        _ => Verdict::Retry,
    }
}

/// The `data` field: the envelope's `data` as JSON text, or the raw bytes.
fn data(d: &Delivery, format: SinkFormat) -> Vec<u8> {
    let m = &d.msg;
    match (format, m.kind) {
        (SinkFormat::Raw, _) | (SinkFormat::Envelope, DataKind::Json) => m.raw.to_vec(),
        (SinkFormat::Envelope, DataKind::Text) => {
            serde_json::to_vec(&String::from_utf8_lossy(&m.raw)).unwrap_or_else(|_| b"\"\"".to_vec())
        }
        (SinkFormat::Envelope, DataKind::Binary) => {
            format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(&m.raw)).into_bytes()
        }
    }
}

/// A client for `info`, with `password` when one is configured (it wins
/// over a password in the URL).
fn client(info: &ConnectionInfo, password: Option<&str>) -> RedisResult<Client> {
    let mut info = info.clone();
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    Client::open(info)
}

// === impl Redis ===

/// The broker side of one `redis` sink.
pub(super) struct Redis {
    /// The sink's config.
    cfg: RedisConfig,
    /// The parsed `stream` template.
    stream: NameTemplate,
    /// The URL's connection settings, without the configured password.
    info: ConnectionInfo,
    /// The client (URL and password resolved at prepare; rebuilt at a
    /// reconnect when the password comes from a file, re-read then).
    client: Client,
    /// The connection, once made; dropped after a failure.
    conn: Option<MultiplexedConnection>,
    /// The URL for log lines, userinfo as `***`.
    shown: String,
    /// Secret parts of the URL and the password, scrubbed from error texts.
    secrets: Vec<String>,
}

impl Redis {
    /// Parses the URL and template and reads the password (a file
    /// included), without connecting.
    pub(super) fn prepare(cfg: &RedisConfig) -> Result<Redis, String> {
        let stream = NameTemplate::parse(&cfg.stream).map_err(|e| format!("stream: {e}"))?;
        let shown = redact_url(&cfg.url, &Redactor::default(), None);
        let mut secrets = Redactor::default().secrets_in(&cfg.url, None);
        let info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("url {shown}: not a Redis URL ({:?})", e.kind()))?;
        let password = cfg.password_source().resolve().map_err(|e| format!("password: {e}"))?;
        let client = client(&info, password.as_ref().map(|p| p.expose()))
            .map_err(|e| format!("url {shown}: {}", scrub(&e.to_string(), &secrets)))?;
        secrets.extend(password.map(|p| p.expose().to_string()));
        Ok(Redis { cfg: cfg.clone(), stream, info, client, conn: None, shown, secrets })
    }

    /// `text` with the URL's secret parts and the password as `***`.
    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// A password file is read again (on the blocking pool) and the client
    /// rebuilt with it, so a rotated secret applies at the next connect.
    async fn reread_password(&mut self) -> Result<(), String> {
        if self.cfg.password_file.is_none() {
            return Ok(());
        }
        let cfg = self.cfg.clone();
        let password = tokio::task::spawn_blocking(move || cfg.password_source().resolve())
            .await
            .map_err(|e| format!("cannot read the password: {e}"))?
            .map_err(|e| format!("password: {e}"))?;
        if let Some(p) = password {
            if !self.secrets.iter().any(|s| s == p.expose()) {
                self.secrets.push(p.expose().to_string());
            }
            self.client = client(&self.info, Some(p.expose())).map_err(|e| self.scrub(&e.to_string()))?;
        }
        Ok(())
    }

    /// The connection, made on first use and after a failure; the error
    /// text is scrubbed.
    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        self.reread_password().await?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.scrub(&e.to_string()))?;
        info!(sink = "redis", url = %self.shown, "Redis connected.");
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// One pipeline of `XADD`s for `chunk`.
    fn pipeline(&self, chunk: &[Arc<Delivery>]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for d in chunk {
            let m = &d.msg;
            pipe.cmd("XADD")
                .arg(self.stream.render(&m.upstream, &m.topic, false))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.cfg.maxlen)
                .arg("*")
                .arg("upstream")
                .arg(&*m.upstream)
                .arg("topic")
                .arg(&*m.topic)
                .arg("seq")
                .arg(d.seq)
                .arg("data")
                .arg(data(d, self.cfg.format))
                .arg("received_at")
                .arg(humantime::format_rfc3339_nanos(m.received_at).to_string())
                .ignore();
        }
        pipe
    }

    /// Sends one pipeline; `Err` with the error text when it must be sent again.
    async fn send(&mut self, chunk: &[Arc<Delivery>], ctl: &Control) -> Result<(), String> {
        // No connection: always sent again later.
        let mut conn = self.connection().await?;
        let result = self.pipeline(chunk).query_async::<()>(&mut conn).await;
        let Err(e) = result else {
            ctl.delivered(chunk.iter().map(|d| d.msg.received).collect());
            return Ok(());
        };
        let text = self.scrub(&e.to_string());
        match verdict(&e) {
            Verdict::Retry => {
                self.conn = None;
                Err(text)
            }
            Verdict::Reject => {
                ctl.rejected(chunk.len() as u64);
                warn!(
                    sink = "redis",
                    url = %self.shown,
                    error = %text,
                    dropped = chunk.len(),
                    "Redis refused a pipeline; its messages are dropped."
                );
                Ok(())
            }
        }
    }
}

impl Broker for Redis {
    const KIND: &'static str = "redis";

    async fn deliver(&mut self, batch: Vec<Arc<Delivery>>, ctl: &Control) {
        for chunk in batch.chunks(PIPELINE) {
            loop {
                match self.send(chunk, ctl).await {
                    Ok(()) => {
                        ctl.succeeded::<Self>(&self.shown);
                        break;
                    }
                    Err(e) => ctl.pause::<Self>(&self.shown, &e).await,
                }
            }
        }
    }

    async fn close(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::fanout::Incoming;

    fn delivery(kind: DataKind, raw: &'static [u8]) -> Arc<Delivery> {
        Delivery::new(
            Incoming {
                upstream: "a".into(),
                topic: "t".into(),
                raw: bytes::Bytes::from_static(raw),
                raw_is_text: kind != DataKind::Binary,
                kind,
                received_at: SystemTime::UNIX_EPOCH,
                received: Instant::now(),
                conn: 1,
            },
            1,
        )
    }

    /// `data` is the envelope's `data` as JSON text; raw is the bytes.
    #[test]
    fn data_field() {
        let json = delivery(DataKind::Json, br#"{"p":1}"#);
        assert_eq!(data(&json, SinkFormat::Envelope), br#"{"p":1}"#);
        let text = delivery(DataKind::Text, b"hi \"you\"");
        assert_eq!(data(&text, SinkFormat::Envelope), br#""hi \"you\"""#);
        assert_eq!(data(&text, SinkFormat::Raw), b"hi \"you\"");
        let bin = delivery(DataKind::Binary, &[0, 255]);
        assert_eq!(data(&bin, SinkFormat::Envelope), b"\"AP8=\"");
        assert_eq!(data(&bin, SinkFormat::Raw), [0, 255]);
    }
}
