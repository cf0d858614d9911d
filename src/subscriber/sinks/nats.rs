//! The `nats` sink (SPEC §15): every message a JetStream publish.
//!
//! - Subject: the `subject` template with the message's upstream and topic,
//!   each sanitised to `[A-Za-z0-9_-]` (others `_`, empty `_`).
//! - Stream: `stream`, created when missing, bound to the template's literal
//!   prefix + `>` (`wsgate.>`).
//! - `Nats-Msg-Id: {upstream}:{run}:{seq}`: JetStream keeps one copy of a
//!   publish sent twice within its duplicate window (2 min by default), so a
//!   publish retried after a lost ack is stored once.
//! - Headers `wsgate-upstream`, `wsgate-topic`, `wsgate-seq`,
//!   `wsgate-received-at`; body the envelope, or the raw frame.
//! - At most `max_in_flight` publishes await their ack; what failed (no
//!   connection, no ack in time) is published again, same id, after a
//!   backoff; what the server refuses (an error answer, a message over its
//!   `max_payload`) is dropped, counted as `error`.
//!
//! The client connects in the background and reconnects by itself; the
//! sink never fails to start because NATS is down.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{Context as JetStream, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{Auth, AuthError, ConnectOptions, Event};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tracing::{info, warn};

use super::broker::{header_text, Broker, Control};
use crate::config::{redact_url, scrub, NameTemplate, NatsConfig, Redactor, SinkFormat};
use crate::fanout::Delivery;
use crate::model::RunId;

/// Longest wait for a publish to be handed to the connection and for its
/// ack, and for a JetStream API answer (stream lookup and creation).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server: two unanswered pings mark a dead
/// link (a cut path that sends no RST) and start a reconnect.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for one connect attempt (TCP, TLS, CONNECT).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Room kept for the headers when a body is held against the server's
/// `max_payload` (which counts headers and body together).
const HEADROOM: usize = 512;

/// What a failed publish means for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Publish it again (same id) after a backoff.
    Retry,
    /// The stream is gone: look it up (create it) again, then retry.
    Restream,
    /// Refused for good: drop it, counted as `error`.
    Reject,
}

/// The one place that decides between retrying and dropping a publish
/// whose ack came back as an error (a publish that could not even be handed
/// to the connection is always retried).
fn verdict(kind: PublishErrorKind) -> Verdict {
    match kind {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => Verdict::Retry,
        PublishErrorKind::StreamNotFound => Verdict::Restream,
        // An error answer of the server (or one we cannot read): sending
        // the same message again gets the same answer.
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence | PublishErrorKind::Other => {
            Verdict::Reject
        }
    }
}

/// One message as it is published.
fn publish(d: &Delivery, run: &RunId, format: SinkFormat) -> PublishMessage {
    let body: Bytes = match format {
        SinkFormat::Envelope => d.envelope().clone().into_bytes(),
        SinkFormat::Raw => d.msg.raw.clone(),
    };
    let upstream = header_text(&d.msg.upstream);
    PublishMessage::build()
        .payload(body)
        .message_id(format!("{upstream}:{run}:{}", d.seq))
        .header("wsgate-upstream", upstream)
        .header("wsgate-topic", header_text(&d.msg.topic))
        .header("wsgate-seq", d.seq.to_string())
        .header("wsgate-kind", d.msg.kind.as_str())
        .header("wsgate-received-at", humantime::format_rfc3339_nanos(d.msg.received_at).to_string())
}

// === impl Nats ===

/// The broker side of one `nats` sink.
pub(super) struct Nats {
    /// The sink's config.
    cfg: NatsConfig,
    /// The parsed `subject`.
    subject: NameTemplate,
    /// What a stream created here binds (`wsgate.>`).
    binds: String,
    /// This process's run, for `Nats-Msg-Id`.
    run: RunId,
    /// The connect options (credentials resolved at prepare), until the
    /// first connect takes them.
    options: Option<ConnectOptions>,
    /// The JetStream context, once connected.
    js: Option<(async_nats::Client, JetStream)>,
    /// The stream was found or created (again after `StreamNotFound`).
    stream_ready: bool,
    /// The URL for log lines, userinfo as `***`.
    shown: String,
    /// Secret parts of the URL, scrubbed from error texts.
    secrets: Vec<String>,
}

impl Nats {
    /// Parses the template and reads the credentials (files included),
    /// without connecting. Fails naming what is wrong, never a secret.
    pub(super) fn prepare(cfg: &NatsConfig, run: RunId) -> Result<Nats, String> {
        let subject = NameTemplate::parse(&cfg.subject).map_err(|e| format!("subject: {e}"))?;
        let binds = subject.stream_subjects().ok_or("subject: must start with a literal token")?;
        let shown = redact_url(&cfg.url, &Redactor::default(), None);
        let options = connect_options(cfg, &shown)?;
        Ok(Nats {
            cfg: cfg.clone(),
            subject,
            binds,
            run,
            options: Some(options),
            js: None,
            stream_ready: false,
            secrets: Redactor::default().secrets_in(&cfg.url, None),
            shown,
        })
    }

