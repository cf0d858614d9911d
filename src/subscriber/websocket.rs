//! The `/ws` subscriber endpoint (SPEC §5): auth, origin, limits, filters,
//! the handshake; then a [`Session`] actor for the control side and an
//! [`Outbound`] response body for the data.
//!
//! The session is written on actix-web and actix-http's WebSocket codec
//! directly (no actix-web-actors): the body pulls the subscriber's hub queue
//! only when actix-web polls it, which it does only while the HTTP/1 write
//! buffer has room, and writes each message's shared frame. So a client
//! that stops reading stops the pull, and the hub applies the overflow
//! policy on the queue (`fanout::SubQueue`). The socket itself is bounded by
//! a small send buffer and TCP_USER_TIMEOUT set when the connection is
//! accepted ([`crate::transport::socket::tune_accepted`]).

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix::prelude::*;
use actix_web::body::{BodyStream, BoxBody};
use actix_web::{web, HttpRequest, HttpResponse};

pub use super::auth::SubscriberSettings;
use super::outbound::{Outbound, SharedOutbox};
use super::session::ClientFrames;
pub use super::session::Session;
use crate::fanout::{check_since, parse_since, Filter, Hub, HubError, SubQueue};
use crate::model::ShutdownFlag;
use crate::telemetry::Metrics;

/// How long the HTTP layer keeps a connection after a `/ws` response ended
/// (our close frame written) while the client has not closed TCP.
/// actix-web's HTTP/1 dispatcher then *lingers*, reading and discarding,
/// until the client closes or `client_disconnect_timeout` passes (1 s by
/// default). RFC 6455 §7.1.1 wants the server to close the TCP connection
/// first, and clients wait about a second for it: at 1 s the two timers
/// raced and the Autobahn TestSuite graded our closes UNCLEAN or "failed
/// by client" (docs/conformance.md). Not less than 500 ms: actix-http
/// computes the deadline from its cached clock, refreshed every 500 ms,
/// and a deadline already past when the timer is set never wakes the
/// connection (it then lingers until the client gives up). Set
/// server-wide in `app.rs` (it also bounds how long an unread plain-HTTP
/// request body is drained).
pub const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_millis(700);

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
    let mut since = Vec::new();
    let run = query.iter().find(|(k, _)| k == "run").map(|(_, v)| v.as_str());
    for (k, v) in &query {
        match k.as_str() {
            "upstream" => upstreams.push(v.clone()),
            "topic" => topics.push(v.clone()),
            "since" => match parse_since(v, run) {
                Ok(pairs) => since.extend(pairs),
                Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &e)),
            },
            "format" => match v.as_str() {
                "envelope" => raw = false,
                "raw" => raw = true,
                _ => return Ok(plain(StatusCode::BAD_REQUEST, &format!("unknown format {v:?} (envelope or raw)"))),
            },
            _ => {}
        }
    }
    if let Err(e) = check_since(&since) {
        return Ok(plain(StatusCode::BAD_REQUEST, &e));
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

    // Checked before anything is counted: a request that is no WebSocket
    // upgrade costs nothing.
    let mut handshake = match actix_http::ws::handshake(req.head()) {
        Ok(h) => h,
        Err(e) => return Err(e.into()),
    };
    if ep.live.fetch_add(1, Ordering::SeqCst) >= settings.cfg.max_connections {
        ep.live.fetch_sub(1, Ordering::SeqCst);
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, "too many subscribers"));
    }
    let live = Arc::clone(&ep.live);
    let metrics = ep.metrics.subscriber("websocket");
    let queue = SubQueue::keyed(
        settings.cfg.queue_capacity,
        settings.cfg.queue_bytes.bytes(),
        settings.cfg.overflow,
        &settings.cfg.conflate_key,
        !raw,
        metrics.clone(),
    );
    let sub = match ep.hub.subscribe_from(Arc::clone(&queue), filter, &since) {
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
    let outbox = SharedOutbox::default();
    let body_queue = Arc::clone(&queue);
    let body_metrics = metrics.clone();
    let session = Session::create(|ctx| {
        ctx.add_stream(ClientFrames::new(payload, Rc::clone(&outbox)));
        Session {
            sub: Some(sub),
            queue,
            outbox: Rc::clone(&outbox),
            max_filters,
            metrics,
            live,
            last_heard: Instant::now(),
            left: None,
            fragments: None,
        }
    });
    let body = Outbound::new(body_queue, outbox, raw, body_metrics, session.recipient());
    let res = handshake.message_body(BoxBody::new(BodyStream::new(body)))?;
    Ok(HttpResponse::from(res))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame_guard::FrameScan;

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
