//! The `Upstream` actor: one per configured feed, under a `Supervisor`.
//!
//! An explicit state machine (connecting, authenticating, connected,
//! backoff, stopped) inside one actor. Connect and auth run as spawned
//! futures, never `ctx.wait`, so the mailbox and the heartbeat keep running.
//! A generation counter makes every result, frame and timer of an old link
//! harmless. Every failure goes through [`Upstream::fail`], which counts it,
//! records it, tears the link down and asks the policy when to try again.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::io::{SinkWrite, WriteHandler};
use actix::prelude::*;
use actix_codec::Framed;
use actix_http::ws::Item;
use awc::error::WsProtocolError;
use awc::ws::{CloseReason, Codec, Frame, Message};
use awc::BoxedSocket;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::stream::{SplitSink, StreamExt};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

use super::attempt::{encode_query, Attempt, Files, Upgraded};
use super::board::UpstreamStatus;
use super::decode::{Decoded, Decoder};
use super::error::LinkError;
use crate::config::{scrub, AuthKind, Secret, UpstreamConfig};
use crate::fanout::{Incoming, Publisher};
use crate::model::{DataKind, LinkState};
use crate::telemetry::UpstreamMetrics;
use crate::transport::reassembly::{Fragment, FrameError, Kind, Message as WsMessage, Reassembler};
use crate::transport::ReconnectPolicy;

type WsSink = SplitSink<Framed<BoxedSocket, Codec>, Message>;

/// How often invalid upstream data is logged at most.
const INVALID_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long an old link is still read after our close frame before it is
/// closed and dropped (the peer's close reply or EOF usually comes first).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After the server's close reply, how long the sink gets to flush ours.
const CLOSE_FLUSH: Duration = Duration::from_millis(20);
/// Ping payloads remembered for RTT matching.
const PINGS_REMEMBERED: usize = 16;

/// Close with 1000 and stay `stopped` (shutdown). Answers once the close
/// frame is flushed, or after a second.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Close with 1000 and stay `stopped` because a reload removed or changed
/// this upstream (reason `reload`). Answers like [`Shutdown`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// One item of a link's frame stream, tagged with the link's generation.
/// `None` is the end of the stream (EOF).
#[derive(Message)]
#[rtype(result = "()")]
struct LinkEvent {
    gen: u64,
    item: Option<Result<Frame, WsProtocolError>>,
}

/// What the actor needs from the rest of the process.
pub struct UpstreamDeps {
    /// Where decoded messages go.
    pub publisher: Publisher,
    /// This upstream's metric series.
    pub metrics: UpstreamMetrics,
    /// This upstream's live status.
    pub status: Arc<UpstreamStatus>,
}

/// A live link.
struct Link {
    sink: SinkWrite<Message, WsSink>,
    stream: SpawnHandle,
    tick: Option<SpawnHandle>,
    reasm: Reassembler,
    /// Any frame at all proves the link alive (kept for diagnostics).
    last_frame: Instant,
    /// Data messages only, for `idle_timeout`.
    last_data: Instant,
    last_ping: Instant,
    /// The first ping sent after the last frame: the dead-link clock runs
    /// from here, so a quiet but healthy feed is never cut before it could
    /// answer (detection within interval + timeout).
    probe_since: Option<Instant>,
    ping_seq: u64,
    pings: VecDeque<(u64, Instant)>,
}

