//! `GET /__echo` (test builds only: the `test-hooks` feature): the `/ws`
//! session's frame layer, echoing instead of subscribing. It is the testee
//! of the Autobahn fuzzing client (`scripts/conformance.sh`, cases 1-10).
//!
//! Same layers as `/ws`: the handshake by `actix_http::ws::handshake`, the
//! client's frames through [`ClientFrames`] (our frame guard on every
//! header, then actix-http's codec), every answer written by the
//! [`Outbound`] response body from the bounded [`Outbox`] (frames built by
//! `fanout::frame`, read only while fewer than 256 answers wait), and the
//! close codes of the session (1002, 1007, 1009; the client's code echoed).
//! Two differences, both because echoing is the job: a message may be as
//! large as [`ECHO_MAX`] (a subscriber's are capped at 64 KiB), and
//! fragments are joined by the transport's [`Reassembler`], which checks
//! UTF-8 as each fragment arrives.
//!
//! [`Outbox`]: super::outbound::Outbox

use std::rc::Rc;
use std::sync::OnceLock;

use actix::prelude::*;
use actix_http::ws::{Frame, Item};
use actix_web::body::{BodyStream, BoxBody};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::outbound::{Outbound, SharedOutbox};
use super::session::{BodyEnded, ClientFrames, Refused};
use crate::config::Overflow;
use crate::fanout::{frame, SubQueue};
use crate::model::close;
use crate::telemetry::{Metrics, SubscriberMetrics};
use crate::transport::reassembly::{Fragment, Kind, Reassembler};

/// The largest frame and message echoed: case 9 of the suite sends 16 MiB.
pub const ECHO_MAX: usize = 16 * 1024 * 1024;

/// Counters of echo sessions, apart from the gateway's (never on /metrics).
fn metrics() -> SubscriberMetrics {
    static METRICS: OnceLock<SubscriberMetrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new().subscriber("websocket")).clone()
}

/// `GET /__echo`: the upgrade, then an [`Echo`] actor and its body.
pub async fn endpoint(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    let mut handshake = actix_http::ws::handshake(req.head())?;
    let metrics = metrics();
    // Never subscribed and never pushed: the body writes only what the
    // actor puts in the outbox.
    let queue = SubQueue::bounded(1, 1, Overflow::DropNewest, false, metrics.clone());
    let outbox = SharedOutbox::default();
    let echo = Echo::create(|ctx| {
        ctx.add_stream(ClientFrames::with_limit(payload, Rc::clone(&outbox), ECHO_MAX));
        Echo { outbox: Rc::clone(&outbox), reasm: Reassembler::new(ECHO_MAX), over: false }
    });
    let body = Outbound::new(queue, outbox, false, metrics, echo.recipient());
    let res = handshake.message_body(BoxBody::new(BodyStream::new(body)))?;
    Ok(HttpResponse::from(res))
}

/// One echo session: the control side of a `/ws` session, echoing.
pub struct Echo {
    outbox: SharedOutbox,
    reasm: Reassembler,
    /// A close was queued (or the connection is gone): ignore the rest.
    over: bool,
}

impl Echo {
    fn send(&mut self, ctx: &mut Context<Self>, f: Bytes) {
        // The client's frames are read only while the outbox has room.
        if !self.outbox.borrow_mut().push(f) {
            self.end(ctx, Some(frame::close(close::POLICY, "slow consumer")));
        }
    }

    fn end(&mut self, ctx: &mut Context<Self>, close: Option<Bytes>) {
        self.over = true;
        if let Some(f) = close {
            self.outbox.borrow_mut().close(f);
        }
        ctx.stop();
    }

    fn data(&mut self, ctx: &mut Context<Self>, frag: Fragment) {
        match self.reasm.push(frag) {
            Ok(None) => {}
            Ok(Some(msg)) => {
                let opcode = match msg.kind {
                    Kind::Text => frame::TEXT,
                    Kind::Binary => frame::BINARY,
                };
                self.send(ctx, frame::frame(opcode, &msg.data));
            }
            Err(e) => self.end(ctx, Some(frame::close(e.close_code(), ""))),
        }
    }
}

impl Actor for Echo {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let mut out = self.outbox.borrow_mut();
        out.session_stopped(crate::telemetry::Left::Client, &metrics());
    }
}

impl Handler<BodyEnded> for Echo {
    type Result = ();

    fn handle(&mut self, _: BodyEnded, ctx: &mut Self::Context) {
        self.end(ctx, None);
    }
}

impl StreamHandler<Result<Frame, Refused>> for Echo {
    fn handle(&mut self, frame: Result<Frame, Refused>, ctx: &mut Self::Context) {
        if self.over {
            return;
        }
        match frame {
            Ok(Frame::Text(b)) => self.data(ctx, Fragment::Whole(Kind::Text, b)),
            Ok(Frame::Binary(b)) => self.data(ctx, Fragment::Whole(Kind::Binary, b)),
            Ok(Frame::Continuation(Item::FirstText(b))) => self.data(ctx, Fragment::First(Kind::Text, b)),
            Ok(Frame::Continuation(Item::FirstBinary(b))) => self.data(ctx, Fragment::First(Kind::Binary, b)),
            Ok(Frame::Continuation(Item::Continue(b))) => self.data(ctx, Fragment::Continue(b)),
            Ok(Frame::Continuation(Item::Last(b))) => self.data(ctx, Fragment::Last(b)),
            Ok(Frame::Ping(p)) => self.send(ctx, frame::frame(frame::PONG, &p)),
            Ok(Frame::Pong(_)) => {}
            // The client's code echoed, as the /ws session does.
            Ok(Frame::Close(reason)) => {
                let echo = match reason {
                    Some(r) => frame::close(r.code.into(), r.description.as_deref().unwrap_or("")),
                    None => frame::close_empty(),
                };
                self.end(ctx, Some(echo));
            }
            Err(Refused::TooBig) => self.end(ctx, Some(frame::close(close::TOO_BIG, ""))),
            Err(Refused::Protocol(_)) => self.end(ctx, Some(frame::close(close::PROTOCOL, ""))),
            Err(Refused::Payload(_)) => self.end(ctx, None),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.end(ctx, None);
    }
}
