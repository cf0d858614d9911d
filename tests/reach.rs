//! SPEC §12 end to end: upstreams through real HTTP CONNECT (tinyproxy) and
//! SOCKS5 (microsocks) proxies, over a Unix socket (Python `websockets`),
//! and the handshake options (`origin`, `user_agent`, subprotocols,
//! headers, `close_timeout`) as a recording feed sees them. Proxies and
//! servers run on 127.0.0.1 and are stopped by PID; every wait has a deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use support::proxies::{microsocks, require, tinyproxy};
use support::{eventually, metric, settings, Feed};
use wsgate::app::Gateway;
use wsgate::config::{Dur, Overflow, Secret, UpstreamConfig};
use wsgate::fanout::{Delivery, Filter, Item, Next, QueueStream, SubQueue, Subscription};
use wsgate::model::LinkState;

const LONG: Duration = Duration::from_secs(20);

fn upstream(name: &str, url: String) -> UpstreamConfig {
    let mut u = UpstreamConfig::new(name, url);
    u.reconnect.initial = Dur::ms(50);
    u.reconnect.max = Dur::ms(200);
    u.reconnect.jitter = 0.0;
    u.connect_timeout = Dur::secs(5);
    u.proxy.url = "none".into();
    u
}

async fn start(upstreams: Vec<UpstreamConfig>) -> Gateway {
    support::logs();
    Gateway::start(settings(upstreams)).await.expect("gateway starts")
}

fn state(gw: &Gateway, name: &str) -> LinkState {
    gw.board.upstreams().iter().find(|u| u.name == name).map(|u| u.state()).expect("known upstream")
}

fn count(gw: &Gateway, series: &str) -> f64 {
    metric(&String::from_utf8(gw.metrics.encode()).unwrap(), series).unwrap_or(0.0)
}

async fn connected(gw: &Gateway, name: &str) {
    eventually(LONG, &format!("{name} connected"), || state(gw, name) == LinkState::Connected).await;
}

