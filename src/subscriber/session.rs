//! The control side of a `/ws` session: the `Session` actor.
//!
//! It reads the client's frames (decoded by actix-http's `ws::Codec`, each
//! header checked first by our frame guard), answers control ops, pings,
//! closes; it keeps the ping timer and the hub registration. Data never
//! passes through it: the response body ([`super::outbound::Outbound`])
//! pulls the hub queue when the socket can take more. What the actor writes
//! goes into the shared [`Outbox`](super::outbound::Outbox), bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_codec::Decoder as _;
use actix_http::ws::{Codec, Frame, Item as Fragment, ProtocolError};
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tracing::debug;

use super::outbound::SharedOutbox;
use crate::fanout::frame;
use crate::fanout::{Closed, Pair, Resume, SubQueue, Subscription};
use crate::model::close;
use crate::telemetry::{Left, SubscriberMetrics};
use crate::transport::frame_guard::FrameScan;

/// How often subscribers are pinged.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A subscriber that sends nothing (not even a pong) this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest frame a subscriber may send (control messages are small).
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// The response body ended: the queue closed (`Some`: the close frame was
/// written), or the connection is gone (`None`). Sent at most once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BodyEnded(pub Option<Closed>);

/// One WebSocket subscriber.
pub struct Session {
    /// The hub registration; dropped (unsubscribed) when the session stops.
    pub(super) sub: Option<Subscription>,
    /// What the hub queued for us (drained by the body, abandoned by us).
    pub(super) queue: Arc<SubQueue>,
    /// Control frames to the body.
    pub(super) outbox: SharedOutbox,
    /// `subscribers.max_filters` when the session started.
    pub(super) max_filters: usize,
    /// The `websocket` subscriber counters.
    pub(super) metrics: SubscriberMetrics,
    /// Released when the session ends.
    pub(super) live: Arc<AtomicUsize>,
    /// Last frame of any kind from the client.
    pub(super) last_heard: Instant,
    /// Why the session ended, for `wsgate_subscriber_disconnects_total`.
    pub(super) left: Option<Left>,
    /// A fragmented message being reassembled: whether it is text, and the
    /// bytes so far (at most [`MAX_CLIENT_FRAME`] in all).
    pub(super) fragments: Option<(bool, Vec<u8>)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Runs whether or not the actor started; counts each session once.
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    fn event(&mut self, ctx: &mut Context<Self>, value: serde_json::Value) {
        self.control_frame(ctx, frame::frame(frame::TEXT, value.to_string().as_bytes()));
    }

    /// Queues a control frame. The client's frames are read only while the
    /// outbox has room ([`ClientFrames`]), so this fails only if the
    /// session's own pings pile up behind a client that reads nothing:
    /// closed as slow.
    fn control_frame(&mut self, ctx: &mut Context<Self>, f: Bytes) {
        if !self.outbox.borrow_mut().push(f) {
            debug!("Subscriber does not read its answers; closing as slow.");
            self.end(ctx, Left::Slow, Some(frame::close(close::POLICY, "slow consumer")));
        }
    }

    /// Ends the session: `close` is the last frame written (none when the
    /// connection is gone).
    fn end(&mut self, ctx: &mut Context<Self>, reason: Left, close: Option<Bytes>) {
        if self.left.is_none() {
            self.left = Some(reason);
        }
        if let Some(f) = close {
            self.outbox.borrow_mut().close(f);
        }
        ctx.stop();
    }

