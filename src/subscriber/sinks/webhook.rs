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
use std::time::{Duration, Instant};

use actix::prelude::*;
use awc::http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use bytes::Bytes;
use tracing::{info, warn};

use super::retry::Gate;
use super::{Abandon, Flush, Throttle, Waiters};
use crate::config::{Overflow, ReconnectConfig, Secret, SecretError, WebhookConfig};
use crate::fanout::{Closed, Delivery, Item, Next, SubQueue, Subscription};
use crate::telemetry::Left;
use crate::transport::ReconnectPolicy;

#[path = "webhook_http.rs"]
mod http;

pub(super) use http::Endpoint;
use http::{json_array, post, verdict, Answer, Verdict, CONNECT_TIMEOUT, REQUEST_TIMEOUT};

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
