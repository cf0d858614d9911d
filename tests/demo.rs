//! `wsgate demo` end to end with the real binary, and the status page
//! rendered by a real headless Chromium.

mod support;

use support::Daemon;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{eventually_blocking, free_port, http_get, next_json, ws_connect};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
const CHROMIUM: &str = "/usr/bin/chromium";

fn start_demo() -> (Daemon, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(BIN)
        .arg("demo")
        .env("WSGATE__SERVER__LISTEN", addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    eventually_blocking(Duration::from_secs(30), "demo ready", || {
        http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false)
    });
    (daemon, addr)
}

/// `wsgate demo` needs no file: a subscriber gets live trade envelopes with
/// consecutive seq, /status shows the demo upstream, SIGTERM exits 0.
#[test]
fn demo_serves_live_data_and_stops_cleanly() {
    let (mut daemon, addr) = start_demo();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut ws = ws_connect(&format!("ws://{addr}/ws?topic=trade"), &[]).await.unwrap();
        let first = next_json(&mut ws, Duration::from_secs(10)).await;
        assert_eq!(first["event"], "upstream");
        assert_eq!(first["upstream"], "demo");
        let mut trades = 0;
        while trades < 5 {
            let v = next_json(&mut ws, Duration::from_secs(10)).await;
            if v.get("event").is_none() {
                assert_eq!(v["topic"], "trade", "{v}");
                assert_eq!(v["data"]["type"], "trade");
                assert!(v["data"]["price"].as_f64().unwrap() > 0.0);
                trades += 1;
            }
        }
    });
    let (_, status) = http_get(addr, "/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["upstreams"][0]["name"], "demo");
    assert_eq!(status["upstreams"][0]["state"], "connected");
    assert!(status["upstreams"][0]["messages"].as_u64().unwrap() > 0);

    assert!(Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status().unwrap().success());
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < end, "demo did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/install-test-tools.sh (Debian package chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// The status page, rendered by a real headless Chromium against the demo,
/// shows the upstream as connected with its counters; a screenshot is saved
/// to target/status-page.png.
#[test]
fn status_page_renders_in_chromium() {
    let (_daemon, addr) = start_demo();
    let url = format!("http://{addr}/");
    // Wait until the page's own fetch shows the upstream connected (the feed
    // restarts every minute, so allow a retry).
    let mut dom = String::new();
    for _ in 0..5 {
        let out = chromium(&["--dump-dom"], &url);
        dom = String::from_utf8_lossy(&out.stdout).into_owned();
        if dom.contains(r#"class="state connected""#) {
            break;
        }
    }
    assert!(dom.contains(r#"data-upstream="demo""#), "no demo row in the rendered page:\n{dom}");
    assert!(dom.contains(r#"class="state connected""#), "demo not shown connected:\n{dom}");
    assert!(dom.contains("websocket: "), "no subscriber counts:\n{dom}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1280,800"], &url);
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.len() > 5_000 && png.starts_with(b"\x89PNG"), "not a real screenshot: {} bytes", png.len());
}
