//! Fan-out end to end: real upstream servers, the real gateway (in-process or
//! the binary), real WebSocket subscribers over TCP.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{eventually, metric, next_json, settings, ticking_feed, ws_connect, Client, Feed};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use wsgate::app::Gateway;
use wsgate::config::{DecodeFormat, Dur, Overflow, Secret, Settings, UpstreamConfig};

const LONG: Duration = Duration::from_secs(30);

/// A feed that, once `go` is set, sends `count` JSON messages (`i` from 1,
/// topics alternating trade/book, `pad` bytes of padding), then a `tick`
/// every 100 ms (so drops at the end of the burst get announced too).
fn burst_feed(go: Arc<AtomicBool>, count: usize, pad: usize) -> Feed {
    Feed::start(move |mut c| {
        let go = Arc::clone(&go);
        async move {
            while !go.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let padding = "x".repeat(pad);
            for i in 1..=count {
                let topic = if i % 2 == 0 { "book" } else { "trade" };
                let text = format!(r#"{{"type":"{topic}","i":{i},"pad":"{padding}"}}"#);
                if c.ws.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            let _ = c.ws.flush().await;
            let mut i = count;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                i += 1;
                if !c.send_text(format!(r#"{{"type":"tick","i":{i}}}"#)).await {
                    return;
                }
            }
        }
    })
}

async fn start(s: Settings) -> Gateway {
    support::logs();
    Gateway::start(s).await.expect("gateway starts")
}

fn ws_url(gw: &Gateway, query: &str) -> String {
    format!("ws://{}/ws{query}", gw.addr)
}

fn metrics(gw: &Gateway) -> String {
    String::from_utf8(gw.metrics.encode()).unwrap()
}

/// Reads envelopes until `n` messages (events skipped); returns their JSON.
async fn read_messages(ws: &mut Client, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = next_json(ws, LONG).await;
        if v.get("event").is_none() {
            out.push(v);
        }
    }
    out
}

/// Runs `f` for each of `n` subscribers on a separate multi-thread runtime,
/// so clients do not share a thread with the gateway's actors.
fn on_client_runtime<F, Fut>(n: usize, f: F) -> std::thread::JoinHandle<Vec<Result<(), String>>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let f = Arc::new(f);
            let tasks: Vec<_> = (0..n).map(|i| tokio::spawn((f)(i))).collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        })
    })
}

