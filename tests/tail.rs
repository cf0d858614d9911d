//! `wsgate tail` (SPEC §12): the real binary as a subprocess against test
//! feeds, a real proxy and a running gateway. Every wait has a deadline.

mod support;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::Feed;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

fn tail(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("tail").args(args).env_remove("RUST_LOG");
    for var in
        ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"]
    {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits for the child with a deadline, killing it (by its PID) past it.
fn finish(mut child: Child, deadline: Duration) -> Output {
    let end = Instant::now() + deadline;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tail did not exit within {deadline:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = finish(cmd.spawn().unwrap(), Duration::from_secs(30));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A URL, `-H`, `--send`, `--count` and `--json`: text as is, binary as
/// hex, one JSON object per message; exit 0 after the count.
#[test]
fn dumps_a_url_and_stops_after_count() {
    let feed = Feed::start(|mut c| async move {
        let Some(first) = c.recv_text().await else { return };
        c.send_text(format!(r#"{{"got":"{first}"}}"#)).await;
        let _ = futures_util::SinkExt::send(&mut c.ws, Message::binary(vec![0xde, 0xad, 0x01])).await;
        c.send_text("plain text").await;
        c.drain().await
    });
    let url = feed.url("/dump");
    let (code, out, err) =
        run(&mut tail(&[&url, "-H", "X-Client: tail-test", "--send", "hello", "--count", "3", "--json"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!((lines[0]["opcode"].as_str(), lines[0]["data"].as_str()), (Some("text"), Some(r#"{"got":"hello"}"#)));
    assert_eq!((lines[1]["opcode"].as_str(), lines[1]["data"].as_str()), (Some("binary"), Some("dead01")));
    assert_eq!(lines[2]["data"], "plain text");
    assert!(lines.iter().all(|l| l["ts"].as_str().is_some_and(|t| t.ends_with('Z'))), "{out}");
    let seen = feed.log.attempts();
    assert_eq!(seen[0].header("x-client"), Some("tail-test"));
}

/// stdin lines are sent as text frames; the server's close 1000 ends the
/// session with exit 0, and `-v` shows the close code and the handshake.
#[test]
fn stdin_lines_are_sent_and_close_1000_exits_0() {
    let feed = Feed::start(|mut c| async move {
        while let Some(text) = c.recv_text().await {
            c.send_text(format!("echo:{text}")).await;
            if text == "bye" {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
                let _ = futures_util::SinkExt::send(&mut c.ws, Message::Close(Some(frame))).await;
                c.drain().await;
                return;
            }
        }
    });
    let mut cmd = tail(&[&feed.url("/echo"), "-v"]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\nbye\n").unwrap();
    let out = finish(child, Duration::from_secs(30));
    drop(stdin);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "echo:one\necho:bye\n");
    assert!(stderr.contains("< close 1000 done"), "{stderr}");
    assert!(stderr.contains("Handshake request.") && stderr.contains("Handshake answer."), "{stderr}");
}

/// Any other close code, a refused connect and usage errors: exit 1 with
/// the reason, or 2.
#[test]
fn exit_codes() {
    let feed = Feed::start(|mut c| async move {
        let frame = CloseFrame { code: CloseCode::from(4001), reason: "go away".into() };
        let _ = futures_util::SinkExt::send(&mut c.ws, Message::Close(Some(frame))).await;
        c.drain().await
    });
    let (code, _, err) = run(&mut tail(&[&feed.url("/")]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("closed") && err.contains("4001"), "{err}");

    let port = support::free_port();
    let (code, _, err) = run(&mut tail(&[&format!("ws://127.0.0.1:{port}/")]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tcp:"), "{err}");

    let (code, _, err) = run(&mut tail(&[]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&mut tail(&["http://not-ws/"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("url"), "{err}");
    let (code, _, err) = run(&mut tail(&["ws://h/", "--count", "many"]));
    assert_eq!(code, 2, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[[upstreams]]\nname = \"a\"\nurl = \"ws://127.0.0.1:1/\"\n").unwrap();
    let (code, _, err) = run(&mut tail(&["--config", cfg.to_str().unwrap(), "nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no upstream named \"nope\"") && err.contains('a'), "{err}");

    // A feed that never sends: --timeout ends it with exit 1.
    let quiet = Feed::start(|mut c| async move { c.drain().await });
    let started = Instant::now();
    let (code, _, err) = run(&mut tail(&[&quiet.url("/"), "--timeout", "500ms"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `--config FILE UPSTREAM`: that upstream's token file (bearer), headers
/// and `on_connect` come from the daemon's code; `-v` shows the
/// Authorization header as `***` and the token nowhere.
#[test]
fn config_upstream_uses_the_daemons_settings() {
    let feed = Feed::start(|mut c| async move {
        let Some(sub) = c.recv_text().await else { return };
        c.send_text(format!(r#"{{"subscribed":{sub}}}"#)).await;
        c.drain().await
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tail-s3cret-token\n").unwrap();
    let cfg = dir.path().join("wsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[upstreams]]
name = "other"
url = "ws://127.0.0.1:1/"
[[upstreams]]
name = "feed"
url = "ws://127.0.0.1:{port}/cfg"
headers = {{ "X-Desk" = "fx" }}
on_connect = ['{{"op":"subscribe"}}']
[upstreams.auth]
kind = "bearer"
token_file = {token:?}
"#,
            port = feed.addr.port(),
            token = token.to_str().unwrap(),
        ),
    )
    .unwrap();
    let (code, out, err) = run(&mut tail(&["--config", cfg.to_str().unwrap(), "feed", "--count", "1", "-v"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "{\"subscribed\":{\"op\":\"subscribe\"}}\n");
    let seen = feed.log.attempts();
    assert_eq!(seen[0].header("authorization"), Some("Bearer tail-s3cret-token"));
    assert_eq!(seen[0].header("x-desk"), Some("fx"));
    assert!(err.contains("authorization: ***"), "{err}");
    assert!(!err.contains("tail-s3cret-token") && !out.contains("tail-s3cret-token"), "{err}");
}

/// `--proxy` defaults to `env`: HTTP_PROXY sends the link through a real
/// tinyproxy (its log shows the CONNECT); NO_PROXY exempts the host.
#[test]
fn env_proxy_and_no_proxy() {
    let Some(bin) = support::proxies::require("tinyproxy", "tinyproxy") else { return };
    let proxy = support::proxies::tinyproxy(&bin, None);
    let feed = Feed::start(|mut c| async move {
        c.send_text("through").await;
        c.drain().await
    });
    let url = feed.url("/env");
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", feed.addr.port());
    let mut cmd = tail(&[&url, "--count", "1"]);
    cmd.env("HTTP_PROXY", format!("http://{}", proxy.addr));
    let (code, out, err) = run(&mut cmd);
    assert_eq!((code, out.as_str()), (0, "through\n"), "{err}");
    assert_eq!(proxy.log_text().matches(&connect).count(), 1, "{}", proxy.log_text());

    let mut cmd = tail(&[&url, "--count", "1"]);
    cmd.env("http_proxy", format!("http://{}", proxy.addr)).env("no_proxy", "localhost,127.0.0.0/8");
    let (code, out, err) = run(&mut cmd);
    assert_eq!((code, out.as_str()), (0, "through\n"), "{err}");
    assert_eq!(proxy.log_text().matches(&connect).count(), 1, "NO_PROXY ignored: {}", proxy.log_text());
}

/// `--gateway` follows a running gateway's /ws with `--upstream` filters:
/// envelopes of that upstream only.
#[actix_rt::test]
async fn follows_a_running_gateway() {
    let a = support::ticking_feed(Duration::from_millis(20));
    let b = support::ticking_feed(Duration::from_millis(20));
    let mut ua = wsgate::config::UpstreamConfig::new("alpha", a.url("/"));
    ua.proxy.url = "none".into();
    let mut ub = wsgate::config::UpstreamConfig::new("beta", b.url("/"));
    ub.proxy.url = "none".into();
    let gw = wsgate::app::Gateway::start(support::settings(vec![ua, ub])).await.unwrap();
    let gateway = format!("http://{}", gw.addr);
    let child =
        tail(&["--gateway", &gateway, "--upstream", "beta", "--topic", "trade", "--count", "3"]).spawn().unwrap();
    let out = tokio::task::spawn_blocking(move || finish(child, Duration::from_secs(30))).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let msgs: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let data: Vec<&serde_json::Value> = msgs.iter().filter(|m| m.get("seq").is_some()).collect();
    assert!(!data.is_empty(), "{stdout}");
    assert!(data.iter().all(|m| m["upstream"] == "beta" && m["topic"] == "trade"), "{stdout}");
    gw.shutdown().await;
}