async fn fails_with(gw: &Gateway, name: &str, reason: &str) {
    let series = format!(r#"wsgate_upstream_connect_failures_total{{reason="{reason}",upstream="{name}"}}"#);
    eventually(LONG, &format!("{name} fails with {reason}"), || count(gw, &series) >= 1.0).await;
}

async fn status(gw: &Gateway) -> String {
    let addr = gw.addr;
    tokio::task::spawn_blocking(move || support::http_get(addr, "/status").unwrap().1).await.unwrap()
}

/// A raw subscriber on the hub, to see what upstreams deliver.
struct Tap {
    _sub: Subscription,
    stream: QueueStream,
    buffered: std::collections::VecDeque<Arc<Delivery>>,
}

fn tap(gw: &Gateway) -> Tap {
    let q = SubQueue::new(100_000, Overflow::DropNewest, false, gw.metrics.subscriber("stdout"));
    let sub = gw.hub.subscribe(Arc::clone(&q), Filter::from_lists(&[], &[], 64).unwrap()).unwrap();
    Tap { _sub: sub, stream: q.stream(), buffered: Default::default() }
}

impl Tap {
    /// The next message of `upstream`; others stay buffered for their turn.
    async fn next_of(&mut self, upstream: &str) -> Arc<Delivery> {
        loop {
            if let Some(i) = self.buffered.iter().position(|d| &*d.msg.upstream == upstream) {
                if let Some(d) = self.buffered.remove(i) {
                    return d;
                }
            }
            match tokio::time::timeout(LONG, self.stream.next()).await.expect("a message within the deadline") {
                Some(Next::Items(items)) => self.buffered.extend(items.into_iter().filter_map(|i| match i {
                    Item::Message(d) => Some(d),
                    _ => None,
                })),
                other => panic!("queue ended: {:?}", other.is_some()),
            }
        }
    }
}

/// A feed that greets every connection with `{"type":"hello","path":…}`.
fn greeting_feed(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Feed {
    Feed::start_gated(Arc::new(|_, _| Ok(vec![])), tls, |mut c| async move {
        c.send_text(r#"{"type":"hello"}"#).await;
        c.drain().await
    })
}

/// ws:// and wss:// through tinyproxy with Basic proxy auth (password from a
/// file and inline); a wrong password and no credentials are both refused
/// with 407 and counted as reason `proxy`; tinyproxy's log shows our
/// CONNECTs; the password shows nowhere in /status.
#[actix_rt::test]
async fn http_connect_proxy_with_auth() {
    let Some(bin) = require("tinyproxy", "tinyproxy") else { return };
    let proxy = tinyproxy(&bin, Some(("alice", "pr0xy-pass")));
    let plain = greeting_feed(None);
    let pki = support::tls::pki();
    let secure = greeting_feed(Some(Arc::clone(&pki.server)));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let pass_file = dir.path().join("proxy-pass");
    std::fs::write(&pass_file, "pr0xy-pass\n").unwrap();
    let proxy_url = format!("http://{}", proxy.addr);

    let mut ws = upstream("plain", plain.url("/"));
    ws.proxy.url = proxy_url.clone();
    ws.proxy.username = Some("alice".into());
    ws.proxy.password_file = Some(pass_file);
    let mut wss = upstream("secure", format!("wss://localhost:{}/", secure.addr.port()));
    wss.tls.ca_file = Some(ca);
    wss.proxy.url = format!("http://alice:pr0xy-pass@{}", proxy.addr);
    let mut wrong = upstream("wrong", plain.url("/wrong"));
    wrong.proxy.url = proxy_url.clone();
    wrong.proxy.username = Some("alice".into());
    wrong.proxy.password = Some(Secret::new("not-the-pass"));
    let mut anonymous = upstream("anonymous", plain.url("/anonymous"));
    anonymous.proxy.url = proxy_url;

    let gw = start(vec![ws, wss, wrong, anonymous]).await;
    let mut t = tap(&gw);
    connected(&gw, "plain").await;
    connected(&gw, "secure").await;
    assert_eq!(&*t.next_of("plain").await.msg.topic, "hello");
    assert_eq!(&*t.next_of("secure").await.msg.topic, "hello");
    fails_with(&gw, "wrong", "proxy").await;
    fails_with(&gw, "anonymous", "proxy").await;
    assert!(plain.log.attempts().iter().all(|s| s.uri == "/"), "refused links reached the feed");

    let log = proxy.log_text();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", plain.addr.port())), "{log}");
    assert!(log.contains(&format!("CONNECT localhost:{} HTTP/1.1", secure.addr.port())), "{log}");
    let body = status(&gw).await;
    assert!(body.contains("407"), "the last error names the 407: {body}");
    assert!(!body.contains("pr0xy-pass") && !body.contains("not-the-pass"), "{body}");
    gw.shutdown().await;
}

/// ws:// through socks5:// (names resolved here) and wss:// through
/// socks5h:// (the proxy resolves `localhost`), with RFC 1929 auth; a wrong
/// password is reason `proxy`; microsocks' log shows both targets.
#[actix_rt::test]
async fn socks5_proxy_with_auth() {
    let Some(bin) = require("microsocks", "microsocks") else { return };
    let proxy = microsocks(&bin, Some(("bob", "s0cks-pass")));
    let plain = greeting_feed(None);
    let pki = support::tls::pki();
    let secure = greeting_feed(Some(Arc::clone(&pki.server)));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    let mut ws = upstream("socks", plain.url("/"));
    ws.proxy.url = format!("socks5://{}", proxy.addr);
    ws.proxy.username = Some("bob".into());
    ws.proxy.password = Some(Secret::new("s0cks-pass"));
    let mut wss = upstream("socksh", format!("wss://localhost:{}/", secure.addr.port()));
    wss.tls.ca_file = Some(ca);
    wss.proxy.url = format!("socks5h://bob:s0cks-pass@{}", proxy.addr);
    let mut wrong = upstream("wrong", plain.url("/wrong"));
    wrong.proxy.url = format!("socks5://bob:nope@{}", proxy.addr);
    let mut anonymous = upstream("anonymous", plain.url("/anonymous"));
    anonymous.proxy.url = format!("socks5://{}", proxy.addr);

    let gw = start(vec![ws, wss, wrong, anonymous]).await;
    let mut t = tap(&gw);
    connected(&gw, "socks").await;
    connected(&gw, "socksh").await;
    assert_eq!(&*t.next_of("socks").await.msg.topic, "hello");
    assert_eq!(&*t.next_of("socksh").await.msg.topic, "hello");
    fails_with(&gw, "wrong", "proxy").await;
    fails_with(&gw, "anonymous", "proxy").await;
    assert!(plain.log.attempts().iter().all(|s| s.uri == "/"), "refused links reached the feed");
    let log = proxy.log_text();
    assert!(log.contains(&format!("connected to 127.0.0.1:{}", plain.addr.port())), "{log}");
    assert!(log.contains(&format!("connected to localhost:{}", secure.addr.port())), "{log}");
    let body = status(&gw).await;
    assert!(!body.contains("s0cks-pass") && !body.contains("nope"), "{body}");
    gw.shutdown().await;
}

/// A proxy that is not listening is reason `proxy`, not `tcp`.
#[actix_rt::test]
async fn unreachable_proxy_is_reason_proxy() {
    let feed = greeting_feed(None);
    let mut u = upstream("gone", feed.url("/"));
    u.proxy.url = format!("http://127.0.0.1:{}", support::free_port());
    let mut s = upstream("gone5", feed.url("/"));
    s.proxy.url = format!("socks5h://127.0.0.1:{}", support::free_port());
    let gw = start(vec![u, s]).await;
    fails_with(&gw, "gone", "proxy").await;
    fails_with(&gw, "gone5", "proxy").await;
    assert_eq!(feed.log.attempts().len(), 0);
    gw.shutdown().await;
}

/// `unix_socket`: the link goes over a Unix socket (Python `websockets`'
/// `unix_serve`), with the Host header and the path taken from `url`; a
/// socket path that does not exist is reason `tcp`.
#[actix_rt::test]
async fn unix_socket_link() {
    if !support::proxies::require_py_websockets() {
        return;
    }
    let server = support::proxies::py_server(true, &[]);
    let mut u = upstream("local", "ws://feed.internal:9999/stream?depth=5".into());
    u.unix_socket = Some(server.socket.clone());
    let mut missing = upstream("missing", "ws://feed.internal/".into());
    missing.unix_socket = Some(server.socket.with_file_name("no-such.sock"));
    let gw = start(vec![u, missing]).await;
    let mut t = tap(&gw);
    connected(&gw, "local").await;
    let hello: serde_json::Value = serde_json::from_slice(&t.next_of("local").await.msg.raw).unwrap();
    assert_eq!(hello["path"], "/stream?depth=5");
    assert_eq!(hello["host"], "feed.internal:9999");
    assert_eq!(hello["user_agent"], format!("wsgate/{}", env!("CARGO_PKG_VERSION")));
    fails_with(&gw, "missing", "tcp").await;
    gw.shutdown().await;
}

/// `origin`, `user_agent`, subprotocols and custom headers reach the feed's
/// handshake as configured; the server's subprotocol pick is accepted.
#[actix_rt::test]
async fn handshake_options_reach_the_feed() {
    let gate: support::Gate = Arc::new(|_, seen| match seen.header("sec-websocket-protocol") {
        Some(_) => Ok(vec![("Sec-WebSocket-Protocol".into(), "v1.feed".into())]),
        None => Ok(vec![]),
    });
    let feed = Feed::start_gated(gate, None, |mut c| async move { c.drain().await });
    let mut u = upstream("opts", feed.url("/opts"));
    u.origin = Some("https://app.example".into());
    u.user_agent = Some("feed-client/7".into());
    u.subprotocols = vec!["v2.feed".into(), "v1.feed".into()];
    u.headers.insert("X-Client".into(), "wsgate-test".into());
    let plain = upstream("plain", feed.url("/plain"));
    let gw = start(vec![u, plain]).await;
    connected(&gw, "opts").await;
    connected(&gw, "plain").await;
    let seen = feed.log.attempts();
    let opts = seen.iter().find(|s| s.uri == "/opts").unwrap();
    assert_eq!(opts.header("origin"), Some("https://app.example"));
    assert_eq!(opts.header("user-agent"), Some("feed-client/7"));
    let offered = opts.header("sec-websocket-protocol").unwrap_or_default().replace(' ', "");
    assert_eq!(offered, "v2.feed,v1.feed");
    assert_eq!(opts.header("x-client"), Some("wsgate-test"));
    let plain = seen.iter().find(|s| s.uri == "/plain").unwrap();
    assert_eq!(plain.header("origin"), None);
    assert_eq!(plain.header("user-agent"), Some(format!("wsgate/{}", env!("CARGO_PKG_VERSION")).as_str()));
    assert_eq!(plain.header("sec-websocket-protocol"), None);
    gw.shutdown().await;
}

/// After our close frame the old socket is kept (and read) for
/// `close_timeout`, then dropped: a feed that never answers the close sees
/// EOF about `close_timeout` after it, for a short and a long setting.
#[actix_rt::test]
async fn close_timeout_bounds_the_wait_for_the_close_reply() {
    use tokio::io::AsyncReadExt;
    let waits = Arc::new(std::sync::Mutex::new(Vec::<(String, Duration)>::new()));
    let w = Arc::clone(&waits);
    let feed = Feed::start(move |mut c| {
        let w = Arc::clone(&w);
        async move {
            let path = c.log.attempts().last().map(|s| s.uri.clone()).unwrap_or_default();
            // Silent: the gateway's idle_timeout closes the link with 1000.
            loop {
                match c.ws.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => break,
                    Some(Ok(_)) => continue,
                    _ => return,
                }
            }
            // Never answer: read the raw socket until the gateway drops it.
            let at = std::time::Instant::now();
            let mut buf = [0u8; 256];
            while matches!(c.ws.get_mut().read(&mut buf).await, Ok(n) if n > 0) {}
            w.lock().unwrap().push((path, at.elapsed()));
        }
    });
    let mut short = upstream("short", feed.url("/short"));
    short.close_timeout = Dur::ms(200);
    let mut long = upstream("long", feed.url("/long"));
    long.close_timeout = Dur::secs(3);
    for u in [&mut short, &mut long] {
        u.heartbeat.interval = Dur::ms(100);
        u.heartbeat.idle_timeout = Dur::ms(300);
        u.reconnect.initial = Dur::secs(30);
        u.reconnect.max = Dur::secs(30);
    }
    let gw = start(vec![short, long]).await;
    eventually(LONG, "both links dropped", || waits.lock().unwrap().len() >= 2).await;
    let got = waits.lock().unwrap().clone();
    let wait = |p: &str| got.iter().find(|(path, _)| path == p).map(|(_, d)| *d).unwrap();
    assert!(wait("/short") < Duration::from_millis(1500), "{got:?}");
    assert!(wait("/long") >= Duration::from_millis(2500), "{got:?}");
    assert!(wait("/long") < Duration::from_secs(10), "{got:?}");
    gw.shutdown().await;
}

/// permessage-deflate against Python `websockets`: with context takeover
/// (its default), with `server_no_context_takeover`, a server without it,
/// and `compression = "none"` against a deflate server. Every message
/// arrives intact; compressed links count far fewer wire bytes than
/// message bytes, uncompressed ones more.
#[actix_rt::test]
async fn permessage_deflate_against_python_websockets() {
    if !support::proxies::require_py_websockets() {
        return;
    }
    let pads: Vec<String> =
        (0..5).map(|i| format!(r#"{{"type":"pad","i":{i},"pad":"{}"}}"#, "abcdefgh".repeat(500))).collect();
    let send = pads.join("\n");
    let takeover = support::proxies::py_server(false, &[("WS_SEND", &send), ("WS_COMPRESSION", "deflate")]);
    let reset = support::proxies::py_server(false, &[("WS_SEND", &send), ("WS_COMPRESSION", "no_context_takeover")]);
    let plain = support::proxies::py_server(false, &[("WS_SEND", &send), ("WS_COMPRESSION", "none")]);
    let url = |port: u16| format!("ws://127.0.0.1:{port}/z");
    let mut off = upstream("off", url(takeover.port));
    off.compression = wsgate::config::Compression::None;
    let ups = vec![
        upstream("takeover", url(takeover.port)),
        upstream("reset", url(reset.port)),
        upstream("plain", url(plain.port)),
        off,
    ];
    let gw = start(ups).await;
    let mut t = tap(&gw);
    for name in ["takeover", "reset", "plain", "off"] {
        let hello: serde_json::Value = serde_json::from_slice(&t.next_of(name).await.msg.raw).unwrap();
        let offered = hello["extensions"].as_str().unwrap_or_default().to_string();
        if name == "off" {
            assert_eq!(offered, "", "{name}");
        } else {
            assert_eq!(offered, "permessage-deflate; client_max_window_bits", "{name}");
        }
        for pad in &pads {
            let got = t.next_of(name).await;
            assert_eq!(std::str::from_utf8(&got.msg.raw).unwrap(), pad, "{name}");
        }
    }
    let series = |family: &str, name: &str| count(&gw, &format!(r#"{family}{{upstream="{name}"}}"#));
    for name in ["takeover", "reset", "plain", "off"] {
        let (wire, bytes) =
            (series("wsgate_upstream_wire_bytes_total", name), series("wsgate_upstream_bytes_total", name));
        assert!(bytes > 20_000.0, "{name}: {bytes}");
        if name == "takeover" || name == "reset" {
            assert!(wire * 10.0 < bytes, "{name}: {wire} wire bytes for {bytes} message bytes");
        } else {
            assert!(wire > bytes, "{name}: {wire} wire bytes for {bytes} message bytes");
        }
    }
    // Context takeover: later messages refer back to the first, so they cost less than with resets.
    assert!(
        series("wsgate_upstream_wire_bytes_total", "takeover") < series("wsgate_upstream_wire_bytes_total", "reset"),
        "takeover should compress better"
    );
    gw.shutdown().await;
}

/// A decompression bomb (10 MB of zeros in one ~10 KB frame) closes the
/// link with 1009, reason `oversize`, without inflating past the limit.
#[actix_rt::test]
async fn deflate_bomb_closes_1009() {
    use flate2::{Compress, Compression, FlushCompress};
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    let gate: support::Gate =
        Arc::new(|_, _| Ok(vec![("Sec-WebSocket-Extensions".into(), "permessage-deflate".into())]));
    let feed = Feed::start_gated(gate, None, |mut c| async move {
        let mut z = Compress::new(Compression::best(), false);
        let mut bomb = Vec::with_capacity(64 * 1024);
        z.compress_vec(&vec![0u8; 10_000_000], &mut bomb, FlushCompress::Sync).unwrap();
        bomb.truncate(bomb.len() - 4);
        let header = FrameHeader { rsv1: true, opcode: OpCode::Data(Data::Binary), ..FrameHeader::default() };
        let frame = Frame::from_payload(header, bomb.into());
        let _ = c.ws.send(tokio_tungstenite::tungstenite::Message::Frame(frame)).await;
        c.drain().await
    });
    let mut u = upstream("bomb", feed.url("/"));
    u.max_message_size = wsgate::config::Size(1024 * 1024);
    u.reconnect.initial = Dur::secs(30);
    u.reconnect.max = Dur::secs(30);
    let gw = start(vec![u]).await;
    eventually(LONG, "the bomb closes the link with 1009", || feed.log.closes().contains(&1009)).await;
    let lost = r#"wsgate_upstream_disconnects_total{reason="oversize",upstream="bomb"}"#;
    eventually(LONG, "counted as oversize", || count(&gw, lost) >= 1.0).await;
    gw.shutdown().await;
}
