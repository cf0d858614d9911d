//! SPEC §10a and §11: planted secrets never leave the process. The real
//! binary with a config full of unique secrets (URL userinfo, secret query
//! values, a `redact_query` name from config, the query-auth token, a
//! credential header, a webhook path, inline tokens and a token file): `check`
//! output, stderr at `RUST_LOG=trace` (library lines included) while links
//! connect and fail, `/status`, `/` and `/metrics` hold none of them, and
//! show the parts that are not secret.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use support::{eventually_blocking, free_port, http_get, Daemon, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// Every planted secret holds this (any case); nothing else in the test does.
const MARK: &str = "planted";

/// The request lines and headers a webhook server saw.
type Requests = Arc<Mutex<Vec<String>>>;

/// An HTTP server on 127.0.0.1 that answers every request 404 with a body
/// echoing the request line, as many servers do: the sink must not log that
/// path. Returns its port and what it saw.
fn echoing_webhook() -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Requests = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(p + 4);
                }
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while data.len() < head_end + length {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let line = head.lines().next().unwrap_or_default().to_string();
            record.lock().unwrap().push(head.clone());
            let body = format!("no route for {line}");
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// Fails naming `what` when `text` holds any planted secret (any case) or
/// the Basic form of the planted userinfo.
fn assert_clean(what: &str, text: &str) {
    let basic = base64::engine::general_purpose::STANDARD.encode("planteduser:plantedpass");
    let lower = text.to_lowercase();
    if let Some(at) = lower.find(MARK) {
        let from = lower[..at].rfind('\n').map_or(0, |i| i + 1);
        let to = lower[at..].find('\n').map_or(lower.len(), |i| at + i);
        panic!("{what} leaks a secret: {}", &text[from..to]);
    }
    assert!(!text.contains(&basic), "{what} leaks the userinfo as Basic auth");
}

/// `check` output, trace-level stderr, `/status`, `/` and `/metrics` hold no
/// planted secret, and show what is not secret.
#[test]
fn planted_secrets_never_leave() {
    let feed = Feed::start(|mut c| async move {
        c.send_text(r#"{"type":"trade","i":1}"#).await;
        c.drain().await
    });
    let (hook_port, hook_seen) = echoing_webhook();
    let closed = free_port();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let fp = feed.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "PlantedFileToken\n").unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "5s"
[log]
redact_query = ["token", "key", "apikey", "api_key", "access_token", "auth", "secret", "signature", "sig", "password", "passphrase", "jwt", "session"]
[subscribers]
auth_token = "PLANTEDSUBTOKEN"

[[upstreams]]
name = "main"
url = "ws://planteduser:plantedpass@127.0.0.1:{fp}/feed?apikey=PLANTEDKEY1&sig=PLANTEDSIG&Session=PLANTEDSESSION&x=keepme"
headers = {{ "X-Api-Key" = "PLANTEDHEADER", "X-Client" = "wsgate-test" }}

[[upstreams]]
name = "qauth"
url = "ws://127.0.0.1:{fp}/q?access=PLANTEDINURL&y=keep2"
[upstreams.auth]
kind = "query"
param = "access"
token = "PLANTEDQUERYTOKEN"

[[upstreams]]
name = "filetok"
url = "ws://127.0.0.1:{fp}/f"
[upstreams.auth]
kind = "bearer"
token_file = {token_file:?}

[[upstreams]]
name = "down"
url = "ws://u:plantedpw3@127.0.0.1:{closed}/x?token=PLANTEDTOK3&z=keep3"
required = false
[upstreams.reconnect]
initial = "100ms"
max = "200ms"

[[sinks]]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook/PLANTEDPATH?x=1"
batch_timeout = "100ms"
auth_token = "PLANTEDHOOKTOKEN"
"#,
            token_file = token_file.to_str().unwrap(),
        ),
    )
    .unwrap();

    // `check`: stdout and stderr, every secret as ***.
    let out = Command::new(BIN).args(["check", "--config", cfg.to_str().unwrap()]).env_remove("RUST_LOG").output();
    let out = out.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_clean("check stdout", &stdout);
    assert_clean("check stderr", &stderr);
    for shown in [
        format!("ws://***@127.0.0.1:{fp}/feed?apikey=***&sig=***&Session=***&x=keepme"),
        format!("ws://127.0.0.1:{fp}/q?access=***&y=keep2"),
        format!("ws://***@127.0.0.1:{closed}/x?token=***&z=keep3"),
        format!("http://127.0.0.1:{hook_port}/***"),
        r#"X-Api-Key = "***""#.to_string(),
        r#"X-Client = "wsgate-test""#.to_string(),
    ] {
        assert!(stdout.contains(&shown), "check output lacks {shown}:\n{stdout}");
    }

    // `run` at trace level, library lines included.
    let mut child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = support::StderrLog::collect(&mut child);
    let mut daemon = Daemon(child);
    let has = |text: &str| log.has(text);

    eventually_blocking(Duration::from_secs(30), "/readyz 200 (three upstreams connected)", || {
        http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });
    eventually_blocking(Duration::from_secs(30), "failed connects, a refused webhook batch, trace lines", || {
        has("Upstream connect failed.") && has("Webhook refused a batch") && has("TRACE") && has("DEBUG")
    });
    eventually_blocking(Duration::from_secs(10), "down's last_error in /status", || {
        http_get(addr, "/status").is_ok_and(|(_, b)| b.contains("connection failed"))
    });

    // The secrets really went on the wire (so the test is not vacuous).
    let attempts = feed.log.attempts();
    assert!(attempts
        .iter()
        .any(|a| a.uri.contains("apikey=PLANTEDKEY1") && a.header("x-api-key") == Some("PLANTEDHEADER")));
    assert!(attempts.iter().any(|a| a.uri.contains("access=PLANTEDQUERYTOKEN")));
    assert!(attempts.iter().any(|a| a.header("authorization") == Some("Bearer PlantedFileToken")));
    let hooks = hook_seen.lock().unwrap().clone();
    assert!(hooks.iter().any(|h| h.starts_with("POST /hook/PLANTEDPATH?x=1 ") && h.contains("PLANTEDHOOKTOKEN")));

    let (code, status) = http_get(addr, "/status").unwrap();
    assert_eq!(code, 200);
    assert_clean("/status", &status);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let url_of =
        |name: &str| status["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == name).unwrap()["url"].clone();
    assert_eq!(url_of("main"), format!("ws://***@127.0.0.1:{fp}/feed?apikey=***&sig=***&Session=***&x=keepme"));
    assert_eq!(url_of("qauth"), format!("ws://127.0.0.1:{fp}/q?access=***&y=keep2"));
    assert_eq!(url_of("down"), format!("ws://***@127.0.0.1:{closed}/x?token=***&z=keep3"));
    let (code, page) = http_get(addr, "/").unwrap();
    assert_eq!(code, 200);
    assert_clean("/", &page);
    let (code, metrics) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert_clean("/metrics", &metrics);
    assert!(metrics.contains(r#"upstream="main""#));

    let exit = daemon.terminate();
    let log = log.finish();
    assert_eq!(exit.code(), Some(0), "{log}");
    assert_clean("stderr at trace level", &log);
    for shown in ["x=keepme", "***@127.0.0.1", &format!("http://127.0.0.1:{hook_port}/***"), "Shutdown complete."] {
        assert!(log.contains(shown), "stderr lacks {shown}");
    }
}
