//! Sinks end to end (SPEC §6): file and webhook sinks inside the real
//! gateway, fed by real WebSocket upstreams or by the hub's own publisher;
//! a real HTTP server on 127.0.0.1:0 as the webhook; the stdout sink in the
//! real binary. Every wait has a deadline.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::{eventually, eventually_blocking, free_port, metric, Daemon, Feed};
use wsgate::app::{Gateway, ShutdownOutcome};
use wsgate::config::{Dur, Settings, SinkConfig, Size, UpstreamConfig, WebhookConfig};
use wsgate::fanout::{Closed, DataKind, Hub, Incoming, Publisher};
use wsgate::model::RunId;
use wsgate::subscriber::sinks::Sinks;
use wsgate::telemetry::Metrics;

const LONG: Duration = Duration::from_secs(10);

// === helpers ===

fn settings(upstreams: Vec<UpstreamConfig>, sinks: Vec<SinkConfig>) -> Settings {
    let mut s = support::settings(upstreams);
    s.server.shutdown_timeout = Dur::secs(8);
    s.sinks = sinks;
    s
}

async fn start(upstreams: Vec<UpstreamConfig>, sinks: Vec<SinkConfig>) -> Gateway {
    support::logs();
    Gateway::start(settings(upstreams, sinks)).await.expect("gateway starts")
}

fn count(m: &Metrics, series: &str) -> f64 {
    metric(&String::from_utf8(m.encode()).unwrap(), series).unwrap_or(0.0)
}

fn file_sink(path: &Path, upstreams: &[&str], topics: &[&str]) -> SinkConfig {
    SinkConfig::File {
        path: path.to_path_buf(),
        upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
        topics: topics.iter().map(|s| s.to_string()).collect(),
        queue_bytes: Size::mib(64),
        queue_capacity: 10_000,
        overflow: wsgate::config::Overflow::DropOldest,
        conflate_key: String::new(),
    }
}

fn webhook(url: String, batch_size: usize, batch_timeout: Dur, queue_capacity: usize) -> WebhookConfig {
    WebhookConfig {
        url,
        batch_size,
        batch_timeout,
        queue_capacity,
        queue_bytes: Size::mib(64),
        overflow: wsgate::config::Overflow::DropOldest,
        headers: Default::default(),
        auth_token: None,
        auth_token_env: None,
        auth_token_file: None,
        upstreams: Vec::new(),
        topics: Vec::new(),
    }
}

/// A JSON message as an upstream would hand it to the hub.
fn incoming(upstream: &str, n: u64) -> Incoming {
    Incoming {
        upstream: upstream.into(),
        topic: "t".into(),
        raw: bytes::Bytes::from(json!({ "n": n }).to_string()),
        raw_is_text: true,
        kind: DataKind::Json,
        received_at: SystemTime::now(),
        received: Instant::now(),
        conn: 1,
    }
}

fn publish(p: &Publisher, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        p.publish(incoming("t", n));
    }
}

/// Every line of a JSON-lines file, parsed; a missing file is empty.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))).collect()
}

/// Asserts `v` is a §5 envelope (with §13's `conn`): exactly these fields, `received_at` RFC 3339.
fn assert_envelope(v: &Value) {
    let keys: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["conn", "data", "received_at", "seq", "topic", "upstream"], "{v}");
    assert!(v["seq"].as_u64().is_some_and(|s| s >= 1), "{v}");
    let at = v["received_at"].as_str().expect("received_at is a string");
    assert!(humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'), "{at}");
}

fn seqs(vs: &[Value]) -> Vec<u64> {
    vs.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

// === a webhook server ===

/// How the test webhook answers one POST.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Answer at once with this status.
    Status(u16),
    /// Record the request, wait for [`Hook::release`], then answer.
    HoldThen(u16),
}

/// One POST as the test webhook saw it.
#[derive(Debug, Clone)]
struct Post {
    /// The status it was (or will be) answered with.
    status: u16,
    /// Lower-cased header names with values.
    headers: Vec<(String, String)>,
    /// The body, parsed (Null when not JSON).
    body: Value,
    /// When the request was complete.
    at: SystemTime,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn envelopes(&self) -> Vec<Value> {
        self.body.as_array().cloned().unwrap_or_else(|| panic!("body is not a JSON array: {}", self.body))
    }
}