/// The actor of one upstream.
pub struct Upstream {
    cfg: Arc<UpstreamConfig>,
    name: Arc<str>,
    deps: UpstreamDeps,
    decoder: Decoder,
    policy: ReconnectPolicy,
    state: LinkState,
    /// Bumped at every connect and teardown; stale events carry an older one.
    gen: u64,
    link: Option<Link>,
    /// The secret of the current attempt, kept only to scrub error text.
    token: Option<Secret>,
    /// Set when a connected link is lost; the next message observes downtime.
    down_since: Option<Instant>,
    /// Set by a caught panic: after the supervisor restarts us, back off first.
    restart_after_panic: bool,
    /// Set by shutdown: never connect again.
    stopped_for_good: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Links we sent a close frame on, still read until the server's close
    /// reply or EOF (or [`CLOSE_GRACE`]), by generation; the flag says a
    /// close is already scheduled.
    closing: Vec<(u64, SinkWrite<Message, WsSink>, SpawnHandle, bool)>,
    invalid_seen: u64,
    invalid_logged_at: Option<Instant>,
    /// Topics seen, shared by every message that has them.
    topics: Topics,
}

/// A bounded set of interned topics: feeds reuse a handful, and a repeated
/// topic then costs no allocation per message. Past the bound, topics are
/// allocated per message (a feed with unbounded topics cannot grow it).
#[derive(Debug, Default)]
struct Topics(std::collections::HashSet<Arc<str>>);

impl Topics {
    const MAX: usize = 1024;

    fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.0.get(topic) {
            return Arc::clone(t);
        }
        let t: Arc<str> = Arc::from(topic);
        if self.0.len() < Self::MAX {
            self.0.insert(Arc::clone(&t));
        }
        t
    }
}

impl Upstream {
    /// A new actor; it connects when started.
    pub fn new(cfg: Arc<UpstreamConfig>, deps: UpstreamDeps) -> Self {
        Upstream {
            name: Arc::from(cfg.name.as_str()),
            decoder: Decoder::new(&cfg.decode),
            policy: ReconnectPolicy::new(&cfg.reconnect),
            cfg,
            deps,
            state: LinkState::Connecting,
            gen: 0,
            link: None,
            token: None,
            down_since: None,
            restart_after_panic: false,
            stopped_for_good: false,
            close_waiters: Vec::new(),
            closing: Vec::new(),
            invalid_seen: 0,
            invalid_logged_at: None,
            topics: Topics::default(),
        }
    }

    fn set_state(&mut self, state: LinkState) {
        if self.state == state && self.deps.status.state() == state {
            return;
        }
        debug!(upstream = %self.name, from = self.state.as_str(), to = state.as_str(), "Upstream state changed.");
        self.state = state;
        self.deps.status.set_state(state);
        self.deps.metrics.state(state);
        self.deps.publisher.set_state(state);
    }

