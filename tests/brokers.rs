//! Broker sinks end to end (SPEC §15) against the real NATS JetStream on
//! 127.0.0.1:4222 and the real Redis on 127.0.0.1:6379. A test whose server
//! is absent says so in one line and passes (a laptop without them).
//!
//! Each test uses its own stream names, subject prefixes and key prefixes
//! (process id + a counter), so runs in parallel do not collide, and deletes
//! what it made. Messages come from the hub's own publisher; every wait has
//! a deadline.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::{eventually, metric, FaultProxy};
use wsgate::config::{NatsConfig, Overflow, RedisConfig, Settings, SinkConfig, SinkFormat, Size};
use wsgate::fanout::{Closed, DataKind, Hub, Incoming, Publisher, SubQueue};
use wsgate::model::RunId;
use wsgate::subscriber::sinks::Sinks;
use wsgate::telemetry::Metrics;

const LONG: Duration = Duration::from_secs(30);
const NATS: &str = "127.0.0.1:4222";
const REDIS: &str = "127.0.0.1:6379";

// === helpers ===

/// True when something listens at `addr`; else prints the one skip line.
fn up(addr: &str, what: &str) -> bool {
    let sock: SocketAddr = addr.parse().unwrap();
    let ok = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok();
    if !ok {
        eprintln!("skipped: no {what} on {addr}");
    }
    ok
}

