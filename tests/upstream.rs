//! Upstream behaviour end to end: real WebSocket servers on 127.0.0.1:0, a
//! real fault proxy, the real gateway in-process. Timing assertions are
//! lower bounds (a loaded machine only makes things later) or generous
//! upper bounds; every wait has a deadline.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{eventually, metric, settings, FaultProxy, Feed};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use wsgate::app::Gateway;
use wsgate::config::{AuthKind, Dur, Matcher, Overflow, Secret, Size, UpstreamConfig};
use wsgate::fanout::{Delivery, Filter, Item, Next, QueueStream, SubQueue, Subscription};
use wsgate::model::LinkState;
use wsgate::transport::ReconnectPolicy;

const LONG: Duration = Duration::from_secs(20);

fn upstream(name: &str, url: String) -> UpstreamConfig {
    let mut u = UpstreamConfig::new(name, url);
    u.reconnect.initial = Dur::ms(50);
    u.reconnect.max = Dur::ms(200);
    u.reconnect.jitter = 0.0;
    u.connect_timeout = Dur::secs(5);
    u
}

async fn start(upstreams: Vec<UpstreamConfig>) -> Gateway {
    support::logs();
    Gateway::start(settings(upstreams)).await.expect("gateway starts")
}

fn state(gw: &Gateway, name: &str) -> LinkState {
    gw.board.upstreams().iter().find(|u| u.name == name).map(|u| u.state()).expect("known upstream")
}

fn view(gw: &Gateway, name: &str) -> wsgate::upstream::UpstreamView {
    gw.board.upstreams().iter().find(|u| u.name == name).map(|u| u.view()).expect("known upstream")
}

fn metrics(gw: &Gateway) -> String {
    String::from_utf8(gw.metrics.encode()).unwrap()
}

fn count(gw: &Gateway, series: &str) -> f64 {
    metric(&metrics(gw), series).unwrap_or(0.0)
}

