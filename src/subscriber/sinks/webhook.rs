//! The `webhook` sink: envelopes POSTed in batches as a JSON array.
//!
//! A batch goes out when `batch_size` messages wait, or when the oldest
//! waiting message was received `batch_timeout` ago, or at shutdown. One
//! batch is on the wire at a time. Network errors, 429 and 5xx keep the
//! batch and retry it, unchanged, with the backoff of the upstream
//! `reconnect` defaults, forever (a `Retry-After` is honoured as a lower
//! bound); any other answer outside 2xx drops it, counted as `error`.
//! Meanwhile new messages keep coming: the batch plus the waiting messages
//! never exceed `queue_capacity`, the oldest waiting ones make room
//! (counted as `overflow`).
//!
//! Transport: awc over our own [`Dialer`] (DNS, TCP keepalive and user
//! timeout, rustls for `https://`), the same trick as the upstream connect:
//! awc is given `http://host:port/path` plus the real `Host` header, and the
//! dialer does TLS underneath. Redirects are not followed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use awc::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use awc::http::Uri;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use tracing::{info, warn};

use super::retry::Gate;
use super::{Abandon, Flush, Throttle, Waiters};
use crate::config::{
    redact_webhook_url, scrub, Overflow, ReconnectConfig, Redactor, Secret, SecretError, TlsConfig, WebhookConfig,
};
use crate::fanout::{Closed, Delivery, Item, Next, SubQueue, Subscription};
use crate::telemetry::Left;
use crate::transport::retry_after::parse_retry_after;
use crate::transport::{client_config, Dialer, ReconnectPolicy};

/// Longest wait for one POST, from dialing to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for DNS, TCP and TLS of a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose sent data stays unacknowledged this long is dropped by the kernel.
const USER_TIMEOUT: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How much of an answer's body is read (so the connection can be reused) and kept for the log.
const MAX_ANSWER: usize = 64 * 1024;
/// How much of a rejecting answer's body goes into the warning.
const ANSWER_IN_LOG: usize = 200;

// === impl Endpoint ===

/// Where and how batches are sent, resolved once at start.
pub(super) struct Endpoint {
    /// The URL awc is given: always `http://host:port/path?query`; TLS, if
    /// any, is done underneath by `dialer`.
    url: String,
    /// The `Host` header of the configured URL (userinfo removed).
    host: HeaderValue,
    /// `Authorization: Basic` from userinfo in the URL; a configured Bearer token wins over it.
    basic: Option<HeaderValue>,
    /// The configured extra headers, checked once.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Our transport: DNS, TCP with keepalive and user timeout, TLS for `https://`.
    dialer: Dialer,
    /// The URL for log lines: `scheme://host:port/***` (SPEC §11).
    shown: String,
    /// The secret parts of the URL (userinfo, path, query), scrubbed from
    /// error texts and answers that might echo them.
    secrets: Vec<String>,
}

impl Endpoint {
    /// Parses the URL and headers and prepares the transport.
    pub(super) fn new(cfg: &WebhookConfig) -> Result<Endpoint, String> {
        let bad = || format!("invalid url {:?} (must be http:// or https://)", redact_webhook_url(&cfg.url));
        let uri: Uri = cfg.url.parse().map_err(|_| bad())?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| p.starts_with('/')).unwrap_or("/");
        let host_header = HeaderValue::try_from(hostport).map_err(|_| bad())?;
        let basic = match userinfo {
            Some(u) => {
                let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(u));
                Some(HeaderValue::try_from(value).map_err(|_| bad())?)
            }
            None => None,
        };
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for (name, value) in &cfg.headers {
            let n =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("headers: invalid header name {name:?}"))?;
            // The value may be a credential: never echo it.
            let v = HeaderValue::try_from(value.as_str()).map_err(|_| format!("headers: invalid value for {name}"))?;
            headers.push((n, v));
        }
        let tls = if secure { Some(client_config(&TlsConfig::default()).map_err(|e| e.to_string())?) } else { None };
        let dialer = Dialer::new(host, port, tls, USER_TIMEOUT).map_err(|e| e.to_string())?;
        // Paths and queries of webhook URLs often carry a secret (chat
        // webhooks do): log lines name the server only.
        let shown = redact_webhook_url(&cfg.url);
        let mut secrets = Redactor::default().secrets_in(&cfg.url, None);
        for part in [Some(path), Some(uri.path()), uri.query()].into_iter().flatten() {
            if part.len() > 1 {
                secrets.push(part.to_string());
            }
        }
        Ok(Endpoint {
            url: format!("http://{host}:{port}{path}"),
            host: host_header,
            basic,
            headers,
            dialer,
            shown,
            secrets,
        })
    }

    /// `text` with every secret part of the URL replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

