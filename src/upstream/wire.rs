//! The I/O of the upstream actor: one [`Link`] (a socket's write half, its
//! frame stream, reassembly and heartbeat), the links that are closing, and
//! the frames that arrive. Decisions are the lifecycle's (`link.rs`); this
//! file only turns frames into events and carries out closes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use actix::io::SinkWrite;
use actix::prelude::*;
use actix_codec::Framed;
use actix_http::ws::Item;
use awc::error::WsProtocolError;
use awc::ws::{CloseReason, Frame, Message};
use awc::BoxedSocket;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::stream::{SplitSink, StreamExt};

use super::actor::Upstream;
use super::attempt::Upgraded;
use super::error::LinkError;
use super::heartbeat::{Beat, Heartbeat};
use super::inbound::Outcome;
use super::link::{Event, Goodbye, Phase};
use super::rotation::Admit;
use super::switch::Why;
use super::trace::{self, Dir};
use crate::fanout::Pausable;
use crate::transport::deflate::LinkCodec;
use crate::transport::reassembly::{Fragment, FrameError, Kind, Message as WsMessage, Reassembler};

/// The write half of a link's socket.
pub(super) type WsSink = SinkWrite<Message, SplitSink<Framed<BoxedSocket, LinkCodec>, Message>>;

/// After the server's close reply, how long the sink gets to flush ours.
const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_millis(20);

/// One item of a link's frame stream, tagged with the link's epoch.
/// `None` is the end of the stream (EOF).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct LinkEvent {
    epoch: u64,
    item: Option<Result<Frame, WsProtocolError>>,
}

/// A live (or handshaking) link.
pub(super) struct Link {
    /// The lifecycle epoch this link belongs to.
    epoch: u64,
    sink: WsSink,
    stream: SpawnHandle,
    tick: SpawnHandle,
    reasm: Reassembler,
    beat: Heartbeat,
    /// Bytes the codec took off the socket, not yet counted.
    wire: Rc<Cell<u64>>,
}

impl Link {
    /// The lifecycle epoch this link belongs to.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// A link we sent a close frame on, still read until the server's close
/// reply or EOF (or `close_timeout`).
pub(super) struct Closing {
    epoch: u64,
    sink: WsSink,
    stream: SpawnHandle,
    /// A close is already scheduled.
    scheduled: bool,
}

impl Upstream {
    /// Takes an upgraded socket as the link of `epoch` (its slot's current one).
    pub(super) fn attach(&mut self, ctx: &mut Context<Self>, epoch: u64, up: Upgraded) {
        let id = super::link::Lifecycle::slot_of(epoch);
        let wire = up.wire;
        let (sink, stream) = up.framed.split();
        // Read only while no full blocking sink holds this upstream back (SPEC §14).
        let ends = |i: &Result<Frame, WsProtocolError>| matches!(i, Err(_) | Ok(Frame::Close(_)));
        let stream = Pausable::new(stream, self.deps.publisher.gate(), &self.cfg.name, ends)
            .map(move |item| LinkEvent { epoch, item: Some(item) })
            .chain(futures_util::stream::once(async move { LinkEvent { epoch, item: None } }));
        let stream = ctx.add_stream(stream);
        let sink = SinkWrite::new(sink, ctx);
        let tick = ctx.run_interval(Heartbeat::period(&self.cfg.heartbeat), move |act, ctx| act.tick(ctx, id));
        let link = Link {
            epoch,
            sink,
            stream,
            tick,
            reasm: Reassembler::new(self.cfg.max_message_size.bytes()),
            beat: Heartbeat::new(&self.cfg.heartbeat, Instant::now()),
            wire,
        };
        if let Some(slot) = self.slot_mut(id) {
            slot.link = Some(link);
        }
    }

    /// Writes a message on the link of slot `id`, if any.
    pub(super) fn write(&mut self, id: u32, msg: Message) {
        self.trace_sent(&msg);
        if let Some(l) = self.slot_mut(id).and_then(|s| s.link.as_mut()) {
            let _ = l.sink.write(msg);
        }
    }