    // === connect ===

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.gen += 1;
        let gen = self.gen;
        self.set_state(LinkState::Connecting);
        // Secret and certificate files are read on the blocking pool: a slow
        // or hung file system never stalls this actor's thread (SPEC §11).
        let files = Files::read(Arc::clone(&self.cfg));
        ctx.spawn(files.into_actor(self).map(move |files, act, ctx| {
            if act.gen != gen || act.state != LinkState::Connecting {
                return;
            }
            match files.and_then(|f| Attempt::prepare(&act.cfg, f)) {
                Ok(attempt) => act.dial(ctx, gen, attempt),
                Err(e) => act.fail(ctx, e),
            }
        }));
    }

    fn dial(&mut self, ctx: &mut Context<Self>, gen: u64, attempt: Attempt) {
        if attempt.insecure {
            warn!(upstream = %self.name, "TLS certificate verification is OFF (tls.insecure_skip_verify); use only in tests.");
        }
        self.token = attempt.token.clone();
        debug!(upstream = %self.name, url = %self.cfg.redacted_url(), "Connecting to upstream.");
        ctx.spawn(attempt.run().into_actor(self).map(move |res, act, ctx| {
            if act.gen != gen || act.state != LinkState::Connecting {
                return;
            }
            match res {
                Ok(up) => act.upgraded(ctx, up),
                Err(e) => act.fail(ctx, e),
            }
        }));
    }

    fn upgraded(&mut self, ctx: &mut Context<Self>, up: Upgraded) {
        if let Some(p) = &up.protocol {
            if !self.cfg.subprotocols.iter().any(|o| o == p) {
                return self
                    .fail(ctx, LinkError::Protocol(format!("server picked subprotocol {p:?}, which was not offered")));
            }
        } else if !self.cfg.subprotocols.is_empty() {
            debug!(upstream = %self.name, "Server picked no subprotocol.");
        }
        let gen = self.gen;
        let (sink, stream) = up.framed.split();
        let stream = stream
            .map(move |item| LinkEvent { gen, item: Some(item) })
            .chain(futures_util::stream::once(async move { LinkEvent { gen, item: None } }));
        let stream = ctx.add_stream(stream);
        let sink = SinkWrite::new(sink, ctx);
        let now = Instant::now();
        let hb = &self.cfg.heartbeat;
        let mut period = hb.interval.get().min(hb.timeout.get());
        if !hb.idle_timeout.is_zero() {
            period = period.min(hb.idle_timeout.get());
        }
        // Fine enough that detection stays within interval + timeout.
        let period = (period / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let tick = ctx.run_interval(period, |act, ctx| act.tick(ctx));
        self.link = Some(Link {
            sink,
            stream,
            tick: Some(tick),
            reasm: Reassembler::new(self.cfg.max_message_size.bytes()),
            last_frame: now,
            last_data: now,
            last_ping: now,
            probe_since: None,
            ping_seq: 0,
            pings: VecDeque::new(),
        });

        if self.cfg.auth.kind == AuthKind::Message {
            let template = self.cfg.auth.message.clone().unwrap_or_default();
            let token = self.token.as_ref().map(|t| json_escape(t.expose())).unwrap_or_default();
            self.send_text(template.replace("{{token}}", &token));
            self.set_state(LinkState::Authenticating);
            let timeout = self.cfg.auth.timeout.get();
            ctx.run_later(timeout, move |act, ctx| {
                if act.gen == gen && act.state == LinkState::Authenticating {
                    act.fail(ctx, LinkError::Auth(format!("no auth reply within {timeout:?}")));
                }
            });
        } else {
            self.go_live(ctx);
        }
    }

    fn go_live(&mut self, ctx: &mut Context<Self>) {
        for m in self.cfg.on_connect.clone() {
            self.send_text(m);
        }
        if let Some(l) = self.link.as_mut() {
            l.last_data = Instant::now();
        }
        self.set_state(LinkState::Connected);
        self.deps.metrics.connected();
        info!(upstream = %self.name, url = %self.cfg.redacted_url(), "Upstream connected.");
        let gen = self.gen;
        ctx.run_later(self.cfg.reconnect.stable_after.get(), move |act, _| {
            if act.gen == gen && act.state == LinkState::Connected {
                act.policy.reset();
            }
        });
    }

    fn send_text(&mut self, text: String) {
        if let Some(l) = self.link.as_mut() {
            let _ = l.sink.write(Message::Text(ByteString::from(text)));
        }
    }

    // === failure and retry ===

    /// Counts, records and logs `err`, tears the link down (closing with the
    /// code that fits the error) and schedules the next attempt.
    fn fail(&mut self, ctx: &mut Context<Self>, err: LinkError) {
        let code = match &err {
            LinkError::Oversize(_) => Some(1009),
            LinkError::Protocol(_) => Some(1002),
            LinkError::Idle(_) | LinkError::Auth(_) => Some(1000),
            LinkError::Shutdown | LinkError::Reload => Some(1000),
            _ => None,
        };
        self.fail_closing(ctx, err, code);
    }

    fn fail_closing(&mut self, ctx: &mut Context<Self>, err: LinkError, close: Option<u16>) {
        let reason = err.reason();
        let text = self.scrub(err.to_string());
        let was_connected = self.state == LinkState::Connected;
        if was_connected {
            self.deps.metrics.disconnected(reason);
            self.down_since.get_or_insert_with(Instant::now);
            warn!(upstream = %self.name, reason = reason.code(), error = %text, "Upstream link lost.");
        } else {
            self.deps.metrics.connect_failed(reason);
            warn!(upstream = %self.name, reason = reason.code(), error = %text, "Upstream connect failed.");
        }
        if let LinkError::Closed { code, .. } = &err {
            self.deps.status.set_close_code(*code);
        }
        self.deps.status.set_error(format!("{}: {text}", reason.code()));
        self.teardown(ctx, close);
        if err.is_retryable() {
            self.schedule_retry(ctx, err.retry_after());
        } else {
            self.set_state(LinkState::Stopped);
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Context<Self>, at_least: Option<Duration>) {
        let Some(delay) = self.policy.next_delay() else {
            error!(upstream = %self.name, max_elapsed = %self.cfg.reconnect.max_elapsed, "Upstream gave up: reconnect.max_elapsed passed; it stays stopped until a reload or restart.");
            self.set_state(LinkState::Stopped);
            return;
        };
        let delay = delay.max(at_least.unwrap_or_default());
        self.set_state(LinkState::Backoff);
        debug!(upstream = %self.name, delay_ms = delay.as_millis() as u64, "Reconnecting after backoff.");
        let gen = self.gen;
        ctx.run_later(delay, move |act, ctx| {
            if act.gen == gen && act.state == LinkState::Backoff && !act.stopped_for_good {
                act.deps.status.add_reconnect();
                act.connect(ctx);
            }
        });
    }

    /// Drops the link, after queueing a close frame with `code` if given.
    ///
    /// The old link is still read (and ignored: the generation moves on) for
    /// [`CLOSE_GRACE`]: dropping a socket with unread data sends RST, and the
    /// peer would lose our close frame. The sink is closed only then, because
    /// actix-codec's `Framed::close` does not flush its own write buffer: a
    /// frame queued just before `close()` would be discarded.
    fn teardown(&mut self, ctx: &mut Context<Self>, code: Option<u16>) {
        if let Some(mut link) = self.link.take() {
            if let Some(t) = link.tick.take() {
                ctx.cancel_future(t);
            }
            if let Some(code) = code {
                let _ = link.sink.write(Message::Close(Some(CloseReason { code: code.into(), description: None })));
            }
            let gen = self.gen;
            self.closing.push((gen, link.sink, link.stream, false));
            ctx.run_later(CLOSE_GRACE, move |act, ctx| act.finish_closing(ctx, gen));
        }
        self.gen += 1;
    }

    /// Closes the sink of an old link and stops reading it.
    fn finish_closing(&mut self, ctx: &mut Context<Self>, gen: u64) {
        if let Some(i) = self.closing.iter().position(|(g, ..)| *g == gen) {
            let (_, mut sink, stream, _) = self.closing.swap_remove(i);
            sink.close();
            ctx.cancel_future(stream);
        }
    }

    /// The server answered or hung up: finish the old link soon, after the
    /// sink had a turn to flush our close frame (closing right away would
    /// drop it: `Framed::close` skips the write buffer).
    fn finish_closing_soon(&mut self, ctx: &mut Context<Self>, gen: u64) {
        if let Some(entry) = self.closing.iter_mut().find(|(g, ..)| *g == gen) {
            if !entry.3 {
                entry.3 = true;
                ctx.run_later(CLOSE_FLUSH, move |act, ctx| act.finish_closing(ctx, gen));
            }
        }
    }

    /// Error text from outside may echo the token: never let it through.
    /// `text` without the token of the current attempt (as given and as
    /// put in a query) or any secret part of the URL (SPEC §11), for error
    /// texts that come from libraries.
    fn scrub(&self, text: String) -> String {
        let mut secrets = self.cfg.url_secrets();
        if let Some(t) = &self.token {
            secrets.push(t.expose().to_string());
            secrets.push(encode_query(t.expose()));
        }
        scrub(&text, &secrets)
    }

    fn stop_for_good(&mut self, ctx: &mut Context<Self>, why: LinkError) {
        self.stopped_for_good = true;
        if self.link.is_some() && self.state == LinkState::Connected {
            self.deps.metrics.disconnected(why.reason());
        }
        self.teardown(ctx, Some(1000));
        self.set_state(LinkState::Stopped);
    }

    // === frames ===

    fn on_frame(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let Some(link) = self.link.as_mut() else { return };
        link.last_frame = Instant::now();
        link.probe_since = None;
        let frag = match frame {
            Frame::Ping(p) => {
                self.deps.metrics.bytes(p.len());
                let _ = link.sink.write(Message::Pong(p));
                return;
            }
            Frame::Pong(p) => return self.on_pong(&p),
            Frame::Close(reason) => {
                let code = reason.as_ref().map(|r| u16::from(r.code));
                let text: String =
                    reason.as_ref().and_then(|r| r.description.clone()).unwrap_or_default().chars().take(123).collect();
                // Answer the server's close with its own code.
                let _ =
                    link.sink.write(Message::Close(reason.map(|r| CloseReason { code: r.code, description: None })));
                return self.fail_closing(ctx, LinkError::Closed { code, reason: text }, None);
            }
            #[cfg(feature = "test-hooks")]
            Frame::Text(b) if b.as_ref() == b"__wsgate_test_panic_uncaught__" => {
                panic!("test-only uncaught panic trigger")
            }
            Frame::Text(b) => Fragment::Whole(Kind::Text, b),
            Frame::Binary(b) => Fragment::Whole(Kind::Binary, b),
            Frame::Continuation(Item::FirstText(b)) => Fragment::First(Kind::Text, b),
            Frame::Continuation(Item::FirstBinary(b)) => Fragment::First(Kind::Binary, b),
            Frame::Continuation(Item::Continue(b)) => Fragment::Continue(b),
            Frame::Continuation(Item::Last(b)) => Fragment::Last(b),
        };
        let len = match &frag {
            Fragment::Whole(_, b) | Fragment::First(_, b) | Fragment::Continue(b) | Fragment::Last(b) => b.len(),
        };
        self.deps.metrics.bytes(len);
        match link.reasm.push(frag) {
            Ok(None) => {}
            Ok(Some(msg)) => self.on_message(ctx, msg),
            Err(e) => {
                let code = e.close_code();
                let err = match e {
                    FrameError::Oversize { .. } => LinkError::Oversize(e.to_string()),
                    _ => LinkError::Protocol(e.to_string()),
                };
                self.fail_closing(ctx, err, Some(code));
            }
        }
    }

    fn on_message(&mut self, ctx: &mut Context<Self>, msg: WsMessage) {
        let received = Instant::now();
        if let Some(l) = self.link.as_mut() {
            l.last_data = received;
        }
        match self.state {
            LinkState::Authenticating => return self.check_auth(ctx, &msg),
            LinkState::Connected => {}
            _ => return,
        }
        let received_at = SystemTime::now();
        // Guard the code that touches outside data: a panic here restarts
        // this upstream only (counted as reason `panic`).
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            test_hook(&msg);
            let (topic, kind) = match self.decoder.decode(&msg) {
                Decoded::Ok { topic, kind } => (self.topics.intern(&topic), kind),
                Decoded::Invalid { error, pass } => {
                    self.invalid(&error);
                    if !pass {
                        return false;
                    }
                    (self.topics.intern(""), DataKind::Text)
                }
            };
            if let Some(since) = self.down_since.take() {
                self.deps.metrics.downtime(since.elapsed());
            }
            self.deps.publisher.publish(Incoming {
                upstream: Arc::clone(&self.name),
                topic,
                raw: msg.data,
                raw_is_text: msg.kind == Kind::Text,
                kind,
                received_at,
                received,
            });
            true
        }));
        match outcome {
            Ok(true) => {
                self.deps.metrics.message(received_at);
                self.deps.status.message(received_at);
            }
            Ok(false) => {}
            Err(_) => self.on_panic(ctx),
        }
    }

    /// Counts an invalid message; logs at most once per [`INVALID_LOG_EVERY`].
    fn invalid(&mut self, error: &str) {
        self.deps.metrics.decode_error();
        self.invalid_seen += 1;
        let now = Instant::now();
        if self.invalid_logged_at.is_none_or(|t| now.duration_since(t) >= INVALID_LOG_EVERY) {
            warn!(upstream = %self.name, error, count = self.invalid_seen, "Invalid upstream data (counted; logged at most every 10 s).");
            self.invalid_logged_at = Some(now);
            self.invalid_seen = 0;
        }
    }

    fn on_panic(&mut self, ctx: &mut Context<Self>) {
        error!(upstream = %self.name, "Handling upstream data panicked; restarting this upstream.");
        if self.state == LinkState::Connected {
            self.deps.metrics.disconnected(crate::model::Reason::Panic);
            self.down_since.get_or_insert_with(Instant::now);
        }
        self.deps.status.set_error(format!("panic: {}", LinkError::Panic));
        self.teardown(ctx, Some(1011));
        self.restart_after_panic = true;
        // The supervisor restarts the actor: restarting(), then started().
        ctx.stop();
    }

    fn check_auth(&mut self, ctx: &mut Context<Self>, msg: &WsMessage) {
        // Replies that match neither pointer are ignored and not delivered.
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&msg.data) else { return };
        let auth = &self.cfg.auth;
        if auth.failure.as_ref().is_some_and(|f| f.matches(&doc)) {
            return self.fail(ctx, LinkError::Auth("server rejected the credentials".into()));
        }
        if auth.success.as_ref().is_some_and(|s| s.matches(&doc)) {
            self.go_live(ctx);
        }
    }

    fn on_pong(&mut self, payload: &Bytes) {
        let Some(link) = self.link.as_mut() else { return };
        let Ok(bytes) = <[u8; 8]>::try_from(payload.as_ref()) else { return };
        let seq = u64::from_be_bytes(bytes);
        while let Some(&(s, sent)) = link.pings.front() {
            if s > seq {
                break;
            }
            link.pings.pop_front();
            if s == seq {
                let rtt = sent.elapsed();
                self.deps.metrics.rtt(rtt);
                self.deps.status.set_rtt(rtt);
                break;
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let hb = &self.cfg.heartbeat;
        let connected = self.state == LinkState::Connected;
        let Some(link) = self.link.as_mut() else { return };
        if link.probe_since.is_some_and(|p| now.duration_since(p) >= hb.timeout.get()) {
            let t = hb.timeout.get();
            return self.fail(ctx, LinkError::DeadLink(t));
        }
        if connected && !hb.idle_timeout.is_zero() && now.duration_since(link.last_data) >= hb.idle_timeout.get() {
            let t = hb.idle_timeout.get();
            return self.fail(ctx, LinkError::Idle(t));
        }
        if now.duration_since(link.last_ping) >= hb.interval.get() {
            link.ping_seq += 1;
            link.probe_since.get_or_insert(now);
            link.pings.push_back((link.ping_seq, now));
            if link.pings.len() > PINGS_REMEMBERED {
                link.pings.pop_front();
            }
            let _ = link.sink.write(Message::Ping(Bytes::copy_from_slice(&link.ping_seq.to_be_bytes())));
            if connected && !hb.app_message.is_empty() {
                let _ = link.sink.write(Message::Text(ByteString::from(hb.app_message.clone())));
            }
            link.last_ping = now;
        }
    }
}

/// JSON-escapes `s` for use inside a JSON string of a message template.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default().to_string()
}