async fn connected(gw: &Gateway, name: &str) {
    eventually(LONG, &format!("{name} connected"), || state(gw, name) == LinkState::Connected).await;
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
    async fn next(&mut self) -> Arc<Delivery> {
        loop {
            if let Some(d) = self.buffered.pop_front() {
                return d;
            }
            match tokio::time::timeout(LONG, self.stream.next()).await.expect("a message within the deadline") {
                Some(Next::Items(items)) => self.buffered.extend(items.into_iter().filter_map(|i| match i {
                    Item::Message(d) => Some(d),
                    Item::Event(_) => None,
                })),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

async fn http(gw: &Gateway, path: &str) -> (u16, String) {
    let mut resp = awc::Client::new().get(format!("http://{}{path}", gw.addr)).send().await.unwrap();
    let body = resp.body().await.unwrap();
    (resp.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// bearer, basic, header and query auth put the token where configured, and
/// the query token never shows in /status.
#[actix_rt::test]
async fn auth_kinds_put_the_token_where_configured() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let mut ups = Vec::new();
    for (name, kind) in [
        ("bearer", AuthKind::Bearer),
        ("basic", AuthKind::Basic),
        ("header", AuthKind::Header),
        ("query", AuthKind::Query),
    ] {
        let mut u = upstream(name, feed.url(&format!("/{name}?depth=5")));
        u.auth.kind = kind;
        u.auth.token = Some(Secret::new(format!("tok {name}")));
        match kind {
            AuthKind::Basic => u.auth.username = Some("alice".into()),
            AuthKind::Header => u.auth.header_name = Some("X-Api-Key".into()),
            AuthKind::Query => u.auth.param = Some("key".into()),
            _ => {}
        }
        ups.push(u);
    }
    let gw = start(ups).await;
    for name in ["bearer", "basic", "header", "query"] {
        connected(&gw, name).await;
    }
    let seen = feed.log.attempts();
    let by_path = |p: &str| seen.iter().find(|s| s.uri.starts_with(p)).unwrap().clone();
    assert_eq!(by_path("/bearer").header("authorization"), Some("Bearer tok bearer"));
    assert_eq!(by_path("/basic").header("authorization"), Some("Basic YWxpY2U6dG9rIGJhc2lj")); // alice:tok basic
    assert_eq!(by_path("/header").header("x-api-key"), Some("tok header"));
    assert_eq!(by_path("/query").uri, "/query?depth=5&key=tok%20query");
    let (code, body) = http(&gw, "/status").await;
    assert_eq!(code, 200);
    assert!(!body.contains("tok%20query") && !body.contains("tok query"), "token in /status: {body}");
    assert!(body.contains("/query?depth=5"), "{body}");
    gw.shutdown().await;
}

/// Message auth: replies before success are ignored (not delivered); the
/// failure pointer and the timeout both count as reason `auth`.
#[actix_rt::test]
async fn message_auth_success_failure_and_timeout() {
    let feed = Feed::start(|mut c| async move {
        let Some(auth) = c.recv_text().await else { return };
        if auth.contains("\"good\\\"one\"") {
            c.send_text(r#"{"type":"hello"}"#).await;
            c.send_text(r#"{"type":"connection_established"}"#).await;
            // on_connect arrives after auth
            let sub = c.recv_text().await.unwrap_or_default();
            c.send_text(format!(r#"{{"type":"trade","echo":{}}}"#, serde_json::to_string(&sub).unwrap())).await;
        } else if auth.contains("bad") {
            c.send_text(r#"{"type":"error"}"#).await;
        }
        c.drain().await;
    });
    let mk = |name: &str, token: &str| {
        let mut u = upstream(name, feed.url("/"));
        u.auth.kind = AuthKind::Message;
        u.auth.token = Some(Secret::new(token));
        u.auth.message = Some(r#"{"type":"auth","token":"{{token}}"}"#.into());
        u.auth.success = Some(Matcher { pointer: "/type".into(), equals: "connection_established".into() });
        u.auth.failure = Some(Matcher { pointer: "/type".into(), equals: "error".into() });
        u.auth.timeout = Dur::ms(300);
        u.on_connect = vec![r#"{"type":"subscribe"}"#.into()];
        u
    };
    let gw = start(vec![mk("good", "good\"one"), mk("bad", "bad"), mk("silent", "silent")]).await;
    let mut st = tap(&gw);
    connected(&gw, "good").await;
    let d = st.next().await;
    assert_eq!(&*d.msg.upstream, "good");
    assert_eq!(&*d.msg.topic, "trade", "the hello reply was delivered: {:?}", d.msg.raw);
    assert_eq!(d.seq, 1);
    eventually(LONG, "bad and silent fail auth", || {
        count(&gw, r#"wsgate_upstream_connect_failures_total{reason="auth",upstream="bad"}"#) >= 1.0
            && count(&gw, r#"wsgate_upstream_connect_failures_total{reason="auth",upstream="silent"}"#) >= 1.0
    })
    .await;
    assert!(view(&gw, "silent").last_error.unwrap().contains("no auth reply"));
    assert!(view(&gw, "bad").last_error.unwrap().contains("rejected"));
    gw.shutdown().await;
}

/// A token file is read again at every reconnect (rotated Kubernetes Secret).
#[actix_rt::test]
async fn token_file_is_reread_at_reconnect() {
    let feed = Feed::start(|mut c| async move {
        if c.index == 0 {
            return; // drop the first link
        }
        c.drain().await
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "one\n").unwrap();
    let mut u = upstream("f", feed.url("/"));
    u.auth.kind = AuthKind::Bearer;
    u.auth.token_file = Some(path.clone());
    let gw = start(vec![u]).await;
    eventually(LONG, "first attempt", || !feed.log.attempts().is_empty()).await;
    std::fs::write(&path, "two").unwrap();
    eventually(LONG, "second connection", || feed.log.accepted() >= 2).await;
    let auths: Vec<_> = feed.log.attempts().iter().map(|s| s.header("authorization").unwrap().to_string()).collect();
    assert_eq!(auths[0], "Bearer one");
    assert_eq!(auths.last().unwrap(), "Bearer two");
    gw.shutdown().await;
}

/// on_connect messages are sent in order at every (re)connect.
#[actix_rt::test]
async fn resubscribes_after_the_server_drops_the_link() {
    let feed = Feed::start(|mut c| async move {
        c.recv_text().await;
        c.recv_text().await;
        if c.index == 0 {
            return; // TCP closed without a close frame
        }
        c.drain().await
    });
    let mut u = upstream("f", feed.url("/"));
    u.on_connect = vec!["sub-1".into(), "sub-2".into()];
    let gw = start(vec![u]).await;
    eventually(LONG, "resubscribed", || feed.log.received().len() >= 4).await;
    assert_eq!(
        feed.log.received(),
        vec![(0, "sub-1".into()), (0, "sub-2".into()), (1, "sub-1".into()), (1, "sub-2".into())]
    );
    connected(&gw, "f").await;
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="tcp",upstream="f"}"#), 1.0);
    assert_eq!(count(&gw, r#"wsgate_upstream_connects_total{upstream="f"}"#), 2.0);
    assert!(view(&gw, "f").reconnects >= 1);
    gw.shutdown().await;
}

/// Against a server that accepts then drops, delays grow as the policy says
/// (the backoff is not reset by a successful upgrade): no reconnect storm.
#[actix_rt::test]
async fn backoff_grows_against_accept_then_drop() {
    let feed = Feed::start(|_c| async move {});
    let mut u = upstream("f", feed.url("/"));
    u.reconnect.initial = Dur::ms(100);
    u.reconnect.max = Dur::ms(800);
    u.reconnect.multiplier = 2.0;
    u.reconnect.jitter = 0.5;
    let cfg = u.reconnect.clone();
    let gw = start(vec![u]).await;
    eventually(LONG, "6 attempts", || feed.log.attempts().len() >= 6).await;
    let at: Vec<Instant> = feed.log.attempts().iter().map(|s| s.at).collect();
    for n in 0..5 {
        let gap = at[n + 1] - at[n];
        let (lo, hi) = ReconnectPolicy::bounds(&cfg, n as u32);
        assert!(gap + Duration::from_millis(5) >= lo, "gap {n} = {gap:?} below the policy's lower bound {lo:?}");
        assert!(gap <= hi + Duration::from_secs(2), "gap {n} = {gap:?} far above {hi:?}");
    }
    // 5 gaps of at least 50+100+200+400+400 ms: a storm would be far faster.
    assert!(at[5] - at[0] >= Duration::from_millis(1150), "storm: {:?}", at[5] - at[0]);
    gw.shutdown().await;
}

/// A half-open link (proxy stops forwarding, sockets stay open) is detected
/// within interval + timeout, counted as dead_link; RTT was measured before.
#[actix_rt::test]
async fn half_open_link_is_detected() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let proxy = FaultProxy::start(feed.addr);
    let mut u = upstream("f", format!("ws://{}/", proxy.addr));
    u.heartbeat.interval = Dur::ms(200);
    u.heartbeat.timeout = Dur::ms(400);
    let gw = start(vec![u]).await;
    connected(&gw, "f").await;
    eventually(LONG, "a pong measured", || view(&gw, "f").rtt_ms.is_some()).await;
    assert!(count(&gw, r#"wsgate_upstream_ping_rtt_seconds_count{upstream="f"}"#) >= 1.0);

    proxy.blackhole(true);
    let cut = Instant::now();
    eventually(LONG, "dead link detected", || state(&gw, "f") != LinkState::Connected).await;
    let detected = cut.elapsed();
    eprintln!("half-open link detected after {detected:?} (interval 200ms + timeout 400ms)");
    assert!(detected <= Duration::from_millis(600) + Duration::from_secs(2), "{detected:?}");
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="dead_link",upstream="f"}"#), 1.0);

    proxy.blackhole(false);
    connected(&gw, "f").await;
    gw.shutdown().await;
}

/// A feed that answers pings but sends no data trips idle_timeout (reason idle).
#[actix_rt::test]
async fn silent_feed_trips_idle_timeout() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let mut u = upstream("f", feed.url("/"));
    u.heartbeat.interval = Dur::ms(100);
    u.heartbeat.timeout = Dur::secs(5);
    u.heartbeat.idle_timeout = Dur::ms(400);
    let gw = start(vec![u]).await;
    eventually(LONG, "idle disconnect", || {
        count(&gw, r#"wsgate_upstream_disconnects_total{reason="idle",upstream="f"}"#) >= 1.0
    })
    .await;
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="dead_link",upstream="f"}"#), 0.0);
    gw.shutdown().await;
}

fn raw_frame(opcode: Data, payload: &[u8], fin: bool) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(opcode), fin))
}

/// Fragmented messages are reassembled and routed by topic; invalid JSON is
/// counted and dropped without a number; a binary frame on a json upstream too.
#[actix_rt::test]
async fn fragments_are_reassembled_and_invalid_data_counted() {
    let feed = Feed::start(|mut c| async move {
        let _ = c.ws.send(raw_frame(Data::Text, br#"{"type":"tr"#, false)).await;
        let _ = c.ws.send(raw_frame(Data::Continue, br#"ade","v":"h"#, false)).await;
        let _ = c.ws.send(raw_frame(Data::Continue, "é\"}".as_bytes(), true)).await;
        c.send_text("not json").await;
        let _ = c.ws.send(Message::binary(vec![1u8, 2, 3])).await;
        c.send_text(r#"{"type":"book"}"#).await;
        c.drain().await
    });
    let gw = start(vec![upstream("f", feed.url("/"))]).await;
    let mut st = tap(&gw);
    let d = st.next().await;
    assert_eq!(&d.msg.raw[..], r#"{"type":"trade","v":"hé"}"#.as_bytes());
    assert_eq!((&*d.msg.topic, d.seq), ("trade", 1));
    let d = st.next().await;
    assert_eq!((&*d.msg.topic, d.seq), ("book", 2));
    assert_eq!(count(&gw, r#"wsgate_upstream_decode_errors_total{upstream="f"}"#), 2.0);
    assert_eq!(count(&gw, r#"wsgate_upstream_messages_total{upstream="f"}"#), 2.0);
    gw.shutdown().await;
}

/// A message over max_message_size, whole or fragmented, closes with 1009
/// (reason oversize); invalid UTF-8 closes with 1007 (reason protocol).
#[actix_rt::test]
async fn oversize_and_invalid_utf8_close_the_link() {
    let feed = Feed::start(|mut c| async move {
        match c.index {
            0 => drop(c.ws.send(Message::text("x".repeat(2000))).await),
            1 => {
                let _ = c.ws.send(raw_frame(Data::Text, &[b'a'; 600], false)).await;
                let _ = c.ws.send(raw_frame(Data::Continue, &[b'b'; 600], true)).await;
            }
            2 => drop(c.ws.send(raw_frame(Data::Text, &[0xc3, 0x28], true)).await),
            _ => {}
        }
        c.drain().await
    });
    let mut u = upstream("f", feed.url("/"));
    u.max_message_size = Size(1024);
    let gw = start(vec![u]).await;
    eventually(LONG, "three closes", || feed.log.closes().len() >= 3).await;
    assert_eq!(&feed.log.closes()[..3], &[1009, 1009, 1007]);
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="oversize",upstream="f"}"#), 2.0);
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="protocol",upstream="f"}"#), 1.0);
    connected(&gw, "f").await;
    gw.shutdown().await;
}

/// A server close frame is answered, its code kept in /status (reason closed).
#[actix_rt::test]
async fn server_close_code_is_recorded() {
    let feed = Feed::start(|mut c| async move {
        if c.index == 0 {
            let frame = CloseFrame { code: CloseCode::from(4001), reason: "bye".into() };
            let _ = c.ws.send(Message::Close(Some(frame))).await;
        }
        c.drain().await
    });
    let gw = start(vec![upstream("f", feed.url("/"))]).await;
    eventually(LONG, "closed counted", || {
        count(&gw, r#"wsgate_upstream_disconnects_total{reason="closed",upstream="f"}"#) >= 1.0
    })
    .await;
    assert_eq!(view(&gw, "f").last_close_code, Some(4001));
    let (_, body) = http(&gw, "/status").await;
    assert!(body.contains("\"last_close_code\":4001"), "{body}");
    gw.shutdown().await;
}

/// A 401 on the upgrade is reason `auth`, retried with backoff, not in a storm.
#[actix_rt::test]
async fn handshake_401_is_auth_and_bounded() {
    let gate: support::Gate = Arc::new(|_, _| Err((401, vec![])));
    let feed = Feed::start_gated(gate, None, |_c| async move {});
    let mut u = upstream("f", feed.url("/"));
    u.reconnect.initial = Dur::ms(100);
    u.reconnect.max = Dur::secs(1);
    u.reconnect.jitter = 0.0;
    let gw = start(vec![u]).await;
    eventually(LONG, "4 refused attempts", || feed.log.attempts().len() >= 4).await;
    let at: Vec<Instant> = feed.log.attempts().iter().map(|s| s.at).collect();
    assert!(at[3] - at[0] >= Duration::from_millis(100 + 200 + 400 - 15), "storm: {:?}", at[3] - at[0]);
    assert!(count(&gw, r#"wsgate_upstream_connect_failures_total{reason="auth",upstream="f"}"#) >= 3.0);
    assert!(view(&gw, "f").last_error.unwrap().contains("401"));
    gw.shutdown().await;
}

/// 429 and 503 with Retry-After wait at least that long (reasons http_4xx, http_5xx).
#[actix_rt::test]
async fn retry_after_is_honoured() {
    let gate: support::Gate = Arc::new(|n, _| match n {
        0 => Err((429, vec![("Retry-After".into(), "1".into())])),
        1 => Err((503, vec![("Retry-After".into(), "1".into())])),
        _ => Ok(vec![]),
    });
    let feed = Feed::start_gated(gate, None, |mut c| async move { c.drain().await });
    let gw = start(vec![upstream("f", feed.url("/"))]).await;
    connected(&gw, "f").await;
    let at: Vec<Instant> = feed.log.attempts().iter().map(|s| s.at).collect();
    assert!(at[1] - at[0] >= Duration::from_millis(990), "{:?}", at[1] - at[0]);
    assert!(at[2] - at[1] >= Duration::from_millis(990), "{:?}", at[2] - at[1]);
    assert_eq!(count(&gw, r#"wsgate_upstream_connect_failures_total{reason="http_4xx",upstream="f"}"#), 1.0);
    assert_eq!(count(&gw, r#"wsgate_upstream_connect_failures_total{reason="http_5xx",upstream="f"}"#), 1.0);
    gw.shutdown().await;
}

/// A panic while one upstream's data is handled restarts that upstream only
/// (reason panic); the other keeps its link and HTTP keeps answering.
#[actix_rt::test]
async fn panic_restarts_only_that_upstream() {
    let bad = Feed::start(|mut c| async move {
        if c.index == 0 {
            c.send_text("__wsgate_test_panic__").await;
        } else {
            c.send_text(r#"{"type":"after"}"#).await;
        }
        c.drain().await
    });
    let good = Feed::start(|mut c| async move { c.drain().await });
    let gw = start(vec![upstream("bad", bad.url("/")), upstream("good", good.url("/"))]).await;
    let mut st = tap(&gw);
    connected(&gw, "good").await;
    let d = st.next().await;
    assert_eq!((&*d.msg.upstream, &*d.msg.topic, d.seq), ("bad", "after", 1));
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="panic",upstream="bad"}"#), 1.0);
    assert_eq!(bad.log.accepted(), 2);
    assert_eq!(good.log.accepted(), 1, "the other upstream was reconnected");
    assert_eq!(state(&gw, "good"), LinkState::Connected);
    assert_eq!(http(&gw, "/healthz").await, (200, "ok".into()));
    gw.shutdown().await;
}

/// wss:// verifies against bundled roots plus tls.ca_file; without the CA the
/// failure is reason tls.
#[actix_rt::test]
async fn wss_with_a_private_ca() {
    let pki = support::tls::pki();
    let feed = Feed::start_gated(Arc::new(|_, _| Ok(vec![])), Some(Arc::clone(&pki.server)), |mut c| async move {
        c.send_text(r#"{"type":"secure"}"#).await;
        c.drain().await
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = format!("wss://localhost:{}/", feed.addr.port());
    let mut trusted = upstream("trusted", url.clone());
    trusted.tls.ca_file = Some(ca);
    let untrusted = upstream("untrusted", url);
    let gw = start(vec![trusted, untrusted]).await;
    let mut st = tap(&gw);
    connected(&gw, "trusted").await;
    assert_eq!(&*st.next().await.msg.topic, "secure");
    eventually(LONG, "untrusted fails with tls", || {
        count(&gw, r#"wsgate_upstream_connect_failures_total{reason="tls",upstream="untrusted"}"#) >= 1.0
    })
    .await;
    gw.shutdown().await;
}

/// A refused TCP connect is reason tcp; an unknown host is reason dns.
#[actix_rt::test]
async fn tcp_and_dns_failures_are_classified() {
    let port = support::free_port();
    let gw = start(vec![
        upstream("closed", format!("ws://127.0.0.1:{port}/")),
        upstream("nxdomain", "ws://no-such-host.invalid/".into()),
    ])
    .await;
    eventually(LONG, "tcp and dns failures", || {
        count(&gw, r#"wsgate_upstream_connect_failures_total{reason="tcp",upstream="closed"}"#) >= 1.0
            && count(&gw, r#"wsgate_upstream_connect_failures_total{reason="dns",upstream="nxdomain"}"#) >= 1.0
    })
    .await;
    gw.shutdown().await;
}

/// 50 upstreams connect at once and /readyz turns from 503 (naming them) to 200.
#[actix_rt::test]
async fn fifty_upstreams_reach_ready() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let ups = (0..50).map(|i| upstream(&format!("u{i}"), feed.url(&format!("/{i}")))).collect();
    let gw = start(ups).await;
    let (code, body) = http(&gw, "/readyz").await;
    if code == 503 {
        assert!(body.contains("\"upstream\":\"u"), "{body}");
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = http(&gw, "/readyz").await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < end, "not ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(feed.log.accepted(), 50);
    gw.shutdown().await;
}

/// Regression: a quiet but healthy feed with interval == timeout (the
/// defaults' shape) is never cut; the dead-link clock starts at the ping.
#[actix_rt::test]
async fn quiet_healthy_feed_stays_connected() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let mut u = upstream("f", feed.url("/"));
    u.heartbeat.interval = Dur::ms(150);
    u.heartbeat.timeout = Dur::ms(150);
    let gw = start(vec![u]).await;
    connected(&gw, "f").await;
    eventually(LONG, "5 pongs", || count(&gw, r#"wsgate_upstream_ping_rtt_seconds_count{upstream="f"}"#) >= 5.0).await;
    assert_eq!(feed.log.accepted(), 1, "the quiet link was cut");
    assert_eq!(state(&gw, "f"), LinkState::Connected);
    gw.shutdown().await;
}

/// A panic outside the guarded data path kills the actor beyond its
/// supervisor; the gateway notices and starts the upstream again.
#[actix_rt::test]
async fn dead_upstream_actor_is_revived() {
    let feed = Feed::start(|mut c| async move {
        if c.index == 0 {
            c.send_text("__wsgate_test_panic_uncaught__").await;
        }
        c.drain().await
    });
    let mut gw = start(vec![upstream("f", feed.url("/"))]).await;
    eventually(LONG, "the actor died", || {
        feed.log.accepted() == 1 && gw.board.upstreams()[0].state() == LinkState::Connected
    })
    .await;
    let end = Instant::now() + LONG;
    while gw.revive_dead_upstreams().is_empty() {
        assert!(Instant::now() < end, "the dead actor was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(LONG, "reconnected by the new actor", || feed.log.accepted() == 2).await;
    connected(&gw, "f").await;
    gw.shutdown().await;
}

/// A frame whose header declares 1 GiB is refused at the header (reason
/// oversize), not buffered: the codec alone would wait for the whole frame.
#[actix_rt::test]
async fn huge_declared_frame_is_refused_at_the_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let feed = Feed::start(|mut c| async move {
        if c.index > 0 {
            return c.drain().await;
        }
        let io = c.ws.get_mut();
        // FIN + text, 64-bit length 2^30, unmasked (server to client).
        let _ = io.write_all(&[0x81, 127, 0, 0, 0, 0, 0x40, 0, 0, 0]).await;
        for _ in 0..32 {
            if io.write_all(&[b'a'; 64 * 1024]).await.is_err() {
                return;
            }
        }
        let mut buf = [0u8; 1024];
        while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut u = upstream("f", feed.url("/"));
    u.max_message_size = Size(1024 * 1024);
    let gw = start(vec![u]).await;
    eventually(LONG, "oversize at the header", || {
        count(&gw, r#"wsgate_upstream_disconnects_total{reason="oversize",upstream="f"}"#) == 1.0
    })
    .await;
    assert!(view(&gw, "f").last_error.unwrap().contains("1073741824-byte frame"));
    connected(&gw, "f").await;
    gw.shutdown().await;
}
