//! SPEC §12 `trace = true`: every frame of that upstream at debug level
//! (direction, opcode, length, the first 200 bytes) and the handshake
//! headers, with every secret as `***`. The real binary, its stderr read.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{free_port, Daemon, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// Frames both ways and the handshake are traced for the traced upstream
/// only; a 300-byte message shows its first 200 bytes; the token (in the
/// auth message), a secret header and a secret query value never show.
#[test]
fn trace_logs_frames_and_redacted_handshake() {
    let pad = "x".repeat(300);
    let msg = format!(r#"{{"type":"big","pad":"{pad}"}}"#);
    let feed = Feed::start(move |mut c| {
        let msg = msg.clone();
        async move {
            let Some(_auth) = c.recv_text().await else { return };
            c.send_text(r#"{"type":"authed"}"#).await;
            c.send_text(msg).await;
            c.drain().await
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[log]
level = "info,wsgate=debug"
[[upstreams]]
name = "traced"
url = "ws://127.0.0.1:{feed}/t?apikey=q-secret-1&depth=5"
trace = true
headers = {{ "X-Api-Key" = "hdr-secret-2", "X-Client" = "visible" }}
[upstreams.auth]
kind = "message"
token = "tok-secret-3"
message = '{{"op":"auth","token":"{{{{token}}}}"}}'
success = {{ pointer = "/type", equals = "authed" }}
[[upstreams]]
name = "quiet"
url = "ws://127.0.0.1:{feed}/q"
"#,
            port = free_port(),
            feed = feed.addr.port(),
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
    let stderr = child.stderr.take().unwrap();
    let daemon = Daemon(child);
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let lines = || log.lock().unwrap().clone();
    let frame_lines = |dir: &str, opcode: &str| -> Vec<String> {
        lines()
            .lines()
            .filter(|l| l.contains("Frame.") && l.contains(dir) && l.contains(&format!("opcode=\"{opcode}\"")))
            .map(str::to_string)
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let text = lines();
        let done = text.contains("Handshake request.")
            && text.contains("Handshake answer.")
            && frame_lines("send", "text").iter().any(|l| l.contains("auth"))
            && frame_lines("recv", "text").iter().any(|l| l.contains("big"));
        if done {
            break;
        }
        assert!(Instant::now() < end, "trace lines missing:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = lines();
    for secret in ["q-secret-1", "hdr-secret-2", "tok-secret-3"] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
    }
    let request = text.lines().find(|l| l.contains("Handshake request.")).unwrap();
    assert!(request.contains("x-api-key: ***") && request.contains("x-client: visible"), "{request}");
    assert!(request.contains("apikey=***") && request.contains("depth=5"), "{request}");
    let answer = text.lines().find(|l| l.contains("Handshake answer.")).unwrap();
    assert!(answer.contains("status: 101") && answer.contains("sec-websocket-accept"), "{answer}");
    let auth = frame_lines("send", "text").into_iter().find(|l| l.contains("auth")).unwrap();
    assert!(auth.contains(r#"token\":\"***"#) || auth.contains(r#"token":"***"#), "{auth}");
    let big = frame_lines("recv", "text").into_iter().find(|l| l.contains("big")).unwrap();
    let full_len = 300 + r#"{"type":"big","pad":""}"#.len();
    assert!(big.contains(&format!("len={full_len}")), "{big}");
    let shown = 200 - r#"{"type":"big","pad":""#.len();
    assert!(big.contains(&"x".repeat(shown)) && !big.contains(&"x".repeat(shown + 1)), "{big}");
    assert!(!text.lines().any(|l| l.contains("Frame.") && l.contains("quiet")), "untraced upstream traced");
    drop(daemon);
}
