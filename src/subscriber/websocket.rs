//! The `/ws` subscriber endpoint (SPEC §5) and its `Session` actor.
//!
//! Architecture invariant: this is the only file that knows
//! actix-web-actors (deprecated upstream in favour of actix-ws), so a swap
//! stays local.
//!
//! A client that stops reading freezes its session: actix-web polls it only
//! while the HTTP/1 write buffer has room. So the session never decides
//! anything about overflow; the hub does, on the queue (`fanout::SubQueue`).
//! The socket itself is bounded by a small send buffer and TCP_USER_TIMEOUT
//! set when the connection is accepted ([`crate::transport::socket::tune_accepted`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::json;
use tracing::debug;

pub use super::auth::SubscriberSettings;
use crate::fanout::{Closed, Filter, Hub, HubError, Item, Next, Pair, SubQueue, Subscription};
use crate::model::{close, ShutdownFlag};
use crate::telemetry::{Left, Metrics, SubscriberMetrics};
use crate::transport::frame_guard::FrameScan;

/// How often subscribers are pinged.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A subscriber that sends nothing (not even a pong) this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest frame a subscriber may send (control messages are small).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// What the endpoint needs; shared by all HTTP workers.
#[derive(Clone)]
pub struct WsEndpoint {
    /// Where subscriptions go.
    pub hub: Hub,
    /// Subscriber settings and the resolved token; replaced on reload.
    pub settings: Arc<RwLock<SubscriberSettings>>,
    /// No new subscribers once shutdown began.
    pub shutdown: ShutdownFlag,
    /// For the `websocket` subscriber counters.
    pub metrics: Arc<Metrics>,
    /// Live WebSocket subscribers, against `max_connections`.
    pub live: Arc<AtomicUsize>,
}

/// A close frame with one of the codes of [`close`], and its words if any.
fn closing(code: u16, description: Option<&str>) -> Option<ws::CloseReason> {
    Some(ws::CloseReason { code: code.into(), description: description.map(str::to_string) })
}

fn plain(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(format!("{text}\n"))
}

/// Decodes `a=1&b=x%20y` into pairs; repeated keys stay repeated.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /ws`: auth (401), origin (403), limits (503), filters (400), then the upgrade.
pub async fn endpoint(
    req: HttpRequest,
    payload: web::Payload,
    ep: web::Data<WsEndpoint>,
) -> Result<HttpResponse, actix_web::Error> {
    use actix_web::http::StatusCode;
    if ep.shutdown.is_set() {
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    let settings = ep.settings.read().unwrap_or_else(|p| p.into_inner()).clone();
    let query = parse_query(req.query_string());

    let from_header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let presented = from_header.or_else(|| query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str()));
    if !settings.admits(presented) {
        return Ok(plain(StatusCode::UNAUTHORIZED, "missing or wrong token"));
    }
    if !settings.cfg.allowed_origins.is_empty() {
        if let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
            if !settings.cfg.allowed_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
                return Ok(plain(StatusCode::FORBIDDEN, "origin not allowed"));
            }
        }
    }

    let mut upstreams = Vec::new();
    let mut topics = Vec::new();
    let mut raw = false;
    for (k, v) in &query {
        match k.as_str() {
            "upstream" => upstreams.push(v.clone()),
            "topic" => topics.push(v.clone()),
            "format" => match v.as_str() {
                "envelope" => raw = false,
                "raw" => raw = true,
                _ => return Ok(plain(StatusCode::BAD_REQUEST, &format!("unknown format {v:?} (envelope or raw)"))),
            },
            _ => {}
        }
    }
    // Linear in the query's length: the filter is checked against
    // `max_filters` before any pair is built (SPEC §11).
    let max_filters = settings.cfg.max_filters;
    let filter = match Filter::from_lists(&upstreams, &topics, max_filters) {
        Ok(f) => f,
        Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    if let Some(unknown) = upstreams.iter().find(|u| !ep.hub.has_upstream(u)) {
        return Ok(plain(StatusCode::BAD_REQUEST, &format!("unknown upstream {unknown:?}")));
    }

    if ep.live.fetch_add(1, Ordering::SeqCst) >= settings.cfg.max_connections {
        ep.live.fetch_sub(1, Ordering::SeqCst);
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "too many subscribers"));
    }
    let live = Arc::clone(&ep.live);
    let metrics = ep.metrics.subscriber("websocket");
    let queue = SubQueue::bounded(
        settings.cfg.queue_capacity,
        settings.cfg.queue_bytes.bytes(),
        settings.cfg.overflow,
        !raw,
        metrics.clone(),
    );
    let sub = match ep.hub.subscribe(Arc::clone(&queue), filter) {
        Ok(s) => s,
        Err(e) => {
            live.fetch_sub(1, Ordering::SeqCst);
            let status = match e {
                HubError::UnknownUpstream(_) | HubError::TooManyFilters(_) => StatusCode::BAD_REQUEST,
                HubError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            };
            return Ok(plain(status, &e.to_string()));
        }
    };
    let session = Session {
        sub: Some(sub),
        queue,
        raw,
        max_filters,
        metrics,
        live,
        last_heard: Instant::now(),
        left: None,
        fragments: None,
    };
    // A failed handshake drops the session unstarted: its Drop releases the slot.
    let payload = FrameGuard { inner: payload, scan: FrameScan::default(), tripped: false };
    ws::WsResponseBuilder::new(session, &req, payload).frame_size(MAX_CLIENT_FRAME).start()
}

