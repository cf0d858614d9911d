//! `overflow = "conflate"` and `overflow = "block"` (SPEC §14) end to end:
//! a subscriber that pauses gets the latest value per key; a file sink
//! behind a slow reader (a FIFO) loses nothing while the upstream pauses.

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;

use support::{eventually, metric, next_json, settings, ws_connect, Feed};
use tokio_tungstenite::tungstenite::Message;
use wsgate::app::Gateway;
use wsgate::config::{Overflow, SinkConfig, Size, UpstreamConfig};

const LONG: Duration = Duration::from_secs(60);

/// Once `go` is set, sends `count` messages `{"type":"q","sym":"K<n % keys>","v":n}`
/// (n from 1) padded to about `pad` bytes, as fast as the link takes them;
/// sets `done` after the last and then keeps the link open.
fn numbered_feed(go: Arc<AtomicBool>, done: Arc<AtomicBool>, count: u64, keys: u64, pad: usize) -> Feed {
    Feed::start(move |mut c| {
        let (go, done) = (Arc::clone(&go), Arc::clone(&done));
        async move {
            while !go.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let padding = "x".repeat(pad);
            for n in 1..=count {
                let text = format!(r#"{{"type":"q","sym":"K{}","v":{n},"pad":"{padding}"}}"#, n % keys);
                if c.ws.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            if c.ws.flush().await.is_err() {
                return;
            }
            done.store(true, Ordering::SeqCst);
            c.drain().await;
        }
    })
}

fn series(gw: &Gateway, name: &str) -> f64 {
    metric(&String::from_utf8(gw.metrics.encode()).unwrap(), name).unwrap_or(0.0)
}

/// A subscriber that stops reading while the feed updates a few keys, then
/// reads again, gets every key's last value, with `seq` growing all along;
/// what conflation removed is counted as dropped.
#[actix_rt::test]
async fn conflate_delivers_the_latest_per_key() {
    support::logs();
    let (go, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (count, keys) = (20_000u64, 5u64);
    let feed = numbered_feed(Arc::clone(&go), Arc::clone(&done), count, keys, 1000);
    let mut s = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.subscribers.queue_capacity = 64;
    s.subscribers.overflow = Overflow::Conflate;
    s.subscribers.conflate_key = "/sym".into();
    let gw = Gateway::start(s).await.expect("gateway starts");
    let mut ws = ws_connect(&format!("ws://{}/ws", gw.addr), &[]).await.expect("subscriber connects");
    loop {
        let v = next_json(&mut ws, LONG).await;
        if v["state"] == "connected" {
            break;
        }
    }
    // Paused: the client reads nothing while the whole stream goes out.
    go.store(true, Ordering::SeqCst);
    eventually(LONG, "the feed sent everything", || done.load(Ordering::SeqCst)).await;
    eventually(LONG, "the gateway took everything", || {
        series(&gw, r#"wsgate_upstream_messages_total{upstream="feed"}"#) >= count as f64
    })
    .await;
    let dropped = series(&gw, r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#);
    assert!(dropped > 0.0, "the paused subscriber's queue overflowed");

    // Resumed: read until every key's last value came.
    let last: HashMap<String, u64> = (count - keys + 1..=count).map(|n| (format!("K{}", n % keys), n)).collect();
    let mut latest: HashMap<String, u64> = HashMap::new();
    let (mut prev, mut got) = (0u64, 0u64);
    while latest != last {
        let v = next_json(&mut ws, LONG).await;
        if v.get("event").is_some() {
            continue;
        }
        let seq = v["seq"].as_u64().expect("seq");
        assert!(seq > prev, "seq grows along the stream: {prev} then {seq}");
        prev = seq;
        got += 1;
        let sym = v["data"]["sym"].as_str().expect("sym").to_string();
        let value = v["data"]["v"].as_u64().expect("v");
        assert!(latest.get(&sym).is_none_or(|old| *old < value), "values of a key grow");
        latest.insert(sym, value);
    }
    eprintln!("conflate: {got} of {count} messages delivered, {dropped} conflated away (counted)");
    assert!(got < count, "conflation removed some: {got} of {count} delivered");
    assert!(got as f64 + dropped >= count as f64, "every message delivered or counted");
    drop(ws);
}

/// A file sink with `overflow = "block"` writing into a FIFO that the test
/// reads slowly: every number exactly once and in order, nothing dropped,
/// and the upstream was paused (counted).
#[actix_rt::test]
async fn block_sink_behind_a_slow_fifo_loses_nothing() {
    support::logs();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo");
    let count = 20_000u64;

    // The slow disk: 4 KiB every 2 ms, until EOF.
    let text = Arc::new(Mutex::new(String::new()));
    let lines = Arc::new(AtomicUsize::new(0));
    let (path, sink, seen) = (fifo.clone(), Arc::clone(&text), Arc::clone(&lines));
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).expect("open the FIFO for reading");
        let mut buf = vec![0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.fetch_add(chunk.matches('\n').count(), Ordering::SeqCst);
                    sink.lock().unwrap().push_str(&chunk);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    let (go, done) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
    let feed = numbered_feed(go, Arc::clone(&done), count, 7, 100);
    let mut s = settings(vec![UpstreamConfig::new("feed", feed.url("/"))]);
    s.sinks = vec![SinkConfig::File {
        path: fifo.clone(),
        upstreams: vec![],
        topics: vec![],
        queue_bytes: Size::mib(64),
        queue_capacity: 100,
        overflow: Overflow::Block,
        conflate_key: String::new(),
    }];
    let gw = Gateway::start(s).await.expect("gateway starts (the FIFO has a reader)");
    eventually(LONG, "every line reached the FIFO", || lines.load(Ordering::SeqCst) >= count as usize).await;
    assert!(done.load(Ordering::SeqCst), "the feed sent everything");

    let text = text.lock().unwrap().clone();
    let mut want = 1u64;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
        assert_eq!(v["seq"].as_u64(), Some(want), "seq {want}");
        assert_eq!(v["data"]["v"].as_u64(), Some(want), "number {want}, exactly once, in order");
        want += 1;
    }
    assert_eq!(want, count + 1);
    assert_eq!(series(&gw, r#"wsgate_subscriber_dropped_total{kind="file",reason="overflow"}"#), 0.0);
    let paused = series(&gw, r#"wsgate_upstream_paused_seconds_total{upstream="feed"}"#);
    eprintln!("block: {count} lines through a slow FIFO, 0 dropped, upstream paused {paused:.2} s");
    assert!(paused > 0.0, "the upstream was paused: {paused}");
    let _ = gw.shutdown().await;
}

/// `[subscribers] overflow = "block"` and a `conflate_key` that is no JSON
/// pointer are refused, naming the key.
#[test]
fn block_is_for_sinks_only() {
    let mut s = settings(vec![]);
    s.subscribers.overflow = Overflow::Block;
    let err = wsgate::config::validate(&s).expect_err("refused");
    assert_eq!(err.0, "subscribers.overflow", "{err:?}");
    s.subscribers.overflow = Overflow::Conflate;
    s.subscribers.conflate_key = "symbol".into();
    let err = wsgate::config::validate(&s).expect_err("not a pointer");
    assert_eq!(err.0, "subscribers.conflate_key", "{err:?}");
}

/// The real binary: a file sink with `block` into a FIFO nobody reads for a
/// while pauses the upstream; the feed drops the reader that stopped
/// reading; once the FIFO is read again, the daemon says the link was lost
/// while paused, and reconnects.
#[test]
fn a_feed_that_drops_a_paused_link_is_logged() {
    use std::process::{Command, Stdio};
    use support::{eventually_blocking, free_port, http_get, Daemon, StderrLog};

    let gave_up = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&gave_up);
    let feed = Feed::start(move |mut c| {
        let flag = Arc::clone(&flag);
        async move {
            if c.index > 0 {
                return c.drain().await;
            }
            let pad = "x".repeat(1000);
            for i in 1u64.. {
                let send = c.send_text(format!(r#"{{"type":"t","i":{i},"pad":"{pad}"}}"#));
                // A venue's slow-consumer rule: a send blocked for 1 s drops the link.
                if !matches!(tokio::time::timeout(Duration::from_secs(1), send).await, Ok(true)) {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let go = Arc::new(AtomicBool::new(false));
    let (path, read_now) = (fifo.clone(), Arc::clone(&go));
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).expect("open the FIFO for reading");
        while !read_now.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n\
             [[sinks]]\nkind = \"file\"\npath = \"{}\"\noverflow = \"block\"\nqueue_capacity = 100\n",
            feed.url("/"),
            fifo.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let log = StderrLog::collect(&mut daemon.0);
    eventually_blocking(LONG, "the feed gave up on the paused link", || gave_up.load(Ordering::SeqCst));
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let paused_now = || {
        let (_, text) = http_get(sock, "/metrics").expect("metrics");
        metric(&text, r#"wsgate_upstream_paused_seconds_total{upstream="feed"}"#).unwrap_or(0.0)
    };
    eventually_blocking(LONG, "the pause is counted while it lasts", || paused_now() > 0.0);
    go.store(true, Ordering::SeqCst);
    eventually_blocking(LONG, "the lost link is logged", || log.has("lost while paused by a blocking sink"));
    eventually_blocking(LONG, "reconnected", || feed.log.accepted() >= 2);
    let paused = paused_now();
    assert!(paused >= 1.0, "paused at least as long as the feed waited: {paused}");
    assert!(daemon.terminate().success());
}

/// A webhook sink with `overflow = "block"`: while its endpoint holds the
/// first batch, the queue fills and holds the upstream's gate shut instead
/// of dropping; once the endpoint answers, every message goes out, in order.
#[actix_rt::test]
async fn block_webhook_holds_the_upstream_and_drops_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (release, seqs) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::<u64>::new())));
    let (hold, got) = (Arc::clone(&release), Arc::clone(&seqs));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (hold, got) = (Arc::clone(&hold), Arc::clone(&got));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                loop {
                    let (mut line, mut len) = (String::new(), 0usize);
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line.trim_end().is_empty() && len > 0 {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    while !hold.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                    got.lock().unwrap().extend(batch.iter().map(|e| e["seq"].as_u64().unwrap()));
                    if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut s = settings(vec![]);
    let mut hook: wsgate::config::WebhookConfig =
        match toml::from_str::<SinkConfig>(&format!("kind = \"webhook\"\nurl = \"{url}\"")).unwrap() {
            SinkConfig::Webhook(w) => w,
            other => panic!("{other:?}"),
        };
    (hook.batch_size, hook.queue_capacity, hook.overflow) = (2, 4, Overflow::Block);
    hook.batch_timeout = wsgate::config::Dur::ms(50);
    s.sinks = vec![SinkConfig::Webhook(hook)];
    let gw = Gateway::start(s).await.expect("gateway starts");
    let publisher = gw.hub.publisher("t");
    let publish = |n: u64| {
        publisher.publish(wsgate::fanout::Incoming {
            upstream: "t".into(),
            topic: "".into(),
            raw: bytes::Bytes::from(format!(r#"{{"n":{n}}}"#)),
            raw_is_text: true,
            kind: wsgate::fanout::DataKind::Json,
            received_at: std::time::SystemTime::now(),
            received: std::time::Instant::now(),
            conn: 1,
        })
    };
    for n in 1..=20 {
        publish(n);
    }
    eventually(LONG, "the webhook holds back the upstream", || publisher.gate().is_closed()).await;
    release.store(true, Ordering::SeqCst);
    eventually(LONG, "every message posted", || seqs.lock().unwrap().len() == 20).await;
    assert_eq!(*seqs.lock().unwrap(), (1..=20).collect::<Vec<u64>>(), "all, once, in order");
    eventually(LONG, "drained: the gate opens", || !publisher.gate().is_closed()).await;
    assert_eq!(series(&gw, r#"wsgate_subscriber_dropped_total{kind="webhook",reason="overflow"}"#), 0.0);
    let _ = gw.shutdown().await;
}
