//! SPEC §11: log lines of the libraries (actix, awc, rustls) reach the same
//! log output. awc and rustls log through the `log` crate, so their lines
//! only show up when the `log` bridge is installed; actix-server logs
//! through `tracing` itself. The real binary, its stderr read as it runs.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{free_port, Daemon, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// A server on 127.0.0.1 that answers every upgrade with a 101 lacking the
/// `Upgrade` header: awc refuses it and says why at trace level, via `log`.
fn bad_upgrade_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n");
        }
    });
    port
}

/// awc (trace) and rustls (debug) lines, which come through the `log`
/// crate, appear on stderr filtered by `log.level`, beside actix-server's.
#[test]
fn library_log_lines_reach_stderr() {
    let pki = support::tls::pki();
    let tls_feed =
        Feed::start_gated(Arc::new(|_, _| Ok(Vec::new())), Some(Arc::clone(&pki.server)), |mut c| async move {
            c.drain().await
        });
    let bad = bad_upgrade_server();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[log]
level = "info,awc=trace,rustls=debug"
[[upstreams]]
name = "tls"
url = "wss://localhost:{tls}/"
[upstreams.tls]
ca_file = {ca:?}
[[upstreams]]
name = "bad"
url = "ws://127.0.0.1:{bad}/"
"#,
            port = free_port(),
            tls = tls_feed.addr.port(),
            ca = ca.to_str().unwrap(),
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = support::StderrLog::collect(&mut child);
    let mut daemon = Daemon(child);
    let has = |text: &str| log.has(text);
    let wanted = [
        // actix-server, through tracing
        "starting service:",
        // awc, through log, at trace
        "Invalid upgrade header",
        // rustls, through log, at debug
        "Not resuming any session",
        // and our own line, for the same TLS link
        "Upstream connected.",
    ];
    let end = Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|w| has(w)) {
        let missing: Vec<_> = wanted.iter().filter(|w| !has(w)).collect();
        assert!(Instant::now() < end, "missing on stderr: {missing:?}\n{}", log.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same filter applies to everything: our own debug line stays out.
    assert!(!has("Connecting to upstream."), "{}", log.text());

    let status = daemon.terminate();
    let log = log.finish();
    assert_eq!(status.code(), Some(0), "{log}");
}