/// Test-only triggers: a message with exactly this text panics the
/// handler, or blocks the actor's thread for 3 s (a stuck mailbox, for the
/// liveness probe).
#[cfg(feature = "test-hooks")]
fn test_hook(msg: &WsMessage) {
    if msg.data.as_ref() == b"__wsgate_test_panic__" {
        panic!("test-only panic trigger");
    }
    if msg.data.as_ref() == b"__wsgate_test_stall__" {
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_hook(_: &WsMessage) {}

// === impl Actor ===

impl Actor for Upstream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.stopped_for_good {
            return;
        }
        if std::mem::take(&mut self.restart_after_panic) {
            self.schedule_retry(ctx, None);
        } else {
            self.connect(ctx);
        }
    }
}

impl Supervised for Upstream {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // The old context's futures, streams and timers are gone; make sure
        // the old connections go with them.
        self.link = None;
        self.closing.clear();
        self.gen += 1;
        info!(upstream = %self.name, "Upstream actor restarting.");
    }
}

impl StreamHandler<LinkEvent> for Upstream {
    fn handle(&mut self, ev: LinkEvent, ctx: &mut Self::Context) {
        if ev.gen != self.gen || self.link.is_none() {
            // An old link: once the server answered our close (or hung up),
            // it can go now instead of at the end of the grace period.
            if matches!(ev.item, None | Some(Err(_)) | Some(Ok(Frame::Close(_)))) {
                self.finish_closing_soon(ctx, ev.gen);
            }
            return;
        }
        match ev.item {
            None => self.fail(ctx, LinkError::Tcp("connection closed by the server without a close frame".into())),
            Some(Err(WsProtocolError::Overflow)) => {
                let limit = self.cfg.max_message_size;
                self.fail_closing(
                    ctx,
                    LinkError::Oversize(format!("frame exceeds max_message_size {limit}")),
                    Some(1009),
                );
            }
            Some(Err(WsProtocolError::Io(e))) => {
                match e.get_ref().and_then(|inner| inner.downcast_ref::<crate::transport::FrameTooLarge>()) {
                    Some(big) => {
                        let err = LinkError::Oversize(big.to_string());
                        self.fail_closing(ctx, err, Some(1009));
                    }
                    None => self.fail(ctx, LinkError::Tcp(e.to_string())),
                }
            }
            Some(Err(e)) => self.fail(ctx, LinkError::Protocol(e.to_string())),
            Some(Ok(frame)) => self.on_frame(ctx, frame),
        }
    }