/// A name no other test (or parallel run) uses.
fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{what}{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn count(m: &Metrics, series: &str) -> f64 {
    metric(&String::from_utf8(m.encode()).unwrap(), series).unwrap_or(0.0)
}

fn delivered(m: &Metrics, kind: &str) -> f64 {
    count(m, &format!(r#"wsgate_subscriber_messages_total{{kind="{kind}"}}"#))
}

fn dropped(m: &Metrics, kind: &str, reason: &str) -> f64 {
    count(m, &format!(r#"wsgate_subscriber_dropped_total{{kind="{kind}",reason="{reason}"}}"#))
}

fn nats_sink(url: String, stream: &str, prefix: &str) -> NatsConfig {
    let mut cfg: NatsConfig = match toml::from_str::<SinkConfig>("kind = \"nats\"").unwrap() {
        SinkConfig::Nats(n) => n,
        other => panic!("{other:?}"),
    };
    cfg.url = url;
    cfg.stream = stream.into();
    cfg.subject = format!("{prefix}.{{upstream}}.{{topic}}");
    cfg
}

fn redis_sink(url: String, prefix: &str) -> RedisConfig {
    let mut cfg: RedisConfig = match toml::from_str::<SinkConfig>("kind = \"redis\"").unwrap() {
        SinkConfig::Redis(r) => r,
        other => panic!("{other:?}"),
    };
    cfg.url = url;
    cfg.stream = format!("{prefix}:{{upstream}}");
    cfg
}

/// A JSON message as an upstream would hand it to the hub.
fn incoming(upstream: &str, topic: &str, n: u64) -> Incoming {
    Incoming {
        upstream: upstream.into(),
        topic: topic.into(),
        raw: bytes::Bytes::from(json!({ "n": n }).to_string()),
        raw_is_text: true,
        kind: DataKind::Json,
        received_at: SystemTime::now(),
        received: Instant::now(),
        conn: 1,
    }
}

/// Publishes messages `n` of `upstream` (its publisher) on `topic`.
fn publish(p: &Publisher, upstream: &str, topic: &str, n: std::ops::RangeInclusive<u64>) {
    for i in n {
        p.publish(incoming(upstream, topic, i));
    }
}

/// One message as read back from JetStream.
#[derive(Debug)]
struct Stored {
    subject: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

async fn jetstream() -> jetstream::Context {
    jetstream::new(async_nats::connect(NATS).await.expect("NATS reachable"))
}

/// Every message of `stream`, read with a JetStream consumer.
async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let mut s = js.get_stream(stream).await.expect("the stream exists");
    let total = s.info().await.expect("stream info").state.messages as usize;
    let consumer: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config { ack_policy: consumer::AckPolicy::None, ..Default::default() })
        .await
        .expect("a consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let m = tokio::time::timeout(LONG, messages.next()).await.expect("a message in time").unwrap().unwrap();
        let headers = m
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(k, v)| (k.to_string(), v.first().map(|v| v.as_str().to_string()).unwrap_or_default()))
            .collect();
        let body = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        out.push(Stored { subject: m.subject.to_string(), headers, body });
    }
    out
}

async fn delete_stream(js: &jetstream::Context, stream: &str) {
    let _ = js.delete_stream(stream).await;
}

/// `wsgate-seq` of each stored message of `upstream`, in stream order.
fn seqs_of(stored: &[Stored], upstream: &str) -> Vec<u64> {
    stored
        .iter()
        .filter(|m| m.headers.get("wsgate-upstream").map(String::as_str) == Some(upstream))
        .map(|m| m.headers["wsgate-seq"].parse().unwrap())
        .collect()
}

// === nats ===

/// Every message is stored once, with the §15 headers and a sanitised
/// subject; the stream is created bound to `prefix.>`; shutdown stores
/// what is still queued before the sink stops.
#[actix_rt::test]
async fn nats_stores_every_message_once_with_headers() {
    if !up(NATS, "NATS") {
        return;
    }
    support::logs();
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    delete_stream(&js, &stream).await;
    let (hub, metrics, run) = (Hub::new(), Metrics::new(), RunId::random());
    let sinks =
        Sinks::start(&[SinkConfig::Nats(nats_sink(format!("nats://{NATS}"), &stream, &prefix))], &hub, &metrics, &run)
            .unwrap();
    let a = hub.publisher("feed-a");
    let b = hub.publisher("b.b");
    publish(&a, "feed-a", "", 1..=150);
    publish(&b, "b.b", "bad topic.x*", 1..=50);
    eventually(LONG, "the first messages stored", || delivered(&metrics, "nats") > 0.0).await;
    publish(&a, "feed-a", "", 151..=200);

    // Shutdown right away: the rest is stored before the sink stops.
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    assert_eq!(delivered(&metrics, "nats"), 250.0);
    assert_eq!(count(&metrics, r#"wsgate_subscribers{kind="nats"}"#), 0.0);

    let info = js.get_stream(&stream).await.unwrap().cached_info().clone();
    assert_eq!(info.config.subjects, vec![format!("{prefix}.>")]);
    let stored = read_stream(&js, &stream).await;
    assert_eq!(stored.len(), 250, "every message stored once");
    assert_eq!(seqs_of(&stored, "feed-a"), (1..=200).collect::<Vec<u64>>());
    assert_eq!(seqs_of(&stored, "b.b"), (1..=50).collect::<Vec<u64>>());

    let first = &stored[0];
    assert_eq!(first.subject, format!("{prefix}.feed-a._"), "an empty topic is _");
    assert_eq!(first.headers["Nats-Msg-Id"], format!("feed-a:{run}:1"));
    assert_eq!(first.headers["wsgate-topic"], "");
    assert!(humantime::parse_rfc3339(&first.headers["wsgate-received-at"]).is_ok());
    assert_eq!(first.body["upstream"], "feed-a");
    assert_eq!(first.body["seq"], 1);
    assert_eq!(first.body["data"], json!({ "n": 1 }));
    let from_b = stored.iter().find(|m| m.headers["wsgate-upstream"] == "b.b").unwrap();
    assert_eq!(from_b.subject, format!("{prefix}.b_b.bad_topic_x_"), "one token per value");
    assert_eq!(from_b.headers["wsgate-topic"], "bad topic.x*");
    delete_stream(&js, &stream).await;
}

/// `format = "raw"`: the body is the frame as received, with the same
/// headers; a message over the server's `max_payload` is dropped as `error`.
#[actix_rt::test]
async fn nats_raw_format_carries_the_frame_and_headers() {
    if !up(NATS, "NATS") {
        return;
    }
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let mut cfg = nats_sink(format!("nats://{NATS}"), &stream, &prefix);
    cfg.format = SinkFormat::Raw;
    // Connects through the credentials callback (the server here has no
    // auth, so any token passes).
    cfg.token = Some(wsgate::config::Secret::new("not-checked-here"));
    let sinks = Sinks::start(&[SinkConfig::Nats(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "t", 1..=3);
    eventually(LONG, "3 stored", || delivered(&metrics, "nats") == 3.0).await;
    let stored = read_stream(&js, &stream).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].body, json!({ "n": 3 }));
    assert_eq!(stored[2].headers["wsgate-seq"], "3");
    assert_eq!(stored[2].headers["wsgate-topic"], "t");

    // Over the server's max_payload: dropped as `error`, the next one stored.
    let mut big = incoming("a", "t", 4);
    big.raw = bytes::Bytes::from(format!("\"{}\"", "x".repeat(2 * 1024 * 1024)));
    a.publish(big);
    publish(&a, "a", "t", 5..=5);
    eventually(LONG, "4 stored", || delivered(&metrics, "nats") == 4.0).await;
    assert_eq!(dropped(&metrics, "nats", "error"), 1.0);
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    delete_stream(&js, &stream).await;
}

/// A TCP proxy with two cuts, counting what the client sends: while
/// `replies_cut`, the client's bytes still reach the server but the
/// server's (the acks) are dropped; while `all_cut`, both directions are
/// dropped (a dead path: sockets stay open, nothing arrives). Counts the
/// occurrences of `needle` (`Nats-Msg-Id:`, `XADD`) the client sent.
struct CutProxy {
    addr: SocketAddr,
    replies_cut: Arc<AtomicBool>,
    all_cut: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl CutProxy {
    fn start(target: &str, needle: &'static str) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target: SocketAddr = target.parse().unwrap();
        let (replies_cut, all_cut) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (sent, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, a, n, c) = (Arc::clone(&replies_cut), Arc::clone(&all_cut), Arc::clone(&sent), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(target) else { continue };
                let (from, to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (a1, n1) = (Arc::clone(&a), Arc::clone(&n));
                std::thread::spawn(move || pump(from, to, vec![a1], Some((needle, n1))));
                let (r2, a2) = (Arc::clone(&r), Arc::clone(&a));
                std::thread::spawn(move || pump(server, client, vec![r2, a2], None));
            }
        });
        CutProxy { addr, replies_cut, all_cut, sent, accepted }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`; drops what it reads while any of `cuts` is set;
/// counts `needle` in what it reads (across read boundaries).
fn pump(mut from: TcpStream, mut to: TcpStream, cuts: Vec<Arc<AtomicBool>>, count: Option<(&str, Arc<AtomicUsize>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if let Some((needle, counter)) = &count {
            tail.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&tail);
            counter.fetch_add(text.matches(needle).count(), Ordering::SeqCst);
            let keep = tail.len().min(needle.len() - 1);
            tail.drain(..tail.len() - keep);
        }
        if cuts.iter().any(|c| c.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Publishes whose acks are lost are published again (more `Nats-Msg-Id`s
/// go out than messages) and each is still stored once.
#[actix_rt::test]
async fn nats_publish_retried_after_a_lost_ack_is_stored_once() {
    if !up(NATS, "NATS") {
        return;
    }
    support::logs();
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    let proxy = CutProxy::start(NATS, "Nats-Msg-Id:");
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let cfg = nats_sink(format!("nats://{}", proxy.addr), &stream, &prefix);
    let sinks = Sinks::start(&[SinkConfig::Nats(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "t", 1..=20);
    eventually(LONG, "20 stored", || delivered(&metrics, "nats") == 20.0).await;

    proxy.replies_cut.store(true, Ordering::SeqCst);
    let before = proxy.sent();
    publish(&a, "a", "t", 21..=60);
    eventually(LONG, "40 publishes sent while the acks are cut", || proxy.sent() >= before + 40).await;
    // The 40 reach NATS (stored) while no ack comes back.
    let mut s = js.get_stream(&stream).await.unwrap();
    let end = Instant::now() + LONG;
    while s.info().await.unwrap().state.messages < 60 {
        assert!(Instant::now() < end, "the 40 stored during the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered(&metrics, "nats"), 20.0, "no ack, nothing counted yet");
    proxy.replies_cut.store(false, Ordering::SeqCst);

    eventually(LONG, "the 40 acked after a retry", || delivered(&metrics, "nats") == 60.0).await;
    assert!(proxy.sent() >= before + 80, "the 40 were published again: {} ids sent", proxy.sent());
    let stored = read_stream(&js, &stream).await;
    assert_eq!(seqs_of(&stored, "a"), (1..=60).collect::<Vec<u64>>(), "each stored once");
    assert_eq!(dropped(&metrics, "nats", "error") + dropped(&metrics, "nats", "overflow"), 0.0);
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    delete_stream(&js, &stream).await;
}

/// While the path to NATS is dead the sink's queue fills and drops the
/// oldest, counted, and the sink publishes again what got no ack; the hub
/// and other subscribers go on; when the path comes back the sink catches
/// up with what it kept, each stored once.
#[actix_rt::test]
async fn nats_survives_an_unreachable_server_and_catches_up() {
    if !up(NATS, "NATS") {
        return;
    }
    support::logs();
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    let proxy = CutProxy::start(NATS, "Nats-Msg-Id:");
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let mut cfg = nats_sink(format!("nats://{}", proxy.addr), &stream, &prefix);
    cfg.queue_capacity = 20;
    cfg.overflow = Overflow::DropOldest;
    let sinks = Sinks::start(&[SinkConfig::Nats(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let other = SubQueue::new(1000, Overflow::DropOldest, false, metrics.subscriber("websocket"));
    let filter = wsgate::fanout::Filter::from_lists(&[], &[], usize::MAX).unwrap();
    let _sub = hub.subscribe(Arc::clone(&other), filter).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "t", 1..=5);
    eventually(LONG, "5 stored", || delivered(&metrics, "nats") == 5.0).await;

    // The path dies: nothing arrives either way, sockets stay open.
    proxy.all_cut.store(true, Ordering::SeqCst);
    let before = proxy.sent();
    let started = Instant::now();
    publish(&a, "a", "t", 6..=105);
    assert!(started.elapsed() < Duration::from_secs(1), "the hub never waits for the sink");
    assert_eq!(other.len(), 105, "another subscriber gets everything");
    // The queue (20) kept the newest; the other 80 are counted at once.
    assert_eq!(dropped(&metrics, "nats", "overflow"), 80.0);
    // The sink publishes the 20, gets no ack, and publishes them again.
    eventually(LONG, "the 20 published twice into the dead path", || proxy.sent() >= before + 40).await;
    assert_eq!(delivered(&metrics, "nats"), 5.0);

    proxy.all_cut.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(60), "the kept 20 stored", || delivered(&metrics, "nats") == 25.0).await;
    let stored = read_stream(&js, &stream).await;
    let want: Vec<u64> = (1..=5).chain(86..=105).collect();
    assert_eq!(seqs_of(&stored, "a"), want, "each once: the first 5, then the newest 20");
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    delete_stream(&js, &stream).await;
}

/// At shutdown with NATS unreachable the sink is stopped at the flush
/// deadline and counts what it held and queued as dropped (`shutdown`).
#[actix_rt::test]
async fn nats_unreachable_at_shutdown_counts_the_loss() {
    if !up(NATS, "NATS") {
        return;
    }
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let proxy = FaultProxy::start(NATS.parse().unwrap());
    proxy.blackhole(true);
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let cfg = nats_sink(format!("nats://{}", proxy.addr), &stream, &prefix);
    let sinks = Sinks::start(&[SinkConfig::Nats(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "t", 1..=10);
    hub.close_all(Closed::Shutdown);
    let started = Instant::now();
    sinks.flush_and_stop(Duration::from_millis(500), Closed::Shutdown).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    eventually(LONG, "the loss counted", || dropped(&metrics, "nats", "shutdown") == 10.0).await;
    eventually(LONG, "the sink gone", || count(&metrics, r#"wsgate_subscribers{kind="nats"}"#) == 0.0).await;
    assert_eq!(delivered(&metrics, "nats"), 0.0);
}

/// In the real gateway, configured from TOML, a real feed's messages reach
/// both brokers with the envelope `/ws` subscribers get; a clean shutdown
/// leaves every message the hub numbered stored.
#[actix_rt::test]
async fn gateway_feeds_both_brokers_from_a_real_upstream() {
    if !up(NATS, "NATS") || !up(REDIS, "Redis") {
        return;
    }
    support::logs();
    let (stream, prefix, key_prefix) = (unique("WSGT"), unique("wsgt"), unique("wsgate-test:"));
    let feed = support::ticking_feed(Duration::from_millis(5));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[[upstreams]]
name = "feed"
url = "{}"
[[sinks]]
kind = "nats"
url = "nats://{NATS}"
stream = "{stream}"
subject = "{prefix}.{{upstream}}.{{topic}}"
topics = ["trade"]
[[sinks]]
kind = "redis"
url = "redis://{REDIS}"
stream = "{key_prefix}:{{upstream}}"
"#,
        feed.url("/")
    );
    let settings: Settings = toml::from_str(&text).unwrap();
    wsgate::config::validate(&settings).unwrap();
    let gw = wsgate::app::Gateway::start(settings).await.expect("gateway starts");
    let metrics = Arc::clone(&gw.metrics);
    eventually(LONG, "messages in both brokers", || {
        delivered(&metrics, "nats") >= 10.0 && delivered(&metrics, "redis") >= 20.0
    })
    .await;
    assert_eq!(gw.shutdown().await, wsgate::app::ShutdownOutcome::Clean);
    let numbered = count(&metrics, r#"wsgate_upstream_messages_total{upstream="feed"}"#);
    assert_eq!(delivered(&metrics, "redis"), numbered, "redis got every message");

    let js = jetstream().await;
    let stored = read_stream(&js, &stream).await;
    assert_eq!(stored.len() as f64, delivered(&metrics, "nats"));
    assert!(stored.iter().all(|m| m.body["topic"] == "trade" && m.subject == format!("{prefix}.feed.trade")));
    let seqs = seqs_of(&stored, "feed");
    assert!(seqs.windows(2).all(|w| w[0] + 2 == w[1]), "every other seq (trades only): {seqs:?}");
    delete_stream(&js, &stream).await;

    let key = format!("{key_prefix}:feed");
    let mut conn = redis().await;
    assert_eq!(xlen(&mut conn, &key).await as f64, numbered);
    del(&mut conn, &key).await;
}

/// A reload that changes the nats sink flushes the old one before the new
/// one starts: every message stored once, under the same run id; a reload
/// whose sink cannot be prepared (a missing creds file) changes nothing.
#[actix_rt::test]
async fn nats_sink_across_reloads() {
    if !up(NATS, "NATS") {
        return;
    }
    support::logs();
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    let with = |cfg: NatsConfig| {
        let mut s = support::settings(vec![]);
        s.sinks = vec![SinkConfig::Nats(cfg)];
        s
    };
    let cfg = nats_sink(format!("nats://{NATS}"), &stream, &prefix);
    let mut gw = wsgate::app::Gateway::start(with(cfg.clone())).await.expect("gateway starts");
    let metrics = Arc::clone(&gw.metrics);
    let a = gw.hub.publisher("a");
    publish(&a, "a", "t", 1..=50);

    let mut changed = cfg.clone();
    changed.max_in_flight = 8;
    gw.reload(with(changed.clone())).await.expect("reload");
    publish(&a, "a", "t", 51..=100);
    eventually(LONG, "100 stored", || delivered(&metrics, "nats") == 100.0).await;

    let mut broken = changed.clone();
    broken.creds_file = Some("/nonexistent/wsgate.creds".into());
    assert!(gw.reload(with(broken)).await.is_err(), "a sink that cannot be prepared fails the reload");
    publish(&a, "a", "t", 101..=110);
    eventually(LONG, "the running sink still stores", || delivered(&metrics, "nats") == 110.0).await;
    assert_eq!(gw.shutdown().await, wsgate::app::ShutdownOutcome::Clean);

    let stored = read_stream(&js, &stream).await;
    assert_eq!(seqs_of(&stored, "a"), (1..=110).collect::<Vec<u64>>(), "each once, in order");
    let runs: BTreeSet<&str> =
        stored.iter().map(|m| m.headers["Nats-Msg-Id"].split(':').nth(1).unwrap_or_default()).collect();
    assert_eq!(runs.len(), 1, "one run id across reloads: {runs:?}");
    delete_stream(&js, &stream).await;
}

/// In the real gateway, a `/ws` subscriber gets every message, on time,
/// while the nats sink's path is blackholed and its queue overflows
/// (counted); when the path is back the sink stores what it kept.
#[actix_rt::test]
async fn ws_is_unaffected_while_nats_is_unreachable() {
    if !up(NATS, "NATS") {
        return;
    }
    support::logs();
    let (stream, prefix) = (unique("WSGT"), unique("wsgt"));
    let js = jetstream().await;
    let proxy = FaultProxy::start(NATS.parse().unwrap());
    let mut cfg = nats_sink(format!("nats://{}", proxy.addr), &stream, &prefix);
    cfg.queue_capacity = 10;
    let mut settings = support::settings(vec![]);
    settings.sinks = vec![SinkConfig::Nats(cfg)];
    let gw = wsgate::app::Gateway::start(settings).await.expect("gateway starts");
    let metrics = Arc::clone(&gw.metrics);
    let a = gw.hub.publisher("a");
    publish(&a, "a", "t", 1..=1);
    eventually(LONG, "the first stored", || delivered(&metrics, "nats") == 1.0).await;

    proxy.blackhole(true);
    let mut ws = support::ws_connect(&format!("ws://{}/ws", gw.addr), &[]).await.expect("/ws opens");
    eventually(LONG, "the subscriber counted", || count(&metrics, r#"wsgate_subscribers{kind="websocket"}"#) == 1.0)
        .await;
    publish(&a, "a", "t", 2..=201);
    let mut want = 2u64;
    while want <= 201 {
        let msg = support::next_json(&mut ws, Duration::from_secs(5)).await;
        if msg.get("event").is_some() {
            continue; // state events
        }
        assert_eq!(msg["seq"], want, "/ws gets every message in order: {msg}");
        want += 1;
    }
    eventually(LONG, "nats overflow counted", || dropped(&metrics, "nats", "overflow") >= 150.0).await;
    assert_eq!(dropped(&metrics, "websocket", "overflow"), 0.0);

    proxy.blackhole(false);
    eventually(Duration::from_secs(60), "every message stored or counted", || {
        delivered(&metrics, "nats") + dropped(&metrics, "nats", "overflow") == 201.0
    })
    .await;
    drop(ws);
    assert_eq!(gw.shutdown().await, wsgate::app::ShutdownOutcome::Clean);
    let stored = read_stream(&js, &stream).await;
    assert_eq!(stored.len() as f64, delivered(&metrics, "nats"));
    delete_stream(&js, &stream).await;
}

// === redis ===

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{REDIS}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable")
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap()
}

async fn del(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(conn).await;
}

/// Each message is one entry with `upstream`, `topic`, `seq`, `data` (the
/// envelope's data as JSON text); `MAXLEN ~` trims the stream.
#[actix_rt::test]
async fn redis_entries_fields_and_trimming() {
    if !up(REDIS, "Redis") {
        return;
    }
    support::logs();
    let prefix = unique("wsgate-test:");
    let key = format!("{prefix}:a");
    let mut conn = redis().await;
    del(&mut conn, &key).await;
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let mut cfg = redis_sink(format!("redis://{REDIS}"), &prefix);
    cfg.maxlen = 100;
    let sinks = Sinks::start(&[SinkConfig::Redis(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "trade", 1..=3);
    eventually(LONG, "3 stored", || delivered(&metrics, "redis") == 3.0).await;

    type Entry = (String, Vec<(String, String)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(entries.len(), 3);
    let fields: BTreeMap<String, String> = entries[2].1.iter().cloned().collect();
    assert_eq!(fields["upstream"], "a");
    assert_eq!(fields["topic"], "trade");
    assert_eq!(fields["seq"], "3");
    assert_eq!(serde_json::from_str::<Value>(&fields["data"]).unwrap(), json!({ "n": 3 }));
    assert!(humantime::parse_rfc3339(&fields["received_at"]).is_ok());
    let order: Vec<String> = entries[0].1.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(order[..4], ["upstream", "topic", "seq", "data"]);

    publish(&a, "a", "trade", 4..=2000);
    eventually(LONG, "2000 stored", || delivered(&metrics, "redis") == 2000.0).await;
    let len = xlen(&mut conn, &key).await;
    assert!((100..1000).contains(&len), "MAXLEN ~ 100 trims: {len} entries");
    let last: Vec<Entry> =
        redis::cmd("XREVRANGE").arg(&key).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut conn).await.unwrap();
    assert!(last[0].1.contains(&("seq".to_string(), "2000".to_string())));
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    del(&mut conn, &key).await;
}

/// While the path to Redis is dead the queue fills and drops are counted,
/// the pipeline is sent again after its timeout; when the path is back,
/// what was kept is stored.
#[actix_rt::test]
async fn redis_counts_drops_while_unreachable_and_catches_up() {
    if !up(REDIS, "Redis") {
        return;
    }
    support::logs();
    let prefix = unique("wsgate-test:");
    let key = format!("{prefix}:a");
    let mut conn = redis().await;
    let proxy = CutProxy::start(REDIS, "XADD");
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let mut cfg = redis_sink(format!("redis://{}", proxy.addr), &prefix);
    cfg.queue_capacity = 10;
    cfg.queue_bytes = Size::mib(1);
    let sinks = Sinks::start(&[SinkConfig::Redis(cfg)], &hub, &metrics, &RunId::random()).unwrap();
    let a = hub.publisher("a");
    publish(&a, "a", "t", 1..=1);
    eventually(LONG, "the first stored", || delivered(&metrics, "redis") == 1.0).await;

    // The path dies: nothing arrives either way, sockets stay open.
    proxy.all_cut.store(true, Ordering::SeqCst);
    publish(&a, "a", "t", 2..=51);
    // The queue (10) kept the newest; the other 40 are counted at once.
    assert_eq!(dropped(&metrics, "redis", "overflow"), 40.0);
    // The pipeline goes into the dead path, gets no answer in time, and the
    // sink dials again (and again) to send it.
    eventually(LONG, "the pipeline sent, then a new connection tried", || proxy.sent() >= 11 && proxy.accepted() >= 2)
        .await;
    assert_eq!(delivered(&metrics, "redis"), 1.0);

    proxy.all_cut.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(60), "the kept 10 stored", || delivered(&metrics, "redis") == 11.0).await;
    type Entry = (String, Vec<(String, String)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let seqs: Vec<u64> = entries
        .iter()
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.parse().ok()))
        .collect();
    let want: Vec<u64> = std::iter::once(1).chain(42..=51).collect();
    assert_eq!(seqs, want, "the first, then the newest 10, once each (what was cut never reached Redis)");
    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    del(&mut conn, &key).await;
}

// === config ===

/// The broker sinks' keys: defaults, the checks `check` makes, and
/// secrets redacted in `check` output and `Debug`.
#[test]
fn broker_sink_config_is_checked_and_redacted() {
    let load = |sink: &str| -> Result<Settings, String> {
        let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n[[sinks]]\n{sink}\n");
        let s: Settings = toml::from_str(&text).map_err(|e| e.to_string())?;
        wsgate::config::validate(&s).map(|()| s).map_err(|(k, m)| format!("{k}: {m}"))
    };
    let s = load("kind = \"nats\"\nurl = \"nats://u:pw@h:4222\"\nusername = \"u\"\npassword = \"hunter22\"").unwrap();
    let shown = format!("{:?}\n{}", s.sinks[0], s.to_redacted_toml());
    assert!(!shown.contains("hunter22") && !shown.contains("pw@"), "{shown}");
    assert!(shown.contains("wsgate.{upstream}.{topic}") && shown.contains("max_in_flight = 1024"), "{shown}");
    let s = load("kind = \"redis\"\nurl = \"redis://:sekrit@h:6379\"\npassword = \"hunter22\"").unwrap();
    let shown = format!("{:?}\n{}", s.sinks[0], s.to_redacted_toml());
    assert!(!shown.contains("hunter22") && !shown.contains("sekrit"), "{shown}");
    assert!(shown.contains("wsgate:{upstream}") && shown.contains("maxlen = 100000"), "{shown}");

    let refused = [
        ("kind = \"nats\"\nurl = \"http://h\"", "sinks[0].url"),
        ("kind = \"nats\"\nsubject = \"{upstream}.{topic}\"", "sinks[0].subject"),
        ("kind = \"nats\"\nsubject = \"x.{feed}\"", "sinks[0].subject"),
        ("kind = \"nats\"\nmax_in_flight = 0", "sinks[0].max_in_flight"),
        ("kind = \"nats\"\noverflow = \"disconnect\"", "sinks[0].overflow"),
        ("kind = \"nats\"\nusername = \"u\"", "sinks[0].username"),
        ("kind = \"nats\"\ntoken = \"t\"\ntoken_env = \"T\"", "sinks[0].token"),
        ("kind = \"nats\"\ntoken = \"t\"\ncreds_file = \"/x\"", "sinks[0].creds_file"),
        ("kind = \"nats\"\nstream = \"a.b\"", "sinks[0].stream"),
        ("kind = \"redis\"\nurl = \"nats://h\"", "sinks[0].url"),
        ("kind = \"redis\"\nmaxlen = 0", "sinks[0].maxlen"),
        ("kind = \"redis\"\nstream = \"{nope}\"", "sinks[0].stream"),
        ("kind = \"redis\"\nqueue_capacity = 0", "sinks[0].queue_capacity"),
    ];
    for (sink, key) in refused {
        let err = load(sink).expect_err(sink);
        assert!(err.starts_with(key), "{sink}: {err}");
    }

    // `check` opens the credential files, naming each key that fails.
    let mut s = load("kind = \"nats\"\ncreds_file = \"/nonexistent/n.creds\"").unwrap();
    let more = load("kind = \"redis\"\npassword_file = \"/nonexistent/pw\"").unwrap();
    s.sinks.extend(more.sinks);
    let source = wsgate::config::ConfigSource::File("t.toml".into());
    let keys: Vec<String> = wsgate::config::check_files(&s, &source).unwrap_err().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["sinks[0].creds_file", "sinks[1].password_file"]);
}