// === answers ===

/// What one POST came back with.
#[derive(Debug)]
enum Answer {
    /// The server answered with this status.
    Status {
        /// The HTTP status code.
        status: u16,
        /// `Retry-After`, as a delay from now.
        retry_after: Option<Duration>,
        /// The start of the body, for the log of a rejection.
        detail: String,
    },
    /// No answer: DNS, TCP, TLS, timeout, a broken response, an unreadable token.
    Failed(String),
}

/// What happens to a batch after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Taken: counted as written.
    Delivered,
    /// Kept and sent again after a backoff delay.
    Retry,
    /// Refused for good: dropped, counted as `error`.
    Reject,
}

/// The one place that decides between retrying and dropping (SPEC §10a):
/// network errors, 429 and 5xx are retried; 2xx is delivered; anything
/// else (other 4xx, and the 1xx/3xx a webhook should never send) drops.
fn verdict(answer: &Answer) -> Verdict {
    match answer {
        Answer::Failed(_) => Verdict::Retry,
        Answer::Status { status, .. } => match status {
            200..=299 => Verdict::Delivered,
            429 | 500..=599 => Verdict::Retry,
            _ => Verdict::Reject,
        },
    }
}

/// The envelopes as one JSON array, without re-serializing them.
fn json_array(batch: &[Arc<Delivery>]) -> Bytes {
    let size = batch.iter().map(|d| d.envelope().len() + 1).sum::<usize>() + 2;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(b'[');
    for (i, d) in batch.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(d.envelope().as_bytes());
    }
    out.put_u8(b']');
    out.freeze()
}

/// Sends one request and reads the answer.
async fn post(req: awc::ClientRequest, body: Bytes) -> Answer {
    let mut resp = match req.send_body(body).await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(e.to_string()),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
    // Reading the body lets awc reuse the connection; its start goes into a warning.
    let body = resp.body().limit(MAX_ANSWER).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).chars().take(ANSWER_IN_LOG).collect::<String>().trim().to_string();
    Answer::Status { status, retry_after, detail }
}

// === impl Webhook ===

/// The batch being sent or waiting to be sent again.
struct Batch {
    /// Messages in it, for the counters.
    len: usize,
    /// The JSON array, built once and re-sent unchanged by every retry.
    body: Bytes,
    /// Receipt of each of its messages, for the fan-out latency (one
    /// observation per delivered message).
    received: Vec<Instant>,
    /// A request carrying it is on the wire.
    in_flight: bool,
    /// The backoff timer before the next attempt, while waiting.
    retry: Option<SpawnHandle>,
    /// Attempts so far, for the log.
    attempts: u32,
}

