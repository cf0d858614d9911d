//! The two echo testees of issue 18 without the Autobahn suite (which needs
//! Python 2.7, tests/conformance.rs): `wsgate tail URL --echo` (the real
//! binary against a feed on 127.0.0.1:0) and the test-only `GET /__echo` of
//! an in-process gateway. Every wait has a deadline.

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::Feed;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
const LONG: Duration = Duration::from_secs(20);

/// Runs `wsgate tail URL --echo`; its exit code and stderr (killed by PID
/// past the deadline).
fn tail_echo(url: &str) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(["tail", url, "--echo", "--proxy", "none", "--timeout", "20s"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("tail --echo did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Text, binary and a fragmented message come back unchanged (the
/// fragments joined), a ping is answered, the server's close 1000 is
/// echoed and tail exits 0.
#[test]
fn tail_echo_sends_every_message_back() {
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    let log = Arc::clone(&seen);
    let feed = Feed::start(move |mut c| {
        let log = Arc::clone(&log);
        async move {
            let mut frames = vec![
                Frame::message("héllo".as_bytes().to_vec(), OpCode::Data(Data::Text), true),
                Frame::message(vec![0u8, 0xff, 7], OpCode::Data(Data::Binary), true),
                Frame::message(b"frag".to_vec(), OpCode::Data(Data::Text), false),
                Frame::message(b"ment".to_vec(), OpCode::Data(Data::Continue), true),
            ];
            for f in frames.drain(..) {
                if c.ws.send(Message::Frame(f)).await.is_err() {
                    return;
                }
            }
            let _ = c.ws.send(Message::Ping(b"p".to_vec().into())).await;
            let deadline = tokio::time::Instant::now() + LONG;
            while log.lock().unwrap().len() < 4 {
                match tokio::time::timeout_at(deadline, c.ws.next()).await {
                    Ok(Some(Ok(m))) => log.lock().unwrap().push(m),
                    _ => return,
                }
            }
            let bye = CloseFrame { code: CloseCode::Normal, reason: "".into() };
            let _ = c.ws.send(Message::Close(Some(bye))).await;
            // Read the echo of the close, then end the connection (server first).
            let _ = tokio::time::timeout(LONG, async { while let Some(Ok(_)) = c.ws.next().await {} }).await;
        }
    });
    let (code, err) = tail_echo(&feed.url("/echo"));
    assert_eq!(code, 0, "{err}");
    let seen = seen.lock().unwrap().clone();
    let want = vec![
        Message::text("héllo"),
        Message::binary(vec![0u8, 0xff, 7]),
        Message::text("fragment"),
        Message::Pong(b"p".to_vec().into()),
    ];
    // The pong may come before or after the echoes it overtook.
    let mut got = seen.clone();
    got.sort_by_key(|m| format!("{m:?}"));
    let mut sorted = want.clone();
    sorted.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(got, sorted, "{seen:?}");
    let data: Vec<_> = seen.iter().filter(|m| !matches!(m, Message::Pong(_))).cloned().collect();
    assert_eq!(data, want[..3].to_vec(), "echoes in order");
}

/// Text that is not UTF-8 fails the connection with 1007; tail exits 1.
#[test]
fn tail_echo_fails_invalid_utf8_with_1007() {
    let codes: Arc<Mutex<Vec<u16>>> = Arc::default();
    let log = Arc::clone(&codes);
    let feed = Feed::start(move |mut c| {
        let log = Arc::clone(&log);
        async move {
            let bad = Frame::message(vec![b'o', b'k', 0xc3, 0x28], OpCode::Data(Data::Text), true);
            if c.ws.send(Message::Frame(bad)).await.is_err() {
                return;
            }
            let deadline = tokio::time::Instant::now() + LONG;
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, c.ws.next()).await {
                if let Message::Close(Some(f)) = m {
                    log.lock().unwrap().push(u16::from(f.code));
                }
            }
        }
    });
    let (code, err) = tail_echo(&feed.url("/bad"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert_eq!(*codes.lock().unwrap(), vec![1007]);
}

/// `GET /__echo` (test-hooks) echoes through the /ws frame layer: text,
/// binary, a fragmented message joined, a pong for a ping, the client's
/// close code; invalid UTF-8 closes with 1007.
#[actix_rt::test]
async fn gateway_echo_route_echoes() {
    support::logs();
    let gw = wsgate::app::Gateway::start(support::settings(Vec::new())).await.expect("gateway starts");
    let url = format!("ws://{}/__echo", gw.addr);
    let mut ws = support::ws_connect(&url, &[]).await.expect("upgraded");
    ws.send(Message::text("héllo")).await.expect("sent");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.expect("sent");
    ws.send(Message::Frame(Frame::message(b"ab".to_vec(), OpCode::Data(Data::Text), false))).await.expect("sent");
    ws.send(Message::Frame(Frame::message(b"cd".to_vec(), OpCode::Data(Data::Continue), true))).await.expect("sent");
    ws.send(Message::Ping(b"x".to_vec().into())).await.expect("sent");
    let mut got = Vec::new();
    while got.len() < 4 {
        match tokio::time::timeout(LONG, ws.next()).await {
            Ok(Some(Ok(m))) => got.push(m),
            other => panic!("an echo within the deadline: {other:?} after {got:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            Message::text("héllo"),
            Message::binary(vec![1u8, 2, 3]),
            Message::text("abcd"),
            Message::Pong(b"x".to_vec().into())
        ]
    );
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Library(4001), reason: "".into() })))
        .await
        .expect("sent");
    match tokio::time::timeout(LONG, ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 4001),
        other => panic!("the close echoed: {other:?}"),
    }

    let mut ws = support::ws_connect(&url, &[]).await.expect("upgraded");
    let bad = Frame::message(vec![0xed, 0xa0, 0x80], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.expect("sent");
    match tokio::time::timeout(LONG, ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1007),
        other => panic!("a close 1007: {other:?}"),
    }
    gw.shutdown().await;
}