    /// `text` with the URL's secret parts as `***`.
    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }

    /// The client, connecting on first use (in the background: this
    /// returns at once even while NATS is down).
    async fn context(&mut self) -> Result<JetStream, String> {
        if let Some((_, js)) = &self.js {
            return Ok(js.clone());
        }
        // Taken by an earlier attempt that failed: built again.
        let options = match self.options.take() {
            Some(options) => options,
            None => connect_options(&self.cfg, &self.shown)?,
        };
        let client = options.connect(self.cfg.url.as_str()).await.map_err(|e| self.scrub(&e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(self.cfg.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        self.js = Some((client, js.clone()));
        Ok(js)
    }

    /// Finds the stream, or creates it bound to [`Nats::binds`].
    async fn ensure_stream(&mut self, js: &JetStream) -> Result<(), String> {
        if self.stream_ready {
            return Ok(());
        }
        let config =
            stream::Config { name: self.cfg.stream.clone(), subjects: vec![self.binds.clone()], ..Default::default() };
        js.get_or_create_stream(config).await.map_err(|e| self.scrub(&format!("stream {}: {e}", self.cfg.stream)))?;
        self.stream_ready = true;
        info!(sink = "nats", stream = %self.cfg.stream, subjects = %self.binds, "JetStream stream ready.");
        Ok(())
    }

    /// The largest message the server takes (0 until connected: unknown).
    fn max_payload(&self) -> usize {
        self.js.as_ref().map_or(0, |(client, _)| client.server_info().max_payload)
    }

    /// One pass over `pending`: publishes each, at most `max_in_flight`
    /// awaiting their ack. Returns what must be sent again, oldest first,
    /// and the first error seen.
    async fn attempt(
        &mut self,
        js: &JetStream,
        pending: VecDeque<Arc<Delivery>>,
        ctl: &Control,
    ) -> (VecDeque<Arc<Delivery>>, Option<String>) {
        let mut pass = Pass::default();
        let mut acks = FuturesOrdered::new();
        let max_payload = self.max_payload();
        for d in pending {
            let body = match self.cfg.format {
                SinkFormat::Envelope => d.envelope().len(),
                SinkFormat::Raw => d.msg.raw.len(),
            };
            // Headers take a few hundred bytes of the limit too.
            if max_payload > 0 && body + HEADROOM > max_payload {
                pass.rejected += 1;
                warn_rejected(&format!("larger than the server's max_payload ({max_payload} bytes)"), &d);
                continue;
            }
            if acks.len() >= self.cfg.max_in_flight {
                if let Some((d, result)) = acks.next().await {
                    self.settle(&mut pass, d, result);
                }
            }
            let subject = self.subject.render(&d.msg.upstream, &d.msg.topic, true);
            match js.send_publish(subject, publish(&d, &self.run, self.cfg.format)).await {
                Ok(ack) => acks.push_back(async move { (d, ack.await.map(drop)) }),
                // Not handed to the connection (no link, client buffer
                // full): never a refusal of the server, so always retried.
                Err(e) => {
                    pass.error.get_or_insert_with(|| self.scrub(&e.to_string()));
                    pass.again.push_back(d);
                }
            }
        }
        while let Some((d, result)) = acks.next().await {
            self.settle(&mut pass, d, result);
        }
        ctl.delivered(pass.stored);
        ctl.rejected(pass.rejected);
        // Send errors come before earlier acks: put the retries back in order.
        pass.again.make_contiguous().sort_by_key(|d| (d.msg.received, d.seq));
        (pass.again, pass.error)
    }

    /// Books the outcome of one publish into `pass`.
    fn settle(&mut self, pass: &mut Pass, d: Arc<Delivery>, result: Result<(), PublishError>) {
        let Err(e) = result else {
            pass.stored.push(d.msg.received);
            return;
        };
        let text = self.scrub(&e.to_string());
        match verdict(e.kind()) {
            Verdict::Retry => pass.again.push_back(d),
            Verdict::Restream => {
                self.stream_ready = false;
                pass.again.push_back(d);
            }
            Verdict::Reject => {
                pass.rejected += 1;
                warn_rejected(&text, &d);
            }
        }
        pass.error.get_or_insert(text);
    }
}

/// What one pass over the pending messages came to.
#[derive(Default)]
struct Pass {
    /// Receive instants of the messages stored (acked).
    stored: Vec<Instant>,
    /// Messages refused for good.
    rejected: u64,
    /// Messages to publish again.
    again: VecDeque<Arc<Delivery>>,
    /// The first error, scrubbed.
    error: Option<String>,
}

/// The client's options: credentials (read now, and token and password
/// again at every reconnect), timeouts, connection events logged.
fn connect_options(cfg: &NatsConfig, shown: &str) -> Result<ConnectOptions, String> {
    // Token and password are read here (a start or reload with one
    // missing fails, naming it) and again at every (re)connect, off
    // the actor threads, so a rotated secret file applies without a
    // restart.
    resolve_auth(cfg)?;
    let mut options = if cfg.token_source().is_set() || cfg.password_source().is_set() {
        let shared = Arc::new(cfg.clone());
        ConnectOptions::with_auth_callback(move |_nonce| {
            let cfg = Arc::clone(&shared);
            async move {
                tokio::task::spawn_blocking(move || resolve_auth(&cfg))
                    .await
                    .map_err(|e| AuthError::new(format!("cannot read the credentials: {e}")))?
                    .map_err(AuthError::new)
            }
        })
    } else {
        ConnectOptions::new()
    };
    options = options
        .name("wsgate")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
        .request_timeout(Some(ACK_TIMEOUT));
    if let Some(path) = &cfg.creds_file {
        let creds = std::fs::read_to_string(path)
            .map_err(|e| format!("creds_file: cannot read {}: {}", path.display(), e.kind()))?;
        options = options
            .credentials(&creds)
            .map_err(|e| format!("creds_file: {} is not a NATS credentials file ({})", path.display(), e.kind()))?;
    }
    let events_url = shown.to_string();
    options = options.event_callback(move |event| {
        let url = events_url.clone();
        async move {
            match event {
                Event::Connected => info!(sink = "nats", url = %url, "NATS connected."),
                Event::Disconnected => warn!(sink = "nats", url = %url, "NATS connection lost; reconnecting."),
                other => tracing::debug!(sink = "nats", url = %url, event = %other, "NATS event."),
            }
        }
    });
    Ok(options)
}

/// The token or user + password to connect with, read now from wherever
/// they are configured (inline, environment, file). The error names the
/// key, never the value.
fn resolve_auth(cfg: &NatsConfig) -> Result<Auth, String> {
    let mut auth = Auth::new();
    auth.token = cfg.token_source().resolve().map_err(|e| format!("token: {e}"))?.map(|t| t.expose().to_string());
    if let Some(user) = &cfg.username {
        auth.username = Some(user.clone());
        auth.password =
            cfg.password_source().resolve().map_err(|e| format!("password: {e}"))?.map(|p| p.expose().to_string());
    }
    Ok(auth)
}

/// Logs one message the server will not take (at most one line per
/// message refused, and those are rare: an error answer of the server).
fn warn_rejected(error: &str, d: &Delivery) {
    warn!(
        sink = "nats",
        upstream = %d.msg.upstream,
        seq = d.seq,
        error = %error,
        "NATS refused a message; it is dropped."
    );
}

impl Broker for Nats {
    const KIND: &'static str = "nats";

    async fn deliver(&mut self, batch: Vec<Arc<Delivery>>, ctl: &Control) {
        let mut pending: VecDeque<Arc<Delivery>> = batch.into();
        while !pending.is_empty() {
            let ready = match self.context().await {
                Ok(js) => self.ensure_stream(&js).await.map(|()| js),
                Err(e) => Err(e),
            };
            let js = match ready {
                Ok(js) => js,
                Err(e) => {
                    ctl.pause::<Self>(&self.shown, &e).await;
                    continue;
                }
            };
            let (again, error) = self.attempt(&js, pending, ctl).await;
            pending = again;
            match error {
                Some(e) if !pending.is_empty() => ctl.pause::<Self>(&self.shown, &e).await,
                _ => ctl.succeeded::<Self>(&self.shown),
            }
        }
    }

    async fn close(&mut self) {
        if let Some((client, _)) = self.js.take() {
            // Publishes were acked: nothing is left in the client's buffer
            // that matters; flush what is (best effort, bounded).
            let _ = actix_rt::time::timeout(ACK_TIMEOUT, client.flush()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publish failures: lost links retry, a missing stream is looked up
    /// again, server refusals drop.
    #[test]
    fn verdicts() {
        use PublishErrorKind::*;
        let table = [
            (TimedOut, Verdict::Retry),
            (BrokenPipe, Verdict::Retry),
            (MaxAckPending, Verdict::Retry),
            (StreamNotFound, Verdict::Restream),
            (Other, Verdict::Reject),
            (WrongLastSequence, Verdict::Reject),
        ];
        for (kind, want) in table {
            assert_eq!(verdict(kind), want, "{kind:?}");
        }
    }

    /// The credentials are read at every call: a rotated file applies at
    /// the next connect; a missing one is an error naming the key only.
    #[test]
    fn credentials_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "first\n").unwrap();
        let mut cfg: NatsConfig = match toml::from_str("kind = \"nats\"").unwrap() {
            crate::config::SinkConfig::Nats(n) => n,
            other => panic!("{other:?}"),
        };
        cfg.username = Some("u".into());
        cfg.password_file = Some(file.clone());
        assert_eq!(resolve_auth(&cfg).unwrap().password.as_deref(), Some("first"));
        std::fs::write(&file, "second").unwrap();
        let auth = resolve_auth(&cfg).unwrap();
        assert_eq!((auth.username.as_deref(), auth.password.as_deref()), (Some("u"), Some("second")));
        std::fs::remove_file(&file).unwrap();
        let Err(err) = resolve_auth(&cfg) else { panic!("a missing file is an error") };
        assert!(err.starts_with("password: ") && !err.contains("second"), "{err}");
        assert!(Nats::prepare(&cfg, RunId::random()).is_err(), "a start with the file missing fails");
    }
}