    /// `trace = true`: logs a frame we send (SPEC §12), secrets scrubbed.
    fn trace_sent(&self, msg: &Message) {
        if self.cfg.trace {
            let (opcode, data, text) = trace::sent(msg);
            trace::frame(&self.cfg.name, Dir::Send, opcode, &data, text, &self.trace_secrets());
        }
    }

    /// `trace = true`: logs a frame we received (SPEC §12).
    fn trace_received(&self, frame: &Frame) {
        if self.cfg.trace {
            let (opcode, data, text) = trace::received(frame);
            let data = match frame {
                Frame::Close(r) => trace::close_payload(r.as_ref()),
                _ => data.to_vec(),
            };
            trace::frame(&self.cfg.name, Dir::Recv, opcode, &data, text, &self.trace_secrets());
        }
    }

    /// What a trace line must not show: the token, the named secrets and
    /// the URL's secrets.
    fn trace_secrets(&self) -> Vec<String> {
        self.hidden()
    }

    /// Restarts the idle clock of slot `id` (its link just went live).
    pub(super) fn fresh_data(&mut self, id: u32) {
        if let Some(l) = self.slot_mut(id).and_then(|s| s.link.as_mut()) {
            l.beat.on_data(Instant::now());
        }
    }

    /// Drops the current link after queueing `bye`.
    ///
    /// The old link is still read (and ignored: its epoch is old) for
    /// `close_timeout` (SPEC §12, default 1 s): dropping a socket with unread data sends RST, and the
    /// peer would lose our close frame. The sink is closed only then, because
    /// actix-codec's `Framed::close` does not flush its own write buffer: a
    /// frame queued just before `close()` would be discarded.
    pub(super) fn close_link(&mut self, ctx: &mut Context<Self>, id: u32, bye: Goodbye) {
        let Some(mut link) = self.slot_mut(id).and_then(|s| s.link.take()) else { return };
        ctx.cancel_future(link.tick);
        let frame = match bye {
            Goodbye::Silent => None,
            Goodbye::Empty => Some(None),
            Goodbye::Code(code) => Some(Some(CloseReason { code: code.into(), description: None })),
        };
        if let Some(reason) = frame {
            let msg = Message::Close(reason);
            self.trace_sent(&msg);
            let _ = link.sink.write(msg);
        }
        let epoch = link.epoch;
        self.closing.push(Closing { epoch, sink: link.sink, stream: link.stream, scheduled: false });
        ctx.run_later(self.cfg.close_timeout.get(), move |act, ctx| act.finish_closing(ctx, epoch));
    }

    /// Closes the sink of an old link and stops reading it.
    fn finish_closing(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        if let Some(i) = self.closing.iter().position(|c| c.epoch == epoch) {
            let mut c = self.closing.swap_remove(i);
            c.sink.close();
            ctx.cancel_future(c.stream);
        }
    }

    /// The server answered or hung up: finish the old link soon, after the
    /// sink had a turn to flush our close frame.
    fn finish_closing_soon(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        if let Some(c) = self.closing.iter_mut().find(|c| c.epoch == epoch) {
            if !std::mem::replace(&mut c.scheduled, true) {
                ctx.run_later(CLOSE_FLUSH, move |act, ctx| act.finish_closing(ctx, epoch));
            }
        }
    }

    /// Forgets every link (the supervisor restarts the actor).
    pub(super) fn drop_links(&mut self) {
        for s in &mut self.slots {
            s.link = None;
        }
        self.closing.clear();
    }

    /// The link of slot `id` failed for `error`.
    fn failed(&mut self, ctx: &mut Context<Self>, id: u32, error: LinkError) {
        let Some(epoch) = self.slot(id).map(|s| s.life.epoch()) else { return };
        self.apply(ctx, Event::Failed { epoch, now: Instant::now(), error });
    }

