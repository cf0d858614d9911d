//! A subscriber that never reads, against the real binary: it costs the
//! others nothing, its drops are counted, the process's memory stays
//! bounded, and the kernel closes its socket after `stall_timeout`.

mod support;

use support::Daemon;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{eventually_blocking, free_port, http_get, metric, rss_bytes, ws_connect, Feed};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
const COUNT: u64 = 30_000;
const HEALTHY: usize = 3;

fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default()
}

/// Upgrades a raw socket with a tiny receive buffer, then never reads again.
fn stalled_subscriber(addr: SocketAddr) -> socket2::Socket {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8 * 1024).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = sock.try_clone().unwrap().into();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"101", "upgrade refused");
    sock
}

/// One never-reading subscriber among healthy ones while 30 000 x 1 KiB
/// messages stream: the healthy ones get every message in order, the slow
/// one's drops are counted, RSS grows far less than the ~60 MB that holding
/// every message and envelope would take, and the stalled socket is closed
/// by the kernel (stall_timeout).
#[test]
fn never_reading_subscriber_is_bounded_and_harmless() {
    let go = Arc::new(AtomicBool::new(false));
    let go_feed = Arc::clone(&go);
    let feed = Feed::start(move |mut c| {
        let go = Arc::clone(&go_feed);
        async move {
            while !go.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let pad = "x".repeat(1000);
            // Fast (about 10 000 messages/s) but a pace healthy subscribers keep up with.
            for i in 1..=COUNT {
                if c.ws.feed(Message::text(format!(r#"{{"type":"trade","i":{i},"pad":"{pad}"}}"#))).await.is_err() {
                    return;
                }
                if i % 100 == 0 {
                    let _ = c.ws.flush().await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let _ = c.ws.flush().await;
            c.drain().await
        }
    });
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\n[subscribers]\nqueue_capacity = 4096\noverflow = \"drop_oldest\"\n\
             stall_timeout = \"2s\"\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n",
            feed.url("/")
        ),
    )
    .unwrap();
    let daemon = Daemon(
        Command::new(BIN)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    eventually_blocking(Duration::from_secs(30), "ready", || {
        http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });

    let _stalled = stalled_subscriber(addr);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut healthy = Vec::new();
    for _ in 0..HEALTHY {
        healthy.push(rt.block_on(ws_connect(&format!("ws://{addr}/ws"), &[])).unwrap());
    }
    eventually_blocking(Duration::from_secs(10), "4 subscribers", || {
        metric(&metrics(addr), r#"wsgate_subscribers{kind="websocket"}"#) == Some((HEALTHY + 1) as f64)
    });
    let rss_before = rss_bytes(pid);
    let readers: Vec<_> = healthy
        .into_iter()
        .enumerate()
        .map(|(n, mut ws)| {
            rt.spawn(async move {
                let mut expect = 1u64;
                while expect <= COUNT {
                    let frame = tokio::time::timeout(Duration::from_secs(60), ws.next()).await;
                    let Ok(Some(Ok(Message::Text(t)))) = frame else {
                        return Err(format!("subscriber {n}: {frame:?} at seq {expect}"));
                    };
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v.get("event").is_some() {
                        continue;
                    }
                    if v["seq"].as_u64() != Some(expect) {
                        return Err(format!("subscriber {n}: expected seq {expect}, got {}", v["seq"]));
                    }
                    expect += 1;
                }
                let _ = ws.close(None).await;
                Ok(())
            })
        })
        .collect();
    go.store(true, Ordering::SeqCst);
    for r in readers {
        rt.block_on(r).unwrap().unwrap();
    }
    let rss_after = rss_bytes(pid);
    let text = metrics(addr);
    let dropped = metric(&text, r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#).unwrap();
    let grew = rss_after.saturating_sub(rss_before);
    eprintln!(
        "RSS {} -> {} KiB (+{} KiB) while ~30 MB streamed; the slow subscriber dropped {dropped}",
        rss_before / 1024,
        rss_after / 1024,
        grew / 1024
    );
    assert!(dropped > 0.0, "the never-reading subscriber dropped nothing");
    assert!(grew < 24 * 1024 * 1024, "RSS grew {} KiB: unbounded buffering?", grew / 1024);

    // The kernel gives up on the stalled socket (TCP_USER_TIMEOUT = 2 s) and the session ends.
    eventually_blocking(Duration::from_secs(60), "the stalled subscriber is closed", || {
        metric(&metrics(addr), r#"wsgate_subscribers{kind="websocket"}"#) == Some(0.0)
    });
}