/// The actor of one `webhook` sink, on the current arbiter (awc is `!Send`).
pub(super) struct Webhook {
    /// The sink's config: batch size and timeout, capacity, token source.
    cfg: WebhookConfig,
    /// Where batches go.
    endpoint: Endpoint,
    /// The HTTP client; it keeps the connection alive between batches.
    client: awc::Client,
    /// Takes the error our dialer recorded (awc flattens it to "unresolved").
    transport_error: Box<dyn Fn() -> Option<String>>,
    /// What the hub queued for us; drained at once into `pending`.
    queue: Arc<SubQueue>,
    /// The hub registration; dropped (unsubscribed) when the sink stops.
    sub: Option<Subscription>,
    /// Messages waiting for a batch, oldest first.
    pending: VecDeque<Arc<Delivery>>,
    /// The batch on the wire or waiting for a retry; one at a time.
    batch: Option<Batch>,
    /// Delays between retries (the upstream `reconnect` defaults).
    backoff: ReconnectPolicy,
    /// Fires when the oldest waiting message reaches `batch_timeout`.
    timer: Option<SpawnHandle>,
    /// Shutdown began: partial batches go out at once, without waiting.
    hurry: bool,
    /// The queue is closed and drained: nothing more will come.
    drained: bool,
    /// The disconnect reason the queue was closed with.
    closed_as: Left,
    /// Shutdown callers waiting for the last batch.
    waiters: Waiters,
    /// Why the sink stopped, for `wsgate_subscriber_disconnects_total`.
    left: Option<Left>,
    /// True while batches fail, to log once when they go through again.
    failing: bool,
    /// Bounds the warnings about retries.
    retry_warnings: Throttle,
    /// Bounds the warnings about rejected batches.
    reject_warnings: Throttle,
    /// Bounds the warnings about overflow drops.
    overflow_warnings: Throttle,
    /// `overflow = "block"`: pauses the queue stream while
    /// `queue_capacity` envelopes wait here, so the queue fills and holds
    /// the upstreams back instead of anything being dropped.
    gate: Arc<Gate>,
}

impl Webhook {
    /// A sink posting to `endpoint` what `queue` receives through `sub`.
    /// Builds the awc client, so it runs on the arbiter the actor will run on.
    pub(super) fn new(cfg: WebhookConfig, endpoint: Endpoint, queue: Arc<SubQueue>, sub: Subscription) -> Self {
        let connector = awc::Connector::new().connector(endpoint.dialer.clone()).timeout(CONNECT_TIMEOUT);
        let client = awc::Client::builder().connector(connector).timeout(REQUEST_TIMEOUT).disable_redirects().finish();
        let state = endpoint.dialer.state();
        let transport_error = Box::new(move || state.borrow_mut().failure.take().map(|e| e.to_string()));
        Webhook {
            cfg,
            endpoint,
            client,
            transport_error,
            queue,
            sub: Some(sub),
            pending: VecDeque::new(),
            batch: None,
            backoff: ReconnectPolicy::new(&ReconnectConfig::default()),
            timer: None,
            hurry: false,
            drained: false,
            closed_as: Left::Shutdown,
            waiters: Waiters::default(),
            left: None,
            failing: false,
            retry_warnings: Throttle::default(),
            reject_warnings: Throttle::default(),
            overflow_warnings: Throttle::default(),
            gate: Arc::default(),
        }
    }

    /// Keeps the batch plus the waiting messages within `queue_capacity`,
    /// dropping the oldest waiting ones.
    fn bound(&mut self) {
        let held = self.batch.as_ref().map_or(0, |b| b.len);
        if self.cfg.overflow == Overflow::Block {
            // Take no more while full; the queue then blocks the upstreams.
            if self.pending.len() + held >= self.cfg.queue_capacity {
                self.gate.pause();
            } else {
                self.gate.resume();
            }
            return;
        }
        let room = self.cfg.queue_capacity.saturating_sub(held);
        let excess = self.pending.len().saturating_sub(room);
        if excess == 0 {
            return;
        }
        self.pending.drain(..excess);
        self.queue.metrics().dropped_overflow(excess as u64);
        if let Some(suppressed) = self.overflow_warnings.allow() {
            warn!(
                sink = "webhook",
                url = %self.endpoint.shown,
                dropped = excess,
                suppressed,
                "Webhook queue is full; the oldest messages are dropped."
            );
        }
    }

    /// Starts the next batch when one is due, arms the batch timer when
    /// not, and finishes when everything is sent after the queue closed.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.bound();
        if self.batch.is_some() || self.left.is_some() {
            return;
        }
        let Some(oldest) = self.pending.front() else {
            self.cancel_timer(ctx);
            if self.drained {
                self.finish(ctx);
            }
            return;
        };
        let now = Instant::now();
        let due = oldest.msg.received.checked_add(self.cfg.batch_timeout.get());
        if self.hurry || self.pending.len() >= self.cfg.batch_size || due.is_some_and(|d| d <= now) {
            self.cancel_timer(ctx);
            self.take_batch();
            self.send(ctx);
        } else if let (None, Some(due)) = (self.timer, due) {
            self.timer = Some(ctx.run_later(due - now, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
        }
    }

    fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
    }