    fn tick(&mut self, ctx: &mut Context<Self>, id: u32) {
        let gate = self.deps.publisher.gate();
        if gate.is_closed() {
            // Paused by a blocking sink: not reading, so no deadline runs
            // (heartbeat, idle, freshness) and no ping goes out.
            gate.settle();
            let now = Instant::now();
            if let Some(link) = self.slot_mut(id).and_then(|s| s.link.as_mut()) {
                link.beat.suspend(now);
            }
            self.inbound.suspend(now);
            return;
        }
        let Some(slot) = self.slot(id) else { return };
        let live = slot.live();
        // Freshness is the upstream's: the first live slot runs it.
        let first_live = self.slots.iter().find(|s| s.live()).is_some_and(|s| s.id == id);
        if first_live && self.inbound.freshness_tick(Instant::now(), &self.deps.publisher, &self.deps.metrics) {
            return self.failed(ctx, id, LinkError::Stale("a watched topic is stale: resync".into()));
        }
        let Some(link) = self.slot_mut(id).and_then(|s| s.link.as_mut()) else { return };
        match link.beat.tick(Instant::now(), live) {
            Beat::Quiet => {}
            Beat::Ping(payload) => {
                self.write(id, Message::Ping(Bytes::copy_from_slice(&payload)));
                let app = &self.cfg.heartbeat.app_message;
                if live && !app.is_empty() {
                    self.write(id, Message::Text(ByteString::from(app.clone())));
                }
            }
            Beat::Dead(after) => self.failed(ctx, id, LinkError::DeadLink(after)),
            Beat::Idle(after) => self.failed(ctx, id, LinkError::Idle(after)),
        }
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, id: u32, frame: Frame) {
        // The slot by field, so the link's borrow leaves `self.deps` free.
        let Some(link) = self.slots.iter_mut().find(|s| s.id == id).and_then(|s| s.link.as_mut()) else { return };
        link.beat.on_frame();
        let frag = match frame {
            Frame::Ping(p) => {
                self.deps.metrics.bytes(p.len());
                self.write(id, Message::Pong(p));
                return;
            }
            Frame::Pong(p) => {
                if let Some(rtt) = link.beat.on_pong(&p, Instant::now()) {
                    self.deps.metrics.rtt(rtt);
                    self.deps.status.set_rtt(rtt);
                }
                return;
            }
            Frame::Close(reason) => {
                let code = reason.as_ref().map(|r| u16::from(r.code));
                let text: String =
                    reason.as_ref().and_then(|r| r.description.clone()).unwrap_or_default().chars().take(123).collect();
                return self.failed(ctx, id, LinkError::Closed { code, reason: text });
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
            Ok(Some(msg)) => self.on_message(ctx, id, msg),
            Err(e @ FrameError::Oversize { .. }) => self.failed(ctx, id, LinkError::Oversize(e.to_string())),
            Err(e @ FrameError::Utf8) => self.failed(ctx, id, LinkError::InvalidText(e.to_string())),
            Err(e) => self.failed(ctx, id, LinkError::Protocol(e.to_string())),
        }
    }

    fn on_message(&mut self, ctx: &mut Context<Self>, id: u32, msg: WsMessage) {
        let now = Instant::now();
        let Some(slot) = self.slot_mut(id) else { return };
        if let Some(l) = slot.link.as_mut() {
            l.beat.on_data(now);
        }
        match *slot.life.phase() {
            Phase::Handshaking { step, .. } => self.handshake_reply(ctx, id, msg, step, now),
            Phase::Live { conn, .. } => self.deliver(ctx, id, conn, msg, now),
            _ => {}
        }
    }

    /// A reply during the handshake. One that matches the waiting step's
    /// `fail` or `expect` is not delivered; any other is data with
    /// `[[upstreams.handshake]]` and dropped with the legacy auth message
    /// (SPEC §10a, §14a).
    fn handshake_reply(&mut self, ctx: &mut Context<Self>, id: u32, msg: WsMessage, step: usize, now: Instant) {
        let Some(s) = self.plan.steps.get(step) else { return };
        let doc = serde_json::from_slice::<serde_json::Value>(&msg.data).ok();
        let matches =
            |m: &Option<crate::config::Matcher>| m.as_ref().is_some_and(|m| doc.as_ref().is_some_and(|d| m.matches(d)));
        if matches(&s.fail) {
            let why = if s.auth { "the server rejected the credentials" } else { "the server answered with `fail`" };
            let error = s.error(why);
            return self.failed(ctx, id, error);
        }
        let Some((epoch, conn)) = self.slot(id).map(|s| (s.life.epoch(), s.life.phase().conn().unwrap_or(0))) else {
            return;
        };
        if matches(&s.expect) {
            return self.apply(ctx, Event::StepDone { epoch, now });
        }
        if self.plan.deliver_unmatched {
            self.deliver(ctx, id, conn, msg, now);
        }
    }

    /// Decodes and publishes one data message of link `conn` in slot `id`,
    /// unless another link already brought it, or holds it while a
    /// rotation's switch waits (`rotation.rs`: `admit`).
    pub(super) fn deliver(&mut self, ctx: &mut Context<Self>, id: u32, conn: u64, msg: WsMessage, now: Instant) {
        match self.admit(ctx, id, &msg.data) {
            Admit::Hold(key) => self.held(ctx, id, key, (msg, conn, now)),
            Admit::Drop { meets } => {
                if meets {
                    self.release(ctx, Why::Met);
                }
            }
            Admit::Deliver { meets } => {
                self.publish(ctx, id, conn, msg, now);
                if meets {
                    self.release(ctx, Why::Met);
                }
            }
        }
    }

    /// Decodes and publishes one data message of link `conn` in slot `id`.
    pub(super) fn publish(&mut self, ctx: &mut Context<Self>, id: u32, conn: u64, msg: WsMessage, now: Instant) {
        match self.inbound.deliver(msg, conn, now, &self.deps.publisher, &self.deps.metrics) {
            o @ (Outcome::Published | Outcome::Resync) => {
                if let Some(down) = self.slot_mut(id).and_then(|s| s.life.first_message(now)) {
                    self.deps.metrics.downtime(down);
                }
                self.deps.status.message(std::time::SystemTime::now());
                if o == Outcome::Resync {
                    self.failed(ctx, id, LinkError::Sequence("a gap in the feed's sequence: resync".into()));
                }
            }
            Outcome::Dropped => {}
            Outcome::Panicked => self.apply(ctx, Event::Panicked { now }),
        }
    }
}

impl StreamHandler<LinkEvent> for Upstream {
    fn handle(&mut self, ev: LinkEvent, ctx: &mut Self::Context) {
        let Some(id) = self.slot_of_link(ev.epoch) else {
            // An old link: once the server answered our close (or hung up),
            // it can go now instead of at the end of the grace period.
            if matches!(ev.item, None | Some(Err(_)) | Some(Ok(Frame::Close(_)))) {
                self.finish_closing_soon(ctx, ev.epoch);
            }
            return;
        };
        if let Some(l) = self.slot(id).and_then(|s| s.link.as_ref()) {
            let n = l.wire.replace(0);
            if n > 0 {
                self.deps.metrics.wire_bytes(n);
            }
        }
        match ev.item {
            None => {
                self.failed(ctx, id, LinkError::Tcp("connection closed by the server without a close frame".into()))
            }
            Some(Err(WsProtocolError::Overflow)) => {
                let limit = self.cfg.max_message_size;
                self.failed(ctx, id, LinkError::Oversize(format!("frame exceeds max_message_size {limit}")));
            }
            Some(Err(WsProtocolError::Io(e))) => {
                let inner = e.get_ref();
                if let Some(big) = inner.and_then(|i| i.downcast_ref::<crate::transport::frame_guard::FrameTooLarge>())
                {
                    self.failed(ctx, id, LinkError::Oversize(big.to_string()))
                } else if let Some(bad) =
                    inner.and_then(|i| i.downcast_ref::<crate::transport::deflate::DeflateError>())
                {
                    self.failed(ctx, id, LinkError::Protocol(bad.to_string()))
                } else {
                    self.failed(ctx, id, LinkError::Tcp(e.to_string()))
                }
            }
            Some(Err(e)) => self.failed(ctx, id, LinkError::Protocol(e.to_string())),
            Some(Ok(frame)) => {
                self.trace_received(&frame);
                self.on_frame(ctx, id, frame)
            }
        }
    }

    /// EOF arrives as an item; the default would stop the actor.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}
