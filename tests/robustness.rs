//! The real binary against hostile and careless clients (SPEC §10, issue 5):
//! random bytes and malformed HTTP on the port, oversize request headers,
//! invalid WebSocket frames from a subscriber, a frame that declares 1 GiB,
//! and 1000 subscriber connect/disconnect cycles. After each, the daemon
//! still answers `/healthz` and has released what the clients held.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually_blocking, free_port, http_get, metric, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// A running `wsgate run` against its own feed; killed on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _feed: Feed,
}

impl Daemon {
    /// Starts the binary on a free port with one upstream, and waits for /readyz 200.
    fn start() -> Daemon {
        let feed = Feed::start(|mut c| async move {
            c.send_text(r#"{"type":"hello"}"#).await;
            c.drain().await
        });
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsgate.toml");
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"{addr}\"\n\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n", feed.url("/")),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, addr, _dir: dir, _feed: feed };
        eventually_blocking(Duration::from_secs(30), "/readyz 200", || {
            d.assert_running();
            http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
        });
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("wsgate exited: {status}");
        }
    }

    /// Alive, and `/healthz` answers 200 `ok`.
    fn assert_healthy(&mut self, after: &str) {
        self.assert_running();
        let got = http_get(self.addr, "/healthz").unwrap_or_else(|e| panic!("/healthz after {after}: {e}"));
        assert_eq!(got, (200, "ok".to_string()), "/healthz after {after}");
    }

    fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http_get(self.addr, "/metrics").ok()?;
        metric(&text, series)
    }

    /// Waits until no WebSocket subscriber is left.
    fn wait_no_subscribers(&mut self, after: &str) {
        let addr = self.addr;
        eventually_blocking(Duration::from_secs(15), &format!("wsgate_subscribers 0 after {after}"), || {
            let (_, text) = http_get(addr, "/metrics").unwrap_or_default();
            metric(&text, r#"wsgate_subscribers{kind="websocket"}"#) == Some(0.0)
        });
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads what the server sends until it closes or `deadline` passes; write
/// and read errors (a reset) count as closed.
fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> (Vec<u8>, bool) {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Deterministic bytes (xorshift), so a failure is reproducible.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Random bytes and malformed HTTP on the port are refused or dropped, and
/// the daemon keeps serving `/healthz` 200.
#[test]
fn garbage_and_malformed_http_leave_the_daemon_serving() {
    let mut d = Daemon::start();
    let addr = d.addr;
    let mut cases: Vec<(String, Vec<u8>)> = (0..12u64).map(|i| (format!("noise {i}"), noise(i + 1, 64 << i))).collect();
    let text: &[(&str, &[u8])] = &[
        ("bad version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("no version", b"GET /healthz\r\n\r\n"),
        ("bad method", b"G\x01T /healthz HTTP/1.1\r\n\r\n"),
        ("header without colon", b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n"),
        ("control chars in header", b"GET /healthz HTTP/1.1\r\nX-A: \x00\x7f\r\n\r\n"),
        ("bare LF and CR", b"GET /healthz HTTP/1.1\nHost: x\r\r\n\n"),
        ("huge content-length", b"POST /healthz HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nab"),
        ("negative content-length", b"POST /ws HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        ("two content-lengths", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabc"),
        ("broken chunked", b"POST /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"),
        ("upgrade to nothing", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        ("bad websocket version", b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: x\r\n\r\n"),
        ("absurd path", b"GET /%%%%/../../\xef\xbf\xbd?a=%zz&&&= HTTP/1.1\r\n\r\n"),
        ("pipelined then garbage", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01\x02\x00garbage"),
        ("tls client hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"),
        ("half a request", b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Partial: abc"),
        ("only CRLFs", b"\r\n\r\n\r\n\r\n"),
    ];
    cases.extend(text.iter().map(|(n, t)| (n.to_string(), t.to_vec())));
    for (name, bytes) in &cases {
        let mut s = connect(addr);
        // The server may close while we write: that is an acceptable answer.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(Shutdown::Write);
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
        assert!(closed, "{name}: connection neither answered nor closed within 10 s");
        if let Some(status) = answer.get(9..12).filter(|_| answer.starts_with(b"HTTP/1.")) {
            let status = std::str::from_utf8(status).unwrap_or("?");
            assert!(!status.starts_with('5') || matches!(status, "503" | "505"), "{name}: server error {status}");
        }
        d.assert_healthy(name);
    }
    // Many at once, left open without a byte: the daemon still serves.
    let idle: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
    d.assert_healthy("50 idle connections");
    drop(idle);
    d.assert_healthy("50 idle connections closed");
}

/// Oversize request headers get 431 (or a clean close), never a crash, and
/// the daemon keeps serving.
#[test]
fn oversize_request_headers_get_431_or_close() {
    let mut d = Daemon::start();
    let big = "a".repeat(200 * 1024);
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("one 200 KiB header", format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")),
        ("a 200 KiB path", format!("GET /healthz?{big} HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("500 headers", format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
        (
            "200 KiB on /ws",
            format!("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Big: {big}\r\n\r\n"),
        ),
    ];
    for (name, req) in &cases {
        let mut s = connect(d.addr);
        let _ = s.write_all(req.as_bytes());
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 431") || head.starts_with("HTTP/1.1 400") || (answer.is_empty() && closed),
            "{name}: expected 431, 400 or a close, got {head:?} (closed: {closed})"
        );
        d.assert_healthy(name);
    }
}

/// Upgrades `/ws` by hand; returns the stream after the 101 and any bytes
/// already read past it.
fn ws_upgrade(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = connect(addr);
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let split = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(Instant::now() < end, "no upgrade answer within 10 s");
        match s.read(&mut buf) {
            Ok(0) => panic!("closed during the upgrade: {}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("upgrade: {e}"),
        }
    };
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    (s, got[split..].to_vec())
}

/// A masked client frame with the given first byte (FIN, RSV, opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames into `seen` until a close frame arrives (true when
/// the connection closed instead) or `deadline` passes. It does not wait for
/// the TCP close, which actix delays up to 1 s for the client.
fn read_until_close_frame(s: &mut TcpStream, seen: &mut Vec<u8>, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    let mut buf = [0u8; 8192];
    while close_code(seen).is_none() && Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The close code among server frames (unmasked), if a close frame came.
fn close_code(mut b: &[u8]) -> Option<Option<u16>> {
    while b.len() >= 2 {
        let opcode = b[0] & 0x0f;
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let payload = b.get(head..head + len)?;
        if opcode == 8 {
            return Some(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])));
        }
        b = &b[head + len..];
    }
    None
}

/// Invalid frames from a subscriber (unmasked, reserved opcodes and bits,
/// bad UTF-8, a 70 KiB frame over the 64 KiB cap) end that session with a
/// close frame or a closed connection; the daemon stays healthy and the
/// session's slot is released.
#[test]
fn invalid_subscriber_frames_are_closed_cleanly() {
    let mut d = Daemon::start();
    let mut unmasked = vec![0x81, 5];
    unmasked.extend_from_slice(b"hello");
    // With the close codes allowed: 1002 protocol error, 1007 bad data,
    // 1009 too big (SPEC §10: oversize frames get 1009).
    const PROTOCOL: &[u16] = &[1002];
    const TOO_BIG: &[u16] = &[1009];
    // SPEC §11: text that is not UTF-8 is 1007 (RFC 6455 §8.1).
    const INVALID: &[u16] = &[1007];
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("unmasked text", unmasked, PROTOCOL),
        ("reserved data opcode 0x3", client_frame(0x83, b"x"), PROTOCOL),
        ("reserved control opcode 0xB", client_frame(0x8b, b""), PROTOCOL),
        ("RSV1 without an extension", client_frame(0xc1, b"{}"), PROTOCOL),
        ("bad UTF-8 in text", client_frame(0x81, b"{\"op\":\"\xc3\x28\"}"), INVALID),
        (
            "bad UTF-8 across fragments",
            [client_frame(0x01, b"{\"op\":\"\xc3"), client_frame(0x80, b"\x28\"}")].concat(),
            INVALID,
        ),
        ("70 KiB frame over the 64 KiB cap", client_frame(0x82, &vec![b'a'; 70 * 1024]), TOO_BIG),
        ("70 KiB text frame over the cap", client_frame(0x81, &vec![b'a'; 70 * 1024]), TOO_BIG),
        ("ping over 125 bytes", client_frame(0x89, &[b'p'; 126]), PROTOCOL),
        ("fragmented ping", client_frame(0x09, b"p"), PROTOCOL),
        ("continuation without a start", client_frame(0x80, b"x"), PROTOCOL),
        ("absurd length", vec![0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4], TOO_BIG),
    ];
    for (name, bytes, codes) in &cases {
        let (mut s, mut seen) = ws_upgrade(d.addr);
        // The server may close while we write: that is an acceptable answer.
        let _ = s.write_all(bytes);
        let closed = read_until_close_frame(&mut s, &mut seen, Duration::from_secs(10));
        let code = close_code(&seen);
        assert!(closed || code.is_some(), "{name}: no close frame and no close within 10 s");
        if let Some(Some(code)) = code {
            assert!(codes.contains(&code), "{name}: close code {code}, expected one of {codes:?}");
        } else if codes == &INVALID {
            panic!("{name}: no close frame, expected 1007");
        }
        d.assert_healthy(name);
    }
    d.wait_no_subscribers("invalid frames");
}

/// A subscriber frame that declares 1 GiB and streams its payload is refused
/// at the header (close 1009 or a closed connection), not buffered: the
/// daemon's memory stays flat.
#[test]
fn huge_declared_subscriber_frame_is_not_buffered() {
    let mut d = Daemon::start();
    let rss_before = support::rss_bytes(d.pid());
    let (mut s, mut seen) = ws_upgrade(d.addr);
    let mut frame = client_frame(0x82, b"");
    frame[1] = 0x80 | 127;
    frame.splice(2..2, (1u64 << 30).to_be_bytes());
    let _ = s.write_all(&frame);
    let chunk = vec![0u8; 1 << 20];
    let mut sent_mib = 0;
    // Bounded: at most 64 MiB, stopping at the first write error (closed).
    while sent_mib < 64 && s.write_all(&chunk).is_ok() {
        sent_mib += 1;
    }
    let (more, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    seen.extend_from_slice(&more);
    let code = close_code(&seen);
    assert!(closed || code.is_some(), "no close after {sent_mib} MiB");
    if let Some(Some(code)) = code {
        assert_eq!(code, 1009, "close code");
    }
    let rss_after = support::rss_bytes(d.pid());
    let grown = rss_after.saturating_sub(rss_before);
    assert!(grown < 16 << 20, "RSS grew by {} MiB after {sent_mib} MiB of one frame", grown >> 20);
    d.assert_healthy("a huge declared frame");
    d.wait_no_subscribers("a huge declared frame");
}

/// 1000 `/ws` subscribers connecting and leaving (cleanly or by dropping the
/// socket) leave the daemon's open file descriptors at their baseline.
#[test]
fn thousand_subscriber_cycles_leave_no_descriptors_behind() {
    let mut d = Daemon::start();
    let url = format!("ws://{}/ws", d.addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cycle = |i: usize| {
        let url = url.clone();
        async move {
            use futures_util::StreamExt;
            let mut ws = support::ws_connect(&url, &[]).await.unwrap_or_else(|s| panic!("cycle {i}: HTTP {s}"));
            // The first frame is the upstream state event: the session is live.
            let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            assert!(matches!(first, Ok(Some(Ok(_)))), "cycle {i}: no first frame: {first:?}");
            if i % 2 == 0 {
                let _ = ws.close(None).await;
                // Bounded: wait for the server's close frame, then hang up
                // (actix waits up to 1 s for the client to drop the TCP link).
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                })
                .await;
            }
            // Odd cycles just drop the socket, without a close frame.
        }
    };
    // Warm-up, so lazily opened descriptors are in the baseline.
    rt.block_on(async {
        for i in 0..20 {
            cycle(i).await;
        }
    });
    d.wait_no_subscribers("warm-up");
    let baseline = d.open_fds();
    assert!(baseline > 0, "cannot read /proc/{}/fd", d.pid());

    let started = Instant::now();
    rt.block_on(async {
        // 10 at a time; 100 rounds.
        for round in 0..100 {
            let batch: Vec<_> = (0..10).map(|k| cycle(round * 10 + k)).collect();
            futures_util::future::join_all(batch).await;
        }
    });
    eprintln!("1000 cycles in {:?}", started.elapsed());
    d.assert_healthy("1000 cycles");
    d.wait_no_subscribers("1000 cycles");
    let margin = 4;
    let mut last = 0;
    eventually_blocking(Duration::from_secs(20), "open fds back at baseline", || {
        last = d.open_fds();
        last <= baseline + margin
    });
    eprintln!("open fds: baseline {baseline}, after {last}");
    let left = d.metric(r#"wsgate_subscriber_disconnects_total{reason="client"}"#).unwrap_or(0.0)
        + d.metric(r#"wsgate_subscriber_disconnects_total{reason="error"}"#).unwrap_or(0.0);
    assert!(left >= 1000.0, "subscriber disconnects counted: {left}");
}