    /// EOF arrives as an item; the default would stop the actor.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl WriteHandler<WsProtocolError> for Upstream {
    /// Write errors also surface on the read side or as a dead link; an old
    /// link's late error must not tear down the new one.
    fn error(&mut self, err: WsProtocolError, _ctx: &mut Self::Context) -> Running {
        debug!(upstream = %self.name, error = %err, "Upstream write failed.");
        Running::Continue
    }

    /// A sink finished closing: the close frame is out.
    fn finished(&mut self, _ctx: &mut Self::Context) {
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

impl Upstream {
    /// Stops for good with `why`; the future resolves once the close frame is
    /// flushed (or after a second).
    fn stop_and_wait(&mut self, ctx: &mut Context<Self>, why: LinkError) -> ResponseFuture<()> {
        let had_link = self.link.is_some();
        self.stop_for_good(ctx, why);
        if !had_link {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.close_waiters.push(tx);
        Box::pin(async move {
            let _ = actix_rt::time::timeout(Duration::from_secs(1) + CLOSE_GRACE, rx).await;
        })
    }
}

impl Handler<Shutdown> for Upstream {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.stop_and_wait(ctx, LinkError::Shutdown)
    }
}

impl Handler<Retire> for Upstream {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        info!(upstream = %self.name, "Upstream retired by a reload.");
        self.stop_and_wait(ctx, LinkError::Reload)
    }
}

impl Handler<crate::health::Probe> for Upstream {
    type Result = ();

    /// Answering at all is the proof of life: the mailbox is served.
    fn handle(&mut self, _: crate::health::Probe, _ctx: &mut Self::Context) {}
}