type Replies = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1:0, one thread per connection, keep-alive,
/// answering the nth POST (0-based, over all connections) as `reply` says.
struct Hook {
    /// Where it listens; the webhook URL points here.
    addr: SocketAddr,
    /// Every POST, in arrival order, answered or held.
    posts: Arc<Mutex<Vec<Post>>>,
    /// Set by [`Hook::release`]: held requests get their answer.
    released: Arc<AtomicBool>,
    /// Set on drop: the accept loop ends at its next connection.
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hook = Hook {
            addr,
            posts: Arc::default(),
            released: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let reply: Replies = Arc::new(reply);
        let (posts, released, stop) = (Arc::clone(&hook.posts), Arc::clone(&hook.released), Arc::clone(&hook.stop));
        let counter = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (posts, released, counter, reply) =
                    (Arc::clone(&posts), Arc::clone(&released), Arc::clone(&counter), Arc::clone(&reply));
                std::thread::spawn(move || serve(conn, &posts, &released, &counter, &*reply));
            }
        });
        hook
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Lets held requests be answered.
    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    conn: TcpStream,
    posts: &Mutex<Vec<Post>>,
    released: &AtomicBool,
    counter: &AtomicUsize,
    reply: &dyn Fn(usize) -> Reply,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let r = reply(counter.fetch_add(1, Ordering::SeqCst));
        let status = match r {
            Reply::Status(s) | Reply::HoldThen(s) => s,
        };
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        posts.lock().unwrap().push(Post { status, headers, body, at: SystemTime::now() });
        if let Reply::HoldThen(_) = r {
            let end = Instant::now() + LONG;
            while !released.load(Ordering::SeqCst) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let text = if status < 300 { String::new() } else { format!("status {status}") };
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{text}", text.len());
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}

// === file ===

