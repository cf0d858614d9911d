//! Replay (SPEC §14): `hello`, `?since=` and the `resume` op against a feed
//! that streams during the replay; gaps the history cannot fill; another run.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use support::{eventually, http_get, metric, next_json, settings, ws_connect, Client, Feed};
use tokio_tungstenite::tungstenite::Message;
use wsgate::app::Gateway;
use wsgate::config::{Overflow, Settings, UpstreamConfig};

const LONG: Duration = Duration::from_secs(30);

/// A feed that sends `{"type":"t","i":N}` (N from 1), `burst` messages
/// every millisecond, forever.
fn streaming_feed(burst: u64) -> Feed {
    Feed::start(move |mut c| async move {
        let mut i = 0u64;
        loop {
            for _ in 0..burst {
                i += 1;
                if !c.send_text(format!(r#"{{"type":"t","i":{i}}}"#)).await {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

async fn start(history: usize) -> (Feed, Gateway) {
    start_with(history, 1024, 1).await
}

/// A gateway with `history` and `queue_capacity`, fed `burst` messages per ms.
async fn start_with(history: usize, capacity: usize, burst: u64) -> (Feed, Gateway) {
    support::logs();
    let feed = streaming_feed(burst);
    let mut s: Settings = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.history = history;
    s.subscribers.queue_capacity = capacity;
    let gw = Gateway::start(s).await.expect("gateway starts");
    (feed, gw)
}

fn published(gw: &Gateway) -> u64 {
    let text = String::from_utf8(gw.metrics.encode()).unwrap();
    metric(&text, r#"wsgate_upstream_messages_total{upstream="feed"}"#).unwrap_or(0.0) as u64
}

/// Reads the `hello` event and the state event; returns the run id.
async fn greeting(ws: &mut Client) -> String {
    let hello = next_json(ws, LONG).await;
    assert_eq!(hello["event"], "hello", "{hello}");
    let state = next_json(ws, LONG).await;
    assert_eq!(state["event"], "upstream", "{state}");
    hello["run"].as_str().expect("a run id").to_string()
}

/// Reads `n` messages that must be `from`, `from + 1`, ... (each carrying
/// the feed's own number); any event is a failure. Returns the next seq.
async fn consecutive(ws: &mut Client, from: u64, n: u64) -> u64 {
    let mut want = from;
    while want < from + n {
        let v = next_json(ws, LONG).await;
        assert!(v.get("event").is_none(), "no event expected while at {want}: {v}");
        assert_eq!(v["seq"].as_u64(), Some(want), "expected seq {want}: {v}");
        assert_eq!(v["data"]["i"].as_u64(), Some(want), "the feed's number is the seq");
        want += 1;
    }
    want
}

/// Reads messages until one with seq >= `at`; returns its seq.
async fn read_to(ws: &mut Client, at: u64) -> u64 {
    loop {
        let v = next_json(ws, LONG).await;
        if let Some(seq) = v["seq"].as_u64() {
            if seq >= at {
                return seq;
            }
        }
    }
}

/// A subscriber that reconnects with `since` (the last seq it saw) and the
/// run gets everything after it from the history and then live, while the
/// feed keeps streaming: no gap, no duplicate, though the replay is several
/// times the subscriber's queue (1024). The `resume` op on the live
/// connection goes back the same way.
#[actix_rt::test]
async fn replay_since_and_resume_lose_nothing() {
    let (_feed, gw) = start_with(100_000, 1024, 2).await;
    let url = format!("ws://{}/ws", gw.addr);
    let mut ws = ws_connect(&url, &[]).await.expect("subscriber connects");
    let run = greeting(&mut ws).await;
    let last = read_to(&mut ws, 200).await;
    ws.close(None).await.expect("close");
    drop(ws);
    eventually(LONG, "the feed streams on while we are away", || published(&gw) >= last + 6000).await;

    let mut ws = ws_connect(&format!("{url}?since=feed:{last}&run={run}"), &[]).await.expect("reconnects");
    assert_eq!(greeting(&mut ws).await, run, "same process, same run");
    let away = published(&gw) - last;
    // The replay (what came while away) and then well into live traffic.
    let next = consecutive(&mut ws, last + 1, away + 5000).await;
    let during = published(&gw) - last - away;
    eprintln!("replay: {away} messages away, {during} more while reading {} in order", away + 5000);

    // resume on the open connection: back 300, then on without a seam.
    let after = next - 3000;
    let op = format!(r#"{{"op":"resume","upstream":"feed","after":{after}}}"#);
    ws.send(Message::text(op)).await.expect("send resume");
    let mut want = next;
    loop {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "ack" {
            assert_eq!(v["op"], "resume");
            assert_eq!(v["after"], after);
            break;
        }
        assert_eq!(v["seq"].as_u64(), Some(want), "before the ack the stream goes on: {v}");
        want += 1;
    }
    assert!(want > after, "resume goes back");
    consecutive(&mut ws, after + 1, 5000).await;
}

/// What the history no longer holds is announced as a gap with reason
/// `history`, followed by what it holds, consecutive.
#[actix_rt::test]
async fn too_small_a_history_is_a_gap() {
    let (_feed, gw) = start(50).await;
    let url = format!("ws://{}/ws", gw.addr);
    let mut ws = ws_connect(&url, &[]).await.expect("subscriber connects");
    greeting(&mut ws).await;
    let last = read_to(&mut ws, 100).await;
    drop(ws);
    eventually(LONG, "the feed streams on", || published(&gw) >= last + 300).await;

    let mut ws = ws_connect(&format!("{url}?since=feed:{last}"), &[]).await.expect("reconnects");
    greeting(&mut ws).await;
    let gap = next_json(&mut ws, LONG).await;
    assert_eq!((gap["event"].as_str(), gap["reason"].as_str()), (Some("gap"), Some("history")), "{gap}");
    let missed = gap["missed"].as_u64().expect("missed");
    assert!(missed >= 250, "at least what is older than the 50 kept: {missed}");
    consecutive(&mut ws, last + 1 + missed, 200).await;
}

/// A `since` from another run gets `reset` and then live; a bad `since` is
/// a 400 naming the parameter; `hello` exists only with replay on, and
/// never for raw subscribers.
#[actix_rt::test]
async fn reset_bad_since_and_hello_rules() {
    let (_feed, gw) = start(1000).await;
    let url = format!("ws://{}/ws", gw.addr);
    let mut ws = ws_connect(&format!("{url}?since=feed:5&run=not-this-run"), &[]).await.expect("connects");
    greeting(&mut ws).await;
    let reset = next_json(&mut ws, LONG).await;
    assert_eq!(reset, serde_json::json!({"event": "reset", "upstream": "feed"}));
    let first = read_to(&mut ws, 1).await;
    let mut want = consecutive(&mut ws, first + 1, 50).await;
    // resume from another run on the open connection: ack, reset, and the
    // live stream goes on with nothing lost.
    let op = r#"{"op":"resume","upstream":"feed","after":1,"run":"not-this-run"}"#;
    ws.send(Message::text(op)).await.expect("send resume");
    let (mut acked, mut reset) = (false, false);
    while !(acked && reset) {
        let v = next_json(&mut ws, LONG).await;
        match v["event"].as_str() {
            Some("ack") => acked = true,
            Some("reset") => reset = true,
            Some(other) => panic!("unexpected event {other}: {v}"),
            None => {
                assert_eq!(v["seq"].as_u64(), Some(want), "{v}");
                want += 1;
            }
        }
    }
    consecutive(&mut ws, want, 50).await;

    let (status, body) = http_get(gw.addr, "/ws?since=feed").expect("HTTP answer");
    assert_eq!(status, 400);
    assert!(body.starts_with("since:"), "{body}");
    // One upstream named twice would replay twice.
    for query in ["since=feed:10,feed:10", "since=feed:10&since=feed:20"] {
        let (status, body) = http_get(gw.addr, &format!("/ws?{query}")).expect("HTTP answer");
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.starts_with("since:") && body.contains("\"feed\""), "{query}: {body}");
    }

    let mut raw = ws_connect(&format!("{url}?format=raw&since=feed:1"), &[]).await.expect("raw connects");
    let v: Value = next_json(&mut raw, LONG).await;
    assert_eq!(v["type"], "t", "raw gets only the feed's frames: {v}");
    // Raw replays too (without events): consecutive frames from there on.
    let from = v["i"].as_u64().expect("i") + 1;
    for want in from..from + 100 {
        let v: Value = next_json(&mut raw, LONG).await;
        assert_eq!(v["i"].as_u64(), Some(want), "{v}");
    }

    let (_feed0, gw0) = start(0).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", gw0.addr), &[]).await.expect("connects");
    let first = next_json(&mut ws, LONG).await;
    assert_eq!(first["event"], "upstream", "no hello with history = 0: {first}");
}

/// A `since` subscriber that stops reading while the feed streams, its
/// replay (about 24 MB) more than the socket buffers take: the live
/// messages that join its replay take queue room, so the overflow policy
/// (`disconnect`) applies and the loss is counted, though the history
/// (10000) is far larger than the queue (64).
#[actix_rt::test]
async fn a_replay_reader_that_stops_is_disconnected() {
    support::logs();
    let pad = "x".repeat(8000);
    let feed = Feed::start(move |mut c| {
        let pad = pad.clone();
        async move {
            for i in 1u64.. {
                if !c.send_text(format!(r#"{{"type":"t","i":{i},"pad":"{pad}"}}"#)).await {
                    return;
                }
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    let mut s: Settings = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.history = 10_000;
    s.subscribers.queue_capacity = 64;
    s.subscribers.overflow = Overflow::Disconnect;
    let gw = Gateway::start(s).await.expect("gateway starts");
    eventually(LONG, "the feed streams", || published(&gw) >= 3000).await;
    let url = format!("ws://{}/ws?since=feed:1", gw.addr);
    let _ws = ws_connect(&url, &[]).await.expect("subscriber connects");
    let series = r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#;
    eventually(LONG, "the silent subscriber overflows and is counted", || {
        let text = String::from_utf8(gw.metrics.encode()).unwrap_or_default();
        metric(&text, series).unwrap_or(0.0) > 0.0
    })
    .await;
}