    fn take_batch(&mut self) {
        let n = self.cfg.batch_size.max(1).min(self.pending.len());
        let msgs: Vec<Arc<Delivery>> = self.pending.drain(..n).collect();
        let received = msgs.iter().map(|d| d.msg.received).collect();
        self.batch =
            Some(Batch { len: n, body: json_array(&msgs), received, in_flight: false, retry: None, attempts: 0 });
    }

    /// Posts the current batch (first attempt or retry). The token is read
    /// for every batch, so a rotated token file applies at once; a file is
    /// read on tokio's blocking pool, never on this actor's thread.
    fn send(&mut self, ctx: &mut Context<Self>) {
        let Some(batch) = self.batch.as_mut() else { return };
        batch.retry = None;
        batch.in_flight = true;
        batch.attempts += 1;
        if self.cfg.auth_token_file.is_none() {
            let token = self.cfg.token_source().resolve();
            return self.post_batch(token, ctx);
        }
        let cfg = self.cfg.clone();
        let read = async move {
            tokio::task::spawn_blocking(move || cfg.token_source().resolve())
                .await
                .unwrap_or_else(|e| Err(SecretError::Empty(format!("a failed read ({e})"))))
        };
        ctx.spawn(read.into_actor(self).map(|token, act, ctx| act.post_batch(token, ctx)));
    }

    /// The request of [`Webhook::send`], once the token is known.
    fn post_batch(&mut self, token: Result<Option<Secret>, SecretError>, ctx: &mut Context<Self>) {
        let Some(batch) = self.batch.as_ref() else { return };
        let body = batch.body.clone();
        // Forget a transport error of an earlier attempt.
        let _ = (self.transport_error)();
        let token = match token {
            Ok(t) => t,
            Err(e) => return self.answered(Answer::Failed(format!("cannot read the auth token: {e}")), ctx),
        };
        let mut req = self
            .client
            .post(self.endpoint.url.as_str())
            .insert_header((HOST, self.endpoint.host.clone()))
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        for (name, value) in &self.endpoint.headers {
            req = req.insert_header((name.clone(), value.clone()));
        }
        match (&token, &self.endpoint.basic) {
            (Some(t), _) => req = req.bearer_auth(t.expose()),
            (None, Some(basic)) => req = req.insert_header((AUTHORIZATION, basic.clone())),
            (None, None) => {}
        }
        let request = async move {
            match actix_rt::time::timeout(REQUEST_TIMEOUT, post(req, body)).await {
                Ok(answer) => answer,
                Err(_) => Answer::Failed(format!("no answer within {REQUEST_TIMEOUT:?}")),
            }
        };
        ctx.spawn(request.into_actor(self).map(|answer, act, ctx| act.answered(answer, ctx)));
    }