/// File sinks append §5 envelopes as JSON lines, honour their upstreams and
/// topics filters, and hold everything published before shutdown.
#[actix_rt::test]
async fn file_sink_writes_filtered_envelopes_and_keeps_all_at_shutdown() {
    const BURST: u64 = 5000;
    let script = |mut c: support::Conn| async move {
        for n in 1..=20 {
            let topic = if n % 2 == 0 { "trade" } else { "quote" };
            c.send_text(json!({ "type": topic, "n": n }).to_string()).await;
        }
        c.drain().await
    };
    let (feed_a, feed_b) = (Feed::start(script), Feed::start(script));
    let dir = tempfile::tempdir().unwrap();
    let (all, a_trades) = (dir.path().join("all.jsonl"), dir.path().join("a-trades.jsonl"));
    let gw = start(
        vec![UpstreamConfig::new("a", feed_a.url("/")), UpstreamConfig::new("b", feed_b.url("/"))],
        vec![file_sink(&all, &[], &[]), file_sink(&a_trades, &["a"], &["trade"])],
    )
    .await;
    let metrics = Arc::clone(&gw.metrics);
    assert_eq!(count(&metrics, r#"wsgate_subscribers{kind="file"}"#), 2.0);
    eventually(LONG, "40 messages in the hub", || {
        count(&metrics, r#"wsgate_upstream_messages_total{upstream="a"}"#) == 20.0
            && count(&metrics, r#"wsgate_upstream_messages_total{upstream="b"}"#) == 20.0
    })
    .await;
    // A burst published right before shutdown must be in the file when it returns.
    publish(&gw.hub.publisher("t"), 1..=BURST);
    assert_eq!(gw.shutdown().await, ShutdownOutcome::Clean);

    let lines = json_lines(&all);
    assert_eq!(lines.len(), 40 + BURST as usize);
    lines.iter().for_each(assert_envelope);
    let burst: Vec<Value> = lines.iter().filter(|v| v["upstream"] == "t").cloned().collect();
    assert_eq!(seqs(&burst), (1..=BURST).collect::<Vec<_>>());
    for up in ["a", "b"] {
        let mine: Vec<Value> = lines.iter().filter(|v| v["upstream"] == up).cloned().collect();
        assert_eq!(seqs(&mine), (1..=20).collect::<Vec<_>>(), "{up}: seq consecutive, in order");
        for v in &mine {
            let n = v["data"]["n"].as_u64().unwrap();
            assert_eq!(v["topic"], if n % 2 == 0 { "trade" } else { "quote" });
        }
    }
    let filtered = json_lines(&a_trades);
    assert_eq!(filtered.len(), 10, "{filtered:?}");
    for v in &filtered {
        assert_envelope(v);
        assert_eq!((v["upstream"].as_str(), v["topic"].as_str()), (Some("a"), Some("trade")));
        assert_eq!(v["data"]["type"], "trade");
    }
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="file"}"#), 50.0 + BURST as f64);
    assert_eq!(count(&metrics, r#"wsgate_subscribers{kind="file"}"#), 0.0);
    assert!(count(&metrics, r#"wsgate_subscriber_disconnects_total{reason="shutdown"}"#) >= 2.0);
}

/// After logrotate renamed the file away, `reopen_files` makes the sink
/// write to a new file at the configured path; `flush_and_stop` returns only
/// once everything queued is in the file.
#[actix_rt::test]
async fn file_sink_reopens_its_path() {
    support::logs();
    let dir = tempfile::tempdir().unwrap();
    let (path, rotated) = (dir.path().join("out.jsonl"), dir.path().join("out.jsonl.1"));
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let sinks = Sinks::start(&[file_sink(&path, &[], &[])], &hub, &metrics, &RunId::random()).unwrap();
    let publisher = hub.publisher("t");

    publish(&publisher, 1..=3);
    eventually(LONG, "3 lines in the file", || json_lines(&path).len() == 3).await;
    std::fs::rename(&path, &rotated).unwrap();
    sinks.reopen_files();
    eventually(LONG, "a new file at the path", || path.exists()).await;
    // Fits the queue (10 000); written while flush_and_stop waits.
    const LAST: u64 = 9000;
    publish(&publisher, 4..=LAST);

    hub.close_all(Closed::Shutdown);
    sinks.flush_and_stop(LONG, Closed::Shutdown).await;
    assert_eq!(seqs(&json_lines(&rotated)), [1, 2, 3]);
    assert_eq!(seqs(&json_lines(&path)), (4..=LAST).collect::<Vec<_>>());
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="file"}"#), LAST as f64);
}

/// A file sink whose path cannot be opened stops the start, naming the sink
/// and the path, and is not left subscribed.
#[actix_rt::test]
async fn file_sink_bad_path_fails_the_start() {
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let path = Path::new("/nonexistent-dir/out.jsonl");
    let err = Sinks::start(&[file_sink(path, &[], &[])], &hub, &metrics, &RunId::random()).err().expect("start fails");
    let text = format!("{err:#}");
    assert!(text.contains("sinks[0] (file)") && text.contains("/nonexistent-dir/out.jsonl"), "{text}");
    assert_eq!(hub.subscriber_count(), 0);
    assert_eq!(count(&metrics, r#"wsgate_subscribers{kind="file"}"#), 0.0);
}

// === webhook ===

/// The webhook POSTs JSON arrays of at most `batch_size` envelopes, with
/// content type, extra headers and the Bearer token from its file; a partial
/// batch goes out `batch_timeout` after its oldest message.
#[actix_rt::test]
async fn webhook_posts_batches_by_size_and_timeout() {
    let feed = Feed::start(|mut c| async move {
        for n in 1..=12 {
            c.send_text(json!({ "type": "trade", "n": n }).to_string()).await;
        }
        c.drain().await
    });
    let hook = Hook::start(|_| Reply::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-1\n").unwrap();
    let timeout = Duration::from_millis(400);
    let mut cfg = webhook(hook.url(), 5, Dur(timeout), 100);
    cfg.auth_token_file = Some(token);
    cfg.headers.insert("X-Sink".into(), "wsgate-test".into());
    let gw = start(vec![UpstreamConfig::new("a", feed.url("/"))], vec![SinkConfig::Webhook(cfg)]).await;

    eventually(LONG, "12 envelopes posted", || hook.posts().iter().map(|p| p.envelopes().len()).sum::<usize>() == 12)
        .await;
    let posts = hook.posts();
    let sizes: Vec<usize> = posts.iter().map(|p| p.envelopes().len()).collect();
    assert!(sizes.iter().all(|&n| (1..=5).contains(&n)), "{sizes:?}");
    assert!(sizes.contains(&5), "full batches go out without waiting: {sizes:?}");
    let all: Vec<Value> = posts.iter().flat_map(Post::envelopes).collect();
    all.iter().for_each(assert_envelope);
    assert_eq!(seqs(&all), (1..=12).collect::<Vec<_>>());
    for p in &posts {
        assert_eq!(p.header("content-type"), Some("application/json"));
        assert_eq!(p.header("authorization"), Some("Bearer tok-1"));
        assert_eq!(p.header("x-sink"), Some("wsgate-test"));
        assert_eq!(p.header("host"), Some(hook.addr.to_string().as_str()));
    }
    for p in posts.iter().filter(|p| p.envelopes().len() < 5) {
        let oldest = humantime::parse_rfc3339(p.envelopes()[0]["received_at"].as_str().unwrap()).unwrap();
        let waited = p.at.duration_since(oldest).unwrap_or_default();
        assert!(waited + Duration::from_millis(30) >= timeout, "partial batch after {waited:?}, before {timeout:?}");
    }
    let metrics = Arc::clone(&gw.metrics);
    assert_eq!(gw.shutdown().await, ShutdownOutcome::Clean);
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="webhook"}"#), 12.0);
}

/// A 503 keeps the batch and sends the same one again after a backoff; a 400
/// drops its batch, counted as `dropped{reason="error"}`; the token file is
/// read again for every batch.
#[actix_rt::test]
async fn webhook_retries_503_and_drops_on_400() {
    let hook = Hook::start(|n| match n {
        0 => Reply::Status(503),
        2 => Reply::Status(400),
        _ => Reply::Status(200),
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-1").unwrap();
    let mut cfg = webhook(hook.url(), 3, Dur::secs(30), 100);
    cfg.auth_token_file = Some(token.clone());
    let gw = start(vec![], vec![SinkConfig::Webhook(cfg)]).await;
    let (metrics, publisher) = (Arc::clone(&gw.metrics), gw.hub.publisher("t"));

    publish(&publisher, 1..=3);
    eventually(LONG, "the batch retried after the 503", || hook.posts().len() == 2).await;
    let posts = hook.posts();
    assert_eq!((posts[0].status, posts[1].status), (503, 200));
    assert_eq!(posts[0].body, posts[1].body, "the retry sends the same batch");
    assert_eq!(seqs(&posts[1].envelopes()), [1, 2, 3]);
    let gap = posts[1].at.duration_since(posts[0].at).unwrap_or_default();
    assert!(gap >= Duration::from_millis(200), "retried after a backoff, not at once: {gap:?}");

    std::fs::write(&token, "tok-2").unwrap();
    publish(&publisher, 4..=6);
    eventually(LONG, "the 400 counted", || {
        count(&metrics, r#"wsgate_subscriber_dropped_total{kind="webhook",reason="error"}"#) == 3.0
    })
    .await;
    publish(&publisher, 7..=9);
    eventually(LONG, "the next batch delivered", || hook.posts().len() == 4).await;
    let posts = hook.posts();
    assert_eq!((posts[2].status, posts[3].status), (400, 200));
    assert_eq!(seqs(&posts[2].envelopes()), [4, 5, 6]);
    assert_eq!(seqs(&posts[3].envelopes()), [7, 8, 9], "a rejected batch is not sent again");
    assert_eq!(posts[3].header("authorization"), Some("Bearer tok-2"));
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="webhook"}"#), 6.0);
    assert_eq!(count(&metrics, r#"wsgate_subscriber_dropped_total{kind="webhook",reason="overflow"}"#), 0.0);
    assert_eq!(gw.shutdown().await, ShutdownOutcome::Clean);
}

/// While a batch hangs on a slow server, messages beyond `queue_capacity`
/// are dropped oldest first, counted as `dropped{reason="overflow"}`; the
/// newest are delivered once the server answers.
#[actix_rt::test]
async fn webhook_overflow_drops_oldest_and_counts() {
    let hook = Hook::start(|n| if n == 0 { Reply::HoldThen(200) } else { Reply::Status(200) });
    let gw = start(vec![], vec![SinkConfig::Webhook(webhook(hook.url(), 2, Dur::secs(30), 4))]).await;
    let (metrics, publisher) = (Arc::clone(&gw.metrics), gw.hub.publisher("t"));

    publish(&publisher, 1..=2);
    eventually(LONG, "the first batch on the wire", || hook.posts().len() == 1).await;
    publish(&publisher, 3..=12);
    let overflow = r#"wsgate_subscriber_dropped_total{kind="webhook",reason="overflow"}"#;
    eventually(LONG, "8 overflow drops", || count(&metrics, overflow) == 8.0).await;
    hook.release();
    eventually(LONG, "the kept messages delivered", || hook.posts().len() == 2).await;
    let posts = hook.posts();
    assert_eq!(seqs(&posts[0].envelopes()), [1, 2]);
    assert_eq!(seqs(&posts[1].envelopes()), [11, 12], "the newest are kept");
    assert_eq!(gw.shutdown().await, ShutdownOutcome::Clean);
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="webhook"}"#), 4.0);
    assert_eq!(count(&metrics, overflow), 8.0);
}

/// At shutdown the webhook sends its last, partial batch at once instead of
/// waiting for `batch_timeout`.
#[actix_rt::test]
async fn webhook_sends_last_batch_at_shutdown() {
    let hook = Hook::start(|_| Reply::Status(200));
    let gw = start(vec![], vec![SinkConfig::Webhook(webhook(hook.url(), 100, Dur::secs(60), 1000))]).await;
    let publisher = gw.hub.publisher("t");
    publish(&publisher, 1..=3);
    let started = Instant::now();
    assert_eq!(gw.shutdown().await, ShutdownOutcome::Clean);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let posts = hook.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(seqs(&posts[0].envelopes()), [1, 2, 3]);
}

/// A sink that cannot finish by the flush deadline is stopped anyway: what
/// it held is counted as dropped (`shutdown`) and it leaves the subscriber gauge.
#[actix_rt::test]
async fn webhook_past_the_deadline_stops_and_counts_the_loss() {
    support::logs();
    let hook = Hook::start(|_| Reply::HoldThen(200));
    let (hub, metrics) = (Hub::new(), Metrics::new());
    let cfg = SinkConfig::Webhook(webhook(hook.url(), 2, Dur::secs(30), 100));
    let sinks = Sinks::start(&[cfg], &hub, &metrics, &RunId::random()).unwrap();
    let publisher = hub.publisher("t");
    publish(&publisher, 1..=5);
    eventually(LONG, "a batch on the wire", || hook.posts().len() == 1).await;
    assert_eq!(count(&metrics, r#"wsgate_subscribers{kind="webhook"}"#), 1.0);

    hub.close_all(Closed::Shutdown);
    let started = Instant::now();
    sinks.flush_and_stop(Duration::from_millis(300), Closed::Shutdown).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let lost = r#"wsgate_subscriber_dropped_total{kind="webhook",reason="shutdown"}"#;
    eventually(LONG, "the loss counted", || count(&metrics, lost) == 5.0).await;
    eventually(LONG, "the sink gone", || count(&metrics, r#"wsgate_subscribers{kind="webhook"}"#) == 0.0).await;
    assert_eq!(count(&metrics, r#"wsgate_subscriber_messages_total{kind="webhook"}"#), 0.0);
}

// === stdout ===

/// The real binary's stdout sink prints one §5 envelope per line and nothing
/// else on stdout (logs go to stderr); SIGTERM then exits 0.
#[test]
fn stdout_sink_in_the_real_binary() {
    let feed = Feed::start(|mut c| async move {
        for n in 1..=5 {
            c.send_text(json!({ "type": "trade", "n": n }).to_string()).await;
        }
        c.drain().await
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wsgate.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nshutdown_timeout = \"5s\"\n\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n\n[[sinks]]\nkind = \"stdout\"\n",
        free_port(),
        feed.url("/")
    );
    std::fs::write(&config, text).unwrap();
    let stderr_path: PathBuf = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let stdout = daemon.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    let mut lines = Vec::new();
    let end = Instant::now() + LONG;
    while lines.len() < 5 {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("only {} lines on stdout: {lines:?}\nstderr:\n{}", lines.len(), stderr()),
        }
    }
    let Daemon(child) = &daemon;
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
    let mut status = None;
    eventually_blocking(LONG, "the daemon exits after SIGTERM", || {
        status = daemon.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr:\n{}", stderr());
    reader.join().unwrap();
    lines.extend(rx.try_iter());

    let envelopes: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l:?}")))
        .collect();
    assert_eq!(envelopes.len(), 5, "{lines:?}");
    for (i, v) in envelopes.iter().enumerate() {
        assert_envelope(v);
        assert_eq!((v["upstream"].as_str(), v["topic"].as_str()), (Some("feed"), Some("trade")));
        assert_eq!(v["seq"].as_u64(), Some(i as u64 + 1));
        assert_eq!(v["data"]["n"].as_u64(), Some(i as u64 + 1));
    }
    assert!(stderr().contains("Sink started"), "logs go to stderr:\n{}", stderr());
}
