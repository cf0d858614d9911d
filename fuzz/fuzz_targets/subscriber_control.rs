//! The real `/ws` endpoint and `Session` (SPEC §5, §10), in-process: a
//! handshake request with a query, then client bytes through actix's
//! WebSocket codec into `Session::control` and the hub.
//!
//! `Session::control` needs an actor context, so the target builds one the
//! way actix-web does: `websocket::endpoint` with a test request and a
//! payload stream, on an actix system kept for the whole run.
//!
//! Input layout: byte 0 is the mode; then a query (up to a 0xFF byte); then
//! either raw client bytes (mode bit 0) or a list of messages, each `tag,
//! len, payload[len]`, that the target frames itself (masked, valid), so
//! the fuzzer spends its time on control JSON rather than on framing.
//!
//! Checked, beyond "no panic": the answer is a 101 or a plain 4xx/5xx;
//! every server text frame is a JSON object with an `event`; with valid
//! frames only, every text or binary message gets exactly one `ack` or
//! `error` event (garbage is answered, never a disconnect), and the server
//! sends no close frame except in answer to the client's.

#![no_main]

use std::cell::RefCell;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::{web, FromRequest};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsgate::config::SubscribersConfig;
use wsgate::fanout::Hub;
use wsgate::model::ShutdownFlag;
use wsgate::subscriber::websocket::{endpoint, SubscriberSettings, WsEndpoint};
use wsgate::telemetry::Metrics;

thread_local! {
    static SYSTEM: actix_rt::SystemRunner = actix_rt::System::new();
    static ENDPOINT: RefCell<Option<WsEndpoint>> = const { RefCell::new(None) };
}

/// One endpoint for the whole run, with two upstreams, as `app` builds it.
fn ws_endpoint() -> WsEndpoint {
    ENDPOINT.with(|e| {
        e.borrow_mut()
            .get_or_insert_with(|| {
                let hub = Hub::new();
                // Publishers register the upstreams; keep them for the run.
                std::mem::forget(hub.publisher("btcusd"));
                std::mem::forget(hub.publisher("eth"));
                let cfg = SubscribersConfig::default();
                WsEndpoint {
                    hub,
                    settings: Arc::new(RwLock::new(SubscriberSettings { cfg, token: None })),
                    shutdown: ShutdownFlag::default(),
                    metrics: Metrics::new(),
                    live: Arc::new(AtomicUsize::new(0)),
                }
            })
            .clone()
    })
}

/// A masked client frame.
fn frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Control ops built from parts, so valid JSON ops are common.
fn json_op(p: &[u8]) -> Vec<u8> {
    let b = |i: usize| p.get(i).copied().unwrap_or(0);
    let ops = ["subscribe", "unsubscribe", "SUBSCRIBE", "", "publish"];
    let ups = ["btcusd", "eth", "nope", "", "btcusd\u{0}"];
    let mut doc = serde_json::Map::new();
    if b(0) & 1 == 0 {
        doc.insert("op".into(), ops[b(1) as usize % ops.len()].into());
    }
    match b(0) >> 1 & 3 {
        0 => {}
        1 => {
            doc.insert("upstream".into(), ups[b(2) as usize % ups.len()].into());
        }
        2 => {
            doc.insert("upstream".into(), serde_json::Value::Null);
        }
        _ => {
            doc.insert("upstream".into(), b(2).into());
        }
    }
    if b(0) & 8 != 0 {
        let topic = String::from_utf8_lossy(p.get(3..).unwrap_or_default()).into_owned();
        doc.insert("topic".into(), topic.into());
    }
    if b(0) & 16 != 0 {
        doc.insert("extra".into(), true.into());
    }
    serde_json::Value::Object(doc).to_string().into_bytes()
}