/// Fails a subscriber's byte stream at the first frame header declaring
/// more than [`MAX_CLIENT_FRAME`]. actix's codec checks `frame_size` only
/// once the whole frame is buffered, so without this a client could declare
/// a huge frame and stream it into memory (SPEC §10).
struct FrameGuard<S> {
    inner: S,
    scan: FrameScan,
    /// The error was returned: the stream is over.
    tripped: bool,
}

impl<S> futures_core::Stream for FrameGuard<S>
where
    S: futures_core::Stream<Item = Result<bytes::Bytes, PayloadError>> + Unpin,
{
    type Item = Result<bytes::Bytes, PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.tripped {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.scan.feed(&chunk, MAX_CLIENT_FRAME as u64).is_err() {
                    self.tripped = true;
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

/// One WebSocket subscriber.
pub struct Session {
    /// The hub registration; dropped (unsubscribed) when the session stops.
    sub: Option<Subscription>,
    /// What the hub queued for us.
    queue: Arc<SubQueue>,
    /// `format=raw`: upstream frames only, no events.
    raw: bool,
    /// `subscribers.max_filters` when the session started.
    max_filters: usize,
    /// The `websocket` subscriber counters.
    metrics: SubscriberMetrics,
    /// Released when the session ends.
    live: Arc<AtomicUsize>,
    /// Last frame of any kind from the client.
    last_heard: Instant,
    /// Why the session ended, for `wsgate_subscriber_disconnects_total`.
    left: Option<Left>,
    /// A fragmented message being reassembled: whether it is text, and the
    /// bytes so far (at most [`MAX_CLIENT_FRAME`] in all).
    fragments: Option<(bool, Vec<u8>)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Runs whether or not the actor started; counts each session once.
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    fn event(&self, ctx: &mut ws::WebsocketContext<Self>, value: serde_json::Value) {
        ctx.text(ByteString::from(value.to_string()));
    }

    fn end(&mut self, ctx: &mut ws::WebsocketContext<Self>, reason: Left, close: Option<ws::CloseReason>) {
        if self.left.is_none() {
            self.left = Some(reason);
        }
        ctx.close(close);
        ctx.stop();
    }

    /// `{"op":"subscribe"|"unsubscribe","upstream":..,"topic":..}`; anything
    /// else is answered with an error event, never a disconnect.
    fn control(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Op {
            op: String,
            upstream: Option<String>,
            topic: Option<String>,
        }
        let op: Op = match serde_json::from_str(text) {
            Ok(op) => op,
            Err(e) => {
                let message =
                    format!("expected {{\"op\":\"subscribe\"|\"unsubscribe\",\"upstream\":..,\"topic\":..}}: {e}");
                return self.event(ctx, json!({"event": "error", "message": message}));
            }
        };
        let Some(sub) = self.sub.as_ref() else { return };
        let pair = Pair { upstream: op.upstream.as_deref().map(Arc::from), topic: op.topic.as_deref().map(Arc::from) };
        let result = match op.op.as_str() {
            "subscribe" => sub.add(pair, self.max_filters),
            "unsubscribe" => sub.remove(&pair),
            other => {
                let message = format!("unknown op {other:?} (subscribe or unsubscribe)");
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
                self.event(ctx, serde_json::Value::Object(ack));
            }
            Err(e) => self.event(ctx, json!({"event": "error", "message": e.to_string()})),
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.queue.stream());
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                debug!("Subscriber silent too long; closing.");
                act.end(ctx, Left::Error, closing(close::GOING_AWAY, Some("timeout")));
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sub = None;
        let left = self.left.unwrap_or(Left::Client);
        // What is still queued will never be written: counted, unless the
        // client itself chose to leave.
        match left.leftovers() {
            Some(r) => {
                self.queue.abandon(r);
            }
            None => self.queue.abandon_uncounted(),
        }
        self.metrics.left(left);
    }
}

impl StreamHandler<Next> for Session {
    fn handle(&mut self, next: Next, ctx: &mut Self::Context) {
        match next {
            Next::Items(items) => {
                let mut received = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Item::Message(d) => {
                            if self.raw {
                                match d.raw_text() {
                                    Some(t) => ctx.text(t.clone()),
                                    None => ctx.binary(d.msg.raw.clone()),
                                }
                            } else {
                                ctx.text(d.envelope().clone());
                            }
                            received.push(d.msg.received);
                        }
                        Item::Event(e) => ctx.text(e),
                    }
                }
                self.metrics.delivered(received);
            }
            Next::Closed(Closed::Slow) => self.end(ctx, Left::Slow, closing(close::POLICY, Some("slow consumer"))),
            Next::Closed(Closed::Shutdown | Closed::Reload) => {
                self.end(ctx, Left::Shutdown, closing(close::GOING_AWAY, None))
            }
        }
    }

    /// The queue stream ends only after `Closed`, handled above.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Session {
    /// A complete message from the client: text is a control op; anything
    /// else is answered with an error event.
    fn client_message(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: bool, data: &[u8]) {
        if !text {
            return self.event(ctx, json!({"event": "error", "message": "send control messages as JSON text frames"}));
        }
        match std::str::from_utf8(data) {
            Ok(t) => self.control(ctx, t),
            Err(_) => self.invalid_utf8(ctx),
        }
    }

    /// Text that is not UTF-8 is a protocol failure: close 1007 (RFC 6455 §8.1).
    fn invalid_utf8(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        debug!("Subscriber sent text that is not UTF-8; closing with 1007.");
        self.end(ctx, Left::Error, closing(close::INVALID_DATA, None));
    }

    /// One frame of a fragmented message (RFC 6455 §5.4), reassembled up to
    /// [`MAX_CLIENT_FRAME`] bytes in all (larger closes with 1009).
    fn fragment(&mut self, ctx: &mut ws::WebsocketContext<Self>, item: actix_http::ws::Item) {
        let (first, last, text, chunk) = match item {
            actix_http::ws::Item::FirstText(b) => (true, false, true, b),
            actix_http::ws::Item::FirstBinary(b) => (true, false, false, b),
            actix_http::ws::Item::Continue(b) => (false, false, false, b),
            actix_http::ws::Item::Last(b) => (false, true, false, b),
        };
        if first == self.fragments.is_some() {
            // A new message inside one, or a continuation of nothing.
            debug!("Subscriber sent a continuation frame out of order; closing.");
            return self.end(ctx, Left::Error, closing(close::PROTOCOL, None));
        }
        let (is_text, buf) = self.fragments.get_or_insert_with(|| (text, Vec::new()));
        if buf.len() + chunk.len() > MAX_CLIENT_FRAME {
            self.fragments = None;
            return self.end(ctx, Left::Error, closing(close::TOO_BIG, None));
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

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        if self.left.is_some() {
            return;
        }
        match msg {
            Ok(ws::Message::Text(t)) => self.control(ctx, &t),
            Ok(ws::Message::Binary(b)) => self.client_message(ctx, false, &b),
            Ok(ws::Message::Continuation(item)) => self.fragment(ctx, item),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => self.end(ctx, Left::Client, reason),
            Err(e) => {
                // actix-web-actors turns a text frame that is not UTF-8
                // into this I/O error (ws.rs, `ByteString::try_from`).
                if matches!(&e, ws::ProtocolError::Io(io) if io.to_string().contains("utf-8")) {
                    return self.invalid_utf8(ctx);
                }
                debug!(error = %e, "Subscriber sent an invalid frame; closing.");
                // Oversize frames get 1009 (SPEC §10), from actix's own check
                // or from the FrameGuard (which reaches us as an I/O error).
                let oversize = match &e {
                    ws::ProtocolError::Overflow => true,
                    ws::ProtocolError::Io(io) => io.to_string() == PayloadError::Overflow.to_string(),
                    _ => false,
                };
                let code = if oversize { close::TOO_BIG } else { close::PROTOCOL };
                self.end(ctx, Left::Error, closing(code, None));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame headers are followed across chunks; a declared length over the
    /// cap fails at the header, before any payload is buffered.
    #[test]
    fn frame_scan_stops_oversize_frames_at_the_header() {
        fn header(len: u64, masked: bool) -> Vec<u8> {
            let m = if masked { 0x80 } else { 0 };
            let mut h = vec![0x82];
            match len {
                0..=125 => h.push(m | len as u8),
                126..=0xffff => {
                    h.push(m | 126);
                    h.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    h.push(m | 127);
                    h.extend_from_slice(&len.to_be_bytes());
                }
            }
            if masked {
                h.extend_from_slice(&[1, 2, 3, 4]);
            }
            h
        }
        let limit = 64 * 1024;
        // Several frames in one chunk, at and under the cap.
        let mut ok = Vec::new();
        for len in [0, 5, 125, 126, 300, limit] {
            ok.extend(header(len, true));
            ok.extend(std::iter::repeat_n(0u8, len as usize));
        }
        let mut scan = FrameScan::default();
        assert_eq!(scan.feed(&ok, limit), Ok(()));
        // The same bytes one at a time: boundaries across chunks.
        let mut scan = FrameScan::default();
        for b in &ok {
            assert_eq!(scan.feed(std::slice::from_ref(b), limit), Ok(()));
        }
        // Over the cap: refused at the header, whatever the length encoding.
        for len in [limit + 1, 70 * 1024, 1 << 30, u64::MAX] {
            let mut scan = FrameScan::default();
            assert_eq!(scan.feed(&header(len, true), limit), Err(len), "{len}");
            let mut scan = FrameScan::default();
            assert_eq!(scan.feed(&ok, limit), Ok(()));
            let h = header(len, false);
            assert_eq!(scan.feed(&h[..3], limit), Ok(()));
            assert_eq!(scan.feed(&h[3..], limit), Err(len), "{len} split");
        }
    }

    /// Repeated keys, percent escapes and `+` decode; broken escapes stay literal.
    #[test]
    fn query_parsing() {
        let q = parse_query("upstream=a&upstream=b%2Dc&topic=x+y&format=raw&bad=%zz&end=%4");
        assert_eq!(
            q,
            vec![
                ("upstream".into(), "a".into()),
                ("upstream".into(), "b-c".into()),
                ("topic".into(), "x y".into()),
                ("format".into(), "raw".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }
}