/// 200 concurrent subscribers each get all 20 000 messages, in order, no gap.
#[actix_rt::test]
async fn two_hundred_subscribers_get_every_message() {
    const SUBS: usize = 200;
    const COUNT: u64 = 20_000;
    let go = Arc::new(AtomicBool::new(false));
    let feed = burst_feed(Arc::clone(&go), COUNT as usize, 120);
    let mut s = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.queue_capacity = 25_000;
    let gw = start(s).await;
    eventually(LONG, "upstream connected", || gw.board.upstreams()[0].state() == wsgate::model::LinkState::Connected)
        .await;

    let url = ws_url(&gw, "");
    let clients = on_client_runtime(SUBS, move |i| {
        let url = url.clone();
        async move {
            let mut ws = ws_connect(&url, &[]).await.map_err(|s| format!("client {i}: HTTP {s}"))?;
            let mut expect = 1u64;
            while expect <= COUNT {
                let frame = tokio::time::timeout(Duration::from_secs(120), ws.next())
                    .await
                    .map_err(|_| format!("client {i}: stalled at seq {expect}"))?;
                if matches!(frame, Some(Ok(Message::Ping(_)))) {
                    continue;
                }
                let Some(Ok(Message::Text(t))) = frame else { return Err(format!("client {i}: {frame:?}")) };
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v.get("event").is_some() {
                    continue;
                }
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq != expect || v["data"]["i"].as_u64() != Some(seq) {
                    return Err(format!("client {i}: expected seq {expect}, got {seq}"));
                }
                expect += 1;
            }
            Ok(())
        }
    });
    eventually(LONG, "200 subscribers", || {
        metric(&metrics(&gw), r#"wsgate_subscribers{kind="websocket"}"#) == Some(SUBS as f64)
    })
    .await;
    let started = Instant::now();
    go.store(true, Ordering::SeqCst);
    let results = loop {
        if clients.is_finished() {
            break clients.join().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(180), "subscribers did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{} subscribers failed, first: {:?}", failures.len(), failures.first());
    eprintln!("200 x 20000 envelopes delivered in {:?}", started.elapsed());
    let text = metrics(&gw);
    assert_eq!(metric(&text, r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#), Some(0.0));
    assert!(
        metric(&text, r#"wsgate_subscriber_messages_total{kind="websocket"}"#).unwrap() >= (SUBS as u64 * COUNT) as f64
    );
    gw.shutdown().await;
}

/// Under `disconnect`, a subscriber that stops reading is closed with 1008
/// "slow consumer" (seen once it reads again), and its drops are counted.
#[actix_rt::test]
async fn disconnect_policy_closes_a_slow_consumer_with_1008() {
    let go = Arc::new(AtomicBool::new(false));
    let feed = burst_feed(Arc::clone(&go), 20_000, 1000);
    let mut s = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.queue_capacity = 64;
    s.subscribers.overflow = Overflow::Disconnect;
    let gw = start(s).await;
    eventually(LONG, "connected", || gw.board.upstreams()[0].state() == wsgate::model::LinkState::Connected).await;
    let mut slow = ws_connect(&ws_url(&gw, ""), &[]).await.unwrap();
    go.store(true, Ordering::SeqCst);
    eventually(LONG, "slow subscriber dropped", || {
        metric(&metrics(&gw), r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#).unwrap_or(0.0)
            > 0.0
    })
    .await;
    // Now read: what was buffered, then the close.
    let close = loop {
        match tokio::time::timeout(LONG, slow.next()).await.expect("frames") {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "slow consumer");
    eventually(LONG, "counted as slow", || {
        metric(&metrics(&gw), r#"wsgate_subscriber_disconnects_total{reason="slow"}"#) == Some(1.0)
    })
    .await;
    gw.shutdown().await;
}

/// Under drop_newest, a stalled subscriber gets a gap event naming exactly
/// how many messages it missed, before the next message.
#[actix_rt::test]
async fn gap_events_account_for_every_drop() {
    let go = Arc::new(AtomicBool::new(false));
    let feed = burst_feed(Arc::clone(&go), 20_000, 1000);
    let mut s = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.queue_capacity = 64;
    s.subscribers.overflow = Overflow::DropNewest;
    let gw = start(s).await;
    eventually(LONG, "connected", || gw.board.upstreams()[0].state() == wsgate::model::LinkState::Connected).await;
    let mut ws = ws_connect(&ws_url(&gw, ""), &[]).await.unwrap();
    go.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    eventually(LONG, "all 20000 published", || gw.board.upstreams()[0].messages() == 20_000).await;
    eprintln!("published in {:?}", t0.elapsed());
    let mut last_seq = 0u64;
    let mut pending_gap = 0u64;
    let mut gaps = 0;
    let mut missed_total = 0;
    let mut delivered = 0u64;
    // Read until a tick after the burst: by then every drop was announced.
    while last_seq <= 20_000 {
        let v = next_json(&mut ws, LONG).await;
        match v["event"].as_str() {
            Some("gap") => {
                assert_eq!(v["upstream"], "feed");
                pending_gap += v["missed"].as_u64().unwrap();
                gaps += 1;
            }
            Some(_) => {}
            None => {
                let seq = v["seq"].as_u64().unwrap();
                assert_eq!(seq, last_seq + pending_gap + 1, "gap events do not account for the jump to {seq}");
                missed_total += pending_gap;
                pending_gap = 0;
                last_seq = seq;
                delivered += 1;
            }
        }
    }
    eprintln!("read in {:?}: delivered {delivered}, {gaps} gap events, {missed_total} missed", t0.elapsed());
    assert!(gaps > 0 && missed_total > 0, "the subscriber never fell behind");
    let dropped =
        metric(&metrics(&gw), r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#).unwrap();
    assert_eq!(dropped as u64, missed_total);
    assert_eq!(delivered + missed_total, last_seq);
    gw.shutdown().await;
}

/// Filters from the query, subscribe/unsubscribe ops with acks, error events
/// for garbage, state events for followed upstreams only.
#[actix_rt::test]
async fn filters_control_ops_and_garbage() {
    let a = ticking_feed(Duration::from_millis(10));
    let b = ticking_feed(Duration::from_millis(10));
    let gw = start(settings(vec![UpstreamConfig::new("a", a.url("/")), UpstreamConfig::new("b", b.url("/"))])).await;
    eventually(LONG, "both connected", || {
        gw.board.upstreams().iter().all(|u| u.state() == wsgate::model::LinkState::Connected)
    })
    .await;
    let mut ws = ws_connect(&ws_url(&gw, "?upstream=a&topic=trade"), &[]).await.unwrap();
    let first = next_json(&mut ws, LONG).await;
    assert_eq!(first, serde_json::json!({"event":"upstream","upstream":"a","state":"connected"}));
    for m in read_messages(&mut ws, 10).await {
        assert_eq!((m["upstream"].as_str(), m["topic"].as_str()), (Some("a"), Some("trade")), "{m}");
    }

    ws.send(Message::text(r#"{"op":"subscribe","upstream":"b"}"#)).await.unwrap();
    let mut saw_b = false;
    let mut acked = false;
    while !(acked && saw_b) {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "ack" {
            assert_eq!(v, serde_json::json!({"event":"ack","op":"subscribe","upstream":"b"}));
            acked = true;
        } else if v["upstream"] == "b" {
            assert!(acked, "b data before the ack");
            saw_b = true;
        }
    }

    ws.send(Message::text(r#"{"op":"unsubscribe","upstream":"a","topic":"trade"}"#)).await.unwrap();
    loop {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "ack" {
            assert_eq!(v["op"], "unsubscribe");
            break;
        }
    }
    for m in read_messages(&mut ws, 20).await {
        assert_eq!(m["upstream"], "b", "{m}");
    }

    for garbage in ["hello", r#"{"op":"explode"}"#, r#"{"op":"subscribe","upstream":"zzz"}"#, r#"{"op":1}"#] {
        ws.send(Message::text(garbage)).await.unwrap();
        loop {
            let v = next_json(&mut ws, LONG).await;
            if v["event"] == "error" {
                assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
                break;
            }
        }
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    loop {
        if next_json(&mut ws, LONG).await["event"] == "error" {
            break;
        }
    }
    // Still subscribed and served after all that.
    assert_eq!(read_messages(&mut ws, 3).await.len(), 3);
    gw.shutdown().await;
}

/// Raw subscribers get the upstream frames untouched (text and binary) and no events.
#[actix_rt::test]
async fn raw_format_passes_frames_untouched() {
    let text_feed = Feed::start(|mut c| async move {
        loop {
            if !c.send_text(r#"{"type":"t",  "spaced" : true}"#).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let bin_feed = Feed::start(|mut c| async move {
        loop {
            if c.ws.send(Message::binary(vec![0u8, 159, 146, 150])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut bin = UpstreamConfig::new("bin", bin_feed.url("/"));
    bin.decode.format = DecodeFormat::Binary;
    let gw = start(settings(vec![UpstreamConfig::new("text", text_feed.url("/")), bin])).await;
    let mut t = ws_connect(&ws_url(&gw, "?upstream=text&format=raw"), &[]).await.unwrap();
    let mut b = ws_connect(&ws_url(&gw, "?upstream=bin&format=raw"), &[]).await.unwrap();
    for _ in 0..3 {
        match tokio::time::timeout(LONG, t.next()).await.unwrap() {
            Some(Ok(Message::Text(s))) => assert_eq!(s.as_str(), r#"{"type":"t",  "spaced" : true}"#),
            other => panic!("{other:?}"),
        }
        match tokio::time::timeout(LONG, b.next()).await.unwrap() {
            Some(Ok(Message::Binary(v))) => assert_eq!(&v[..], &[0u8, 159, 146, 150]),
            other => panic!("{other:?}"),
        }
    }
    // The envelope of a binary message carries base64.
    let mut e = ws_connect(&ws_url(&gw, "?upstream=bin"), &[]).await.unwrap();
    let m = read_messages(&mut e, 1).await.remove(0);
    assert_eq!(m["data"], "AJ+Slg==");
    gw.shutdown().await;
}

/// 401 without or with a wrong token (header or query); 403 for a foreign
/// Origin; no Origin is fine; 400 for unknown upstreams and formats; 503
/// past max_connections.
#[actix_rt::test]
async fn auth_origin_and_limit_answers() {
    let feed = ticking_feed(Duration::from_millis(50));
    let mut s = settings(vec![UpstreamConfig::new("a", feed.url("/"))]);
    s.subscribers.auth_token = Some(Secret::new("s3cret"));
    s.subscribers.allowed_origins = vec!["https://app.example".into()];
    s.subscribers.max_connections = 3;
    let gw = start(s).await;
    let url = ws_url(&gw, "");
    assert_eq!(ws_connect(&url, &[]).await.err(), Some(401));
    assert_eq!(ws_connect(&url, &[("authorization", "Bearer nope")]).await.err(), Some(401));
    assert_eq!(ws_connect(&ws_url(&gw, "?token=nope"), &[]).await.err(), Some(401));
    let ok = [("authorization", "Bearer s3cret")];
    assert_eq!(ws_connect(&url, &[ok[0], ("origin", "https://evil.example")]).await.err(), Some(403));
    assert_eq!(ws_connect(&ws_url(&gw, "?upstream=zzz"), &ok).await.err(), Some(400));
    assert_eq!(ws_connect(&ws_url(&gw, "?format=xml"), &ok).await.err(), Some(400));
    let _c1 = ws_connect(&url, &ok).await.expect("bearer header");
    let _c2 = ws_connect(&ws_url(&gw, "?token=s3cret"), &[]).await.expect("token query");
    let _c3 = ws_connect(&url, &[ok[0], ("origin", "https://app.example")]).await.expect("allowed origin");
    assert_eq!(ws_connect(&url, &ok).await.err(), Some(503), "max_connections");
    drop(_c1);
    eventually(LONG, "a slot frees up", || {
        metric(&metrics(&gw), r#"wsgate_subscribers{kind="websocket"}"#) == Some(2.0)
    })
    .await;
    let _c4 = ws_connect(&url, &ok).await.expect("slot reused");
    gw.shutdown().await;
}

/// Subscribers follow upstream state changes; shutdown closes them with 1001.
#[actix_rt::test]
async fn state_events_and_shutdown_close() {
    let feed = Feed::start(|mut c| async move {
        if c.index == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return; // drop the link once
        }
        c.drain().await
    });
    let mut u = UpstreamConfig::new("a", feed.url("/"));
    u.reconnect.initial = Dur::ms(100);
    let gw = start(settings(vec![u])).await;
    eventually(LONG, "connected", || gw.board.upstreams()[0].state() == wsgate::model::LinkState::Connected).await;
    let mut ws = ws_connect(&ws_url(&gw, ""), &[]).await.unwrap();
    let mut states = Vec::new();
    while states.len() < 4 {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "upstream" {
            states.push(v["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states, ["connected", "backoff", "connecting", "connected"]);
    let shutdown = actix_rt::spawn(gw.shutdown());
    let close = loop {
        match tokio::time::timeout(LONG, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(c))) => break c,
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Away));
    shutdown.await.unwrap();
}

/// A client that pipelines thousands of control messages before it reads
/// gets every answer, in order, and is not closed: its frames are read only
/// as fast as the answers are written (the session's outbox stays bounded).
#[actix_rt::test]
async fn pipelined_control_messages_are_all_answered() {
    const N: usize = 2000;
    let a = ticking_feed(Duration::from_millis(50));
    let gw = start(settings(vec![UpstreamConfig::new("a", a.url("/"))])).await;
    let mut ws = ws_connect(&ws_url(&gw, "?upstream=a&topic=nothing"), &[]).await.unwrap();
    for i in 0..N {
        ws.feed(Message::text(format!("garbage {i}"))).await.unwrap();
    }
    ws.flush().await.unwrap();
    let mut errors = 0;
    while errors < N {
        let frame = tokio::time::timeout(LONG, ws.next()).await.expect("an answer in time");
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["event"] == "error" {
                    errors += 1;
                } else {
                    assert_eq!(v["event"], "upstream", "{v}");
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("after {errors} answers: {other:?}"),
        }
    }
    ws.send(Message::text(r#"{"op":"subscribe","upstream":"a"}"#)).await.unwrap();
    loop {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "ack" {
            break;
        }
    }
    gw.shutdown().await;
}