/// Server frames (unmasked): (fin, opcode, payload); stops at a truncated one.
fn server_frames(mut b: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            break;
        }
        out.push((fin, opcode, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (query, rest) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..rest.len().min(32)], &rest[rest.len().min(32)..]),
    };
    // The query as a client can send it: URI characters, the rest escaped.
    let query: String = query
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'&' | b'=' | b'%' | b'+' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();

    let raw_mode = mode & 1 == 1;
    let mut client = Vec::new();
    let mut expected_answers = 0usize;
    let mut fragments = 0usize;
    let mut sent_close = false;
    if raw_mode {
        client.extend_from_slice(rest);
    } else {
        let mut r = rest;
        while r.len() >= 2 && !sent_close {
            let (tag, len) = (r[0], r[1] as usize);
            let len = len.min(r.len() - 2);
            let p = &r[2..2 + len];
            r = &r[2 + len..];
            let mask = [tag, 0x5a, len as u8, 0xa5];
            match tag % 8 {
                0 | 1 => {
                    frame(&mut client, true, 1, &json_op(p), mask);
                    expected_answers += 1;
                }
                2 => {
                    // Any text (made valid UTF-8): garbage gets an error event.
                    frame(&mut client, true, 1, String::from_utf8_lossy(p).as_bytes(), mask);
                    expected_answers += 1;
                }
                3 => {
                    frame(&mut client, true, 2, p, mask);
                    expected_answers += 1;
                }
                4 => frame(&mut client, true, 9, &p[..p.len().min(125)], mask),
                5 => frame(&mut client, true, 10, &p[..p.len().min(125)], mask),
                6 => {
                    // A fragmented text message: first frame and last frame.
                    let text = json_op(p);
                    let cut = text.len() / 2;
                    frame(&mut client, false, 1, &text[..cut], mask);
                    frame(&mut client, true, 0, &text[cut..], mask);
                    fragments += 1;
                }
                _ => {
                    let code = 1000u16.to_be_bytes();
                    frame(&mut client, true, 8, &code, mask);
                    sent_close = true;
                }
            }
        }
    }
    // Chunks cut where the mode says, so the codec sees partial frames.
    let step = 1 + (mode >> 1) as usize * 7;
    let chunks: Vec<Result<Bytes, PayloadError>> = client.chunks(step).map(|c| Ok(Bytes::copy_from_slice(c))).collect();

    let ep = ws_endpoint();
    let (live, hub) = (Arc::clone(&ep.live), ep.hub.clone());
    let (status, out) = SYSTEM.with(|sys| {
        sys.block_on(async move {
            let (req, _) = actix_web::test::TestRequest::get()
                .uri(&format!("/ws?{query}"))
                .insert_header(("upgrade", "websocket"))
                .insert_header(("connection", "Upgrade"))
                .insert_header(("sec-websocket-version", "13"))
                .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
                .to_http_parts();
            let stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
                Box::pin(futures_util::stream::iter(chunks));
            let mut payload = Payload::from(stream);
            let payload = web::Payload::from_request(&req, &mut payload).await.expect("payload extractor");
            let resp = endpoint(req, payload, web::Data::new(ep)).await.expect("endpoint answers");
            let status = resp.status().as_u16();
            let body = actix_web::body::to_bytes(resp.into_body()).await.map(|b| b.to_vec()).unwrap_or_default();
            (status, body)
        })
    });
    // Whatever happened, the session released its slot and its subscription.
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0, "a session slot leaked");
    assert_eq!(hub.subscriber_count(), 0, "a hub subscription leaked");
    if status != 101 {
        assert!(matches!(status, 400 | 401 | 403 | 503), "status {status}");
        return;
    }
    let frames = server_frames(&out);
    let mut answers = 0usize;
    let mut closed = false;
    for (fin, opcode, payload) in &frames {
        assert!(*fin, "server frames are unfragmented");
        match opcode {
            1 => {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("server text is JSON");
                match v["event"].as_str() {
                    Some("ack" | "error") => answers += 1,
                    Some("upstream") => {}
                    other => panic!("unexpected event {other:?}: {v}"),
                }
            }
            8 => closed = true,
            9 | 10 => {}
            other => panic!("server sent opcode {other}"),
        }
    }
    if !raw_mode {
        // Fragments are answered once per frame or once per message.
        assert!(
            answers >= expected_answers + fragments && answers <= expected_answers + 2 * fragments,
            "{answers} answers for {expected_answers} messages and {fragments} fragmented ones"
        );
        assert!(!closed || sent_close, "server closed a session that sent only valid frames");
    }
});