    /// `{"op":"subscribe"|"unsubscribe","upstream":..,"topic":..}` and
    /// `{"op":"resume","upstream":..,"after":N,"run":..}` (SPEC §14);
    /// anything else is answered with an error event, never a disconnect.
    fn control(&mut self, ctx: &mut Context<Self>, text: &str) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Op {
            op: String,
            upstream: Option<String>,
            topic: Option<String>,
            after: Option<u64>,
            run: Option<String>,
        }
        let op: Op = match serde_json::from_str(text) {
            Ok(op) => op,
            Err(e) => {
                let message = format!(
                    "expected {{\"op\":\"subscribe\"|\"unsubscribe\",\"upstream\":..,\"topic\":..}} or {{\"op\":\"resume\",\"upstream\":..,\"after\":N,\"run\":..}}: {e}"
                );
                return self.event(ctx, json!({"event": "error", "message": message}));
            }
        };
        let Some(sub) = self.sub.as_ref() else { return };
        let pair = Pair { upstream: op.upstream.as_deref().map(Arc::from), topic: op.topic.as_deref().map(Arc::from) };
        let result = match (op.op.as_str(), &op.upstream, op.after) {
            ("subscribe", ..) if op.after.is_none() && op.run.is_none() => sub.add(pair, self.max_filters),
            ("unsubscribe", ..) if op.after.is_none() && op.run.is_none() => sub.remove(&pair),
            ("subscribe" | "unsubscribe", ..) => {
                let message = format!("{} takes upstream and topic only", op.op);
                return self.event(ctx, json!({"event": "error", "message": message}));
            }
            ("resume", Some(upstream), Some(after)) if op.topic.is_none() => {
                match sub.resume(&Resume { upstream: upstream.clone(), after, run: op.run.clone() }) {
                    Ok(true) => {
                        self.outbox.borrow_mut().resumed(upstream);
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            ("resume", ..) => {
                let message = "resume needs upstream and after (and optionally run), no topic";
                return self.event(ctx, json!({"event": "error", "message": message}));
            }
            (other, ..) => {
                let message = format!("unknown op {other:?} (subscribe, unsubscribe or resume)");
                return self.event(ctx, json!({"event": "error", "message": message}));
            }
        };
        match result {
            Ok(()) => {
                let mut ack = serde_json::Map::new();
                ack.insert("event".into(), json!("ack"));
                ack.insert("op".into(), json!(op.op));
                if let Some(u) = op.upstream {
                    ack.insert("upstream".into(), json!(u));
                }
                if let Some(t) = op.topic {
                    ack.insert("topic".into(), json!(t));
                }
                if let Some(a) = op.after {
                    ack.insert("after".into(), json!(a));
                }
                if let Some(r) = op.run {
                    ack.insert("run".into(), json!(r));
                }
                self.event(ctx, serde_json::Value::Object(ack));
            }
            Err(e) => self.event(ctx, json!({"event": "error", "message": e.to_string()})),
        }
    }

    /// A complete message from the client: text is a control op; anything
    /// else is answered with an error event.
    fn client_message(&mut self, ctx: &mut Context<Self>, text: bool, data: &[u8]) {
        if !text {
            return self.event(ctx, json!({"event": "error", "message": "send control messages as JSON text frames"}));
        }
        match std::str::from_utf8(data) {
            Ok(t) => self.control(ctx, t),
            Err(_) => self.invalid_utf8(ctx),
        }
    }

    /// Text that is not UTF-8 is a protocol failure: close 1007 (RFC 6455 §8.1).
    fn invalid_utf8(&mut self, ctx: &mut Context<Self>) {
        debug!("Subscriber sent text that is not UTF-8; closing with 1007.");
        self.end(ctx, Left::Error, Some(frame::close(close::INVALID_DATA, "")));
    }

    /// One frame of a fragmented message (RFC 6455 §5.4), reassembled up to
    /// [`MAX_CLIENT_FRAME`] bytes in all (larger closes with 1009).
    fn fragment(&mut self, ctx: &mut Context<Self>, item: Fragment) {
        let (first, last, text, chunk) = match item {
            Fragment::FirstText(b) => (true, false, true, b),
            Fragment::FirstBinary(b) => (true, false, false, b),
            Fragment::Continue(b) => (false, false, false, b),
            Fragment::Last(b) => (false, true, false, b),
        };
        if first == self.fragments.is_some() {
            // A new message inside one, or a continuation of nothing.
            debug!("Subscriber sent a continuation frame out of order; closing.");
            return self.end(ctx, Left::Error, Some(frame::close(close::PROTOCOL, "")));
        }
        let (is_text, buf) = self.fragments.get_or_insert_with(|| (text, Vec::new()));
        if buf.len() + chunk.len() > MAX_CLIENT_FRAME {
            self.fragments = None;
            return self.end(ctx, Left::Error, Some(frame::close(close::TOO_BIG, "")));
        }
        buf.extend_from_slice(&chunk);
        let is_text = *is_text;
        if last {
            if let Some((_, data)) = self.fragments.take() {
                self.client_message(ctx, is_text, &data);
            }
        }
    }
}

/// How a session whose queue closed for `why` is counted.
fn left_for(why: Closed) -> Left {
    match why {
        Closed::Slow => Left::Slow,
        Closed::Shutdown | Closed::Reload => Left::Shutdown,
    }
}

impl Session {
    /// Why the session ends when nobody chose: the queue's close, if any.
    fn queue_left(&self) -> Left {
        self.queue.closed().map_or(Left::Client, left_for)
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                debug!("Subscriber silent too long; closing.");
                act.end(ctx, Left::Error, Some(frame::close(close::GOING_AWAY, "timeout")));
            } else {
                act.control_frame(ctx, Bytes::from_static(&[0x80 | frame::PING, 0]));
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sub = None;
        let left = self.left.unwrap_or_else(|| self.queue_left());
        // What is still queued will never be written: counted, unless the
        // client itself chose to leave.
        match left.leftovers() {
            Some(r) => {
                self.queue.abandon(r);
            }
            None => self.queue.abandon_uncounted(),
        }
        self.outbox.borrow_mut().session_stopped(left, &self.metrics);
        self.metrics.left(left);
    }
}

impl Handler<BodyEnded> for Session {
    type Result = ();

    fn handle(&mut self, ended: BodyEnded, ctx: &mut Self::Context) {
        let left = match ended.0 {
            Some(why) => left_for(why),
            // The connection is gone; if the queue was closed before (a
            // slow client that never read its close), that is why.
            None => self.queue_left(),
        };
        self.end(ctx, left, None);
    }
}

/// Why the client's byte stream was refused.
#[derive(Debug)]
pub enum Refused {
    /// A frame (declared or reassembled by the codec) over [`MAX_CLIENT_FRAME`]: 1009.
    TooBig,
    /// Anything else the codec refuses (unmasked, reserved bits or opcodes,
    /// oversize control frames): 1002.
    Protocol(ProtocolError),
    /// The request payload failed (I/O): no close frame can help.
    Payload(PayloadError),
}

impl StreamHandler<Result<Frame, Refused>> for Session {
    fn handle(&mut self, frame: Result<Frame, Refused>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        if self.left.is_some() {
            return;
        }
        match frame {
            Ok(Frame::Text(t)) => self.client_message(ctx, true, &t),
            Ok(Frame::Binary(b)) => self.client_message(ctx, false, &b),
            Ok(Frame::Continuation(item)) => self.fragment(ctx, item),
            Ok(Frame::Ping(p)) => self.control_frame(ctx, frame::frame(frame::PONG, &p)),
            Ok(Frame::Pong(_)) => {}
            Ok(Frame::Close(reason)) => {
                // Echo the client's code (RFC 6455 §5.5.1).
                let echo = match reason {
                    Some(r) => frame::close(r.code.into(), r.description.as_deref().unwrap_or("")),
                    None => frame::close_empty(),
                };
                self.end(ctx, Left::Client, Some(echo));
            }
            Err(Refused::TooBig) => {
                debug!("Subscriber sent a frame over the size cap; closing with 1009.");
                self.end(ctx, Left::Error, Some(frame::close(close::TOO_BIG, "")));
            }
            Err(Refused::Protocol(e)) => {
                debug!(error = %e, "Subscriber sent an invalid frame; closing.");
                self.end(ctx, Left::Error, Some(frame::close(close::PROTOCOL, "")));
            }
            Err(Refused::Payload(e)) => {
                debug!(error = %e, "Subscriber connection failed.");
                self.end(ctx, Left::Error, None);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.left.is_none() {
            self.left = Some(Left::Client);
        }
        ctx.stop();
    }
}

/// The client's frames: the request payload, each frame header checked
/// against [`MAX_CLIENT_FRAME`] as it arrives (actix's codec checks the
/// size only once the whole frame is buffered, so a client could otherwise
/// declare a huge frame and stream it into memory, SPEC §10), then decoded
/// by actix-http's codec. Ends after the first refusal.
pub struct ClientFrames<S> {
    payload: S,
    /// Frames are decoded only while the answers fit ([`Outbox::poll_room`]).
    ///
    /// [`Outbox::poll_room`]: super::outbound::Outbox::poll_room
    outbox: SharedOutbox,
    scan: FrameScan,
    codec: Codec,
    /// The largest frame accepted ([`MAX_CLIENT_FRAME`] on `/ws`).
    limit: usize,
    /// Bytes received and not yet decoded (at most one frame and a header).
    buf: BytesMut,
    /// A refusal was returned, or the payload ended.
    over: bool,
}

impl<S> ClientFrames<S> {
    /// Frames of `payload`, read while `outbox` has room for their answers.
    pub fn new(payload: S, outbox: SharedOutbox) -> Self {
        Self::with_limit(payload, outbox, MAX_CLIENT_FRAME)
    }

    /// The same with frames of up to `limit` bytes (the test-only echo
    /// route echoes larger messages than a subscriber may send).
    pub fn with_limit(payload: S, outbox: SharedOutbox, limit: usize) -> Self {
        ClientFrames {
            payload,
            outbox,
            scan: FrameScan::default(),
            codec: Codec::new().max_size(limit),
            limit,
            buf: BytesMut::new(),
            over: false,
        }
    }
}

impl<S> futures_core::Stream for ClientFrames<S>
where
    S: futures_core::Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Frame, Refused>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.over {
                return Poll::Ready(None);
            }
            if !this.outbox.borrow_mut().poll_room(cx.waker()) {
                return Poll::Pending;
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(f)) => return Poll::Ready(Some(Ok(f))),
                Ok(None) => {}
                Err(e) => {
                    this.over = true;
                    let refused = match e {
                        ProtocolError::Overflow => Refused::TooBig,
                        e => Refused::Protocol(e),
                    };
                    return Poll::Ready(Some(Err(refused)));
                }
            }
            match std::pin::Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.scan.feed(&chunk, this.limit as u64).is_err() {
                        this.over = true;
                        return Poll::Ready(Some(Err(Refused::TooBig)));
                    }
                    this.buf.extend_from_slice(&chunk);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.over = true;
                    return Poll::Ready(Some(Err(Refused::Payload(e))));
                }
                Poll::Ready(None) => {
                    this.over = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
