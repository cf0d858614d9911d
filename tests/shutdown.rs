//! Shutdown past its deadline, on the real binary.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually_blocking, free_port, http_get, metric, Feed};

/// A session frozen by a client that never reads cannot close in time: with
/// `shutdown_timeout = "1s"` the process logs that and exits 1.
#[test]
fn shutdown_past_the_deadline_exits_1_with_a_log_line() {
    let feed = Feed::start(|mut c| async move {
        let pad = "x".repeat(1000);
        let mut i = 0u64;
        loop {
            i += 1;
            if !c.send_text(format!(r#"{{"type":"t","i":{i},"pad":"{pad}"}}"#)).await {
                return;
            }
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\nshutdown_timeout = \"1s\"\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n",
            feed.url("/")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually_blocking(Duration::from_secs(20), "ready", || {
        http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });

    // A subscriber that never reads, with a tiny receive buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    write!(s, "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    eventually_blocking(Duration::from_secs(30), "the session is frozen (drops)", || {
        let text = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
        metric(&text, r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#).unwrap_or(0.0) > 0.0
    });

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let sent = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(sent.elapsed() < Duration::from_secs(20), "no exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not finish within server.shutdown_timeout"), "{stderr}");
    assert!(sent.elapsed() < Duration::from_secs(5), "took {:?}", sent.elapsed());
    drop(s);
}