    /// Counts the outcome of an attempt and moves on: next batch, or retry.
    fn answered(&mut self, answer: Answer, ctx: &mut Context<Self>) {
        let Some(batch) = self.batch.as_mut() else { return };
        batch.in_flight = false;
        let (n, attempts) = (batch.len, batch.attempts);
        match verdict(&answer) {
            Verdict::Delivered => {
                let received = self.batch.take().map(|b| b.received).unwrap_or_default();
                self.backoff.reset();
                self.queue.metrics().delivered(received);
                if std::mem::take(&mut self.failing) {
                    info!(sink = "webhook", url = %self.endpoint.shown, attempts, "Webhook takes batches again.");
                }
            }
            Verdict::Reject => {
                self.batch = None;
                self.backoff.reset();
                self.queue.metrics().dropped_error(n as u64);
                if let (Some(suppressed), Answer::Status { status, detail, .. }) =
                    (self.reject_warnings.allow(), &answer)
                {
                    warn!(
                        sink = "webhook",
                        url = %self.endpoint.shown,
                        status,
                        answer = %self.endpoint.scrub(detail),
                        dropped = n,
                        suppressed,
                        "Webhook refused a batch; its messages are dropped."
                    );
                }
            }
            Verdict::Retry => {
                let (error, retry_after) = match answer {
                    Answer::Status { status, retry_after, .. } => (format!("HTTP {status}"), retry_after),
                    Answer::Failed(e) => (self.endpoint.scrub(&(self.transport_error)().unwrap_or(e)), None),
                };
                let delay = self.retry_delay(retry_after);
                self.failing = true;
                if let Some(suppressed) = self.retry_warnings.allow() {
                    warn!(
                        sink = "webhook",
                        url = %self.endpoint.shown,
                        error = %error,
                        attempts,
                        retry_in = ?delay,
                        suppressed,
                        "Webhook did not take a batch; it is kept and sent again."
                    );
                }
                let handle = ctx.run_later(delay, |act, ctx| act.send(ctx));
                if let Some(batch) = self.batch.as_mut() {
                    batch.retry = Some(handle);
                }
                return;
            }
        }
        self.pump(ctx);
    }

    /// The next backoff delay; the policy never gives up while a batch is held.
    fn retry_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = match self.backoff.next_delay() {
            Some(d) => d,
            None => {
                self.backoff.reset();
                self.backoff.next_delay().unwrap_or(ReconnectConfig::default().initial.get())
            }
        };
        retry_after.map_or(delay, |ra| delay.max(ra))
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.left.is_none() {
            self.left = Some(self.closed_as);
        }
        self.sub = None;
        self.waiters.release();
        ctx.stop();
    }
}

impl Actor for Webhook {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.gate.wrap(self.queue.stream()));
        info!(sink = "webhook", url = %self.endpoint.shown, batch_size = self.cfg.batch_size, "Webhook sink ready.");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sub = None;
        self.queue.metrics().left(self.left.unwrap_or(Left::Error));
    }
}

impl StreamHandler<Next> for Webhook {
    fn handle(&mut self, next: Next, ctx: &mut Self::Context) {
        match next {
            Next::Items(items) => {
                self.pending.extend(items.into_iter().filter_map(|i| match i {
                    Item::Message(d) => Some(d),
                    Item::Event(_) => None,
                }));
                self.bound();
            }
            Next::Closed(why) => {
                self.closed_as = match why {
                    Closed::Shutdown | Closed::Reload => Left::Shutdown,
                    Closed::Slow => Left::Slow,
                };
                self.drained = true;
                self.hurry = true;
            }
        }
        self.pump(ctx);
    }

    /// The queue stream ends only after `Closed`, handled above.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Flush> for Webhook {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Flush(why): Flush, ctx: &mut Self::Context) -> Self::Result {
        // What is queued is still delivered, then `Closed`, which finishes.
        self.queue.close(why);
        self.hurry = true;
        match self.batch.as_mut() {
            // Waiting out a backoff delay: one more attempt right now.
            Some(b) if !b.in_flight => {
                if let Some(h) = b.retry.take() {
                    ctx.cancel_future(h);
                }
                self.send(ctx);
            }
            Some(_) => {}
            None => self.pump(ctx),
        }
        self.waiters.wait(self.left.is_some())
    }
}

impl Handler<Abandon> for Webhook {
    type Result = ();

    fn handle(&mut self, Abandon(reason): Abandon, ctx: &mut Self::Context) {
        if self.left.is_some() {
            return;
        }
        let held = self.pending.len() + self.batch.as_ref().map_or(0, |b| b.len);
        self.queue.metrics().dropped(reason, held as u64);
        let lost = held as u64 + self.queue.abandon(reason);
        if lost > 0 {
            warn!(
                sink = "webhook",
                url = %self.endpoint.shown,
                dropped = lost,
                "Webhook stopped before delivering everything; messages dropped."
            );
        }
        // Stopping drops a request still on the wire.
        self.finish(ctx);
    }
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
