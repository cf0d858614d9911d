//! The cluster end to end (SPEC §15 `[cluster]`): real binaries sharing
//! real WebSocket feeds through the real NATS JetStream on 127.0.0.1:4222.
//! Skips with one line when NATS is absent. Each test has its own bucket,
//! stream and subject prefix, deleted at the end.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{eventually, free_port, http_get, metric, ws_connect, Daemon, Feed};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
const NATS: &str = "127.0.0.1:4222";
const REDIS: &str = "127.0.0.1:6379";
const TTL: Duration = Duration::from_secs(2);
const INITIAL: Duration = Duration::from_millis(200);

fn nats_up() -> bool {
    let sock: SocketAddr = NATS.parse().unwrap();
    let ok = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok();
    if !ok {
        eprintln!("skipped: no NATS on {NATS}");
    }
    ok
}

/// Bucket, stream and subject prefix of one test.
struct Names {
    bucket: String,
    stream: String,
    prefix: String,
}

impl Names {
    fn new() -> Names {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!("{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        Names { bucket: format!("wsgate_e2e_{id}"), stream: format!("WSGATE_E2E_{id}"), prefix: format!("e2e{id}") }
    }
}

impl Drop for Names {
    /// Deletes what the test left in NATS, passed or failed (on a thread
    /// with a runtime of its own: drop may run inside the test's runtime).
    fn drop(&mut self) {
        let (bucket, stream) = (self.bucket.clone(), self.stream.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let Ok(client) = async_nats::connect(NATS).await else { return };
                let js = async_nats::jetstream::new(client);
                let _ = js.delete_key_value(&bucket).await;
                let _ = js.delete_stream(&stream).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A feed sending `{"type":"trade","i":N}` every 10 ms on each connection,
/// counting the connections open now (`accepted` counts them all).
struct CountingFeed {
    feed: Feed,
    open: Arc<AtomicI64>,
}

impl CountingFeed {
    fn start() -> CountingFeed {
        let open = Arc::new(AtomicI64::new(0));
        let counter = Arc::clone(&open);
        let feed = Feed::start(move |mut c| {
            let open = Arc::clone(&counter);
            async move {
                open.fetch_add(1, Ordering::SeqCst);
                let mut i = 0u64;
                loop {
                    i += 1;
                    if !c.send_text(format!(r#"{{"type":"trade","i":{i}}}"#)).await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                open.fetch_sub(1, Ordering::SeqCst);
            }
        });
        CountingFeed { feed, open }
    }

    fn open(&self) -> i64 {
        self.open.load(Ordering::SeqCst)
    }
}

/// One replica: the real binary with its own config and port.
struct Replica {
    node: String,
    addr: SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
    daemon: Option<Daemon>,
    /// Appended to the config (sinks).
    extra: String,
}

impl Replica {
    fn new(dir: &std::path::Path, node: &str, names: &Names, feeds: &[CountingFeed]) -> Replica {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.join(format!("{node}.toml"));
        let r = Replica {
            node: node.into(),
            addr,
            config,
            log: dir.join(format!("{node}.log")),
            daemon: None,
            extra: String::new(),
        };
        r.write(names, &feeds.iter().enumerate().collect::<Vec<_>>());
        r
    }

    /// Writes the config with these upstreams (`u<index>`).
    fn write(&self, names: &Names, feeds: &[(usize, &CountingFeed)]) {
        let (node, port) = (&self.node, self.addr.port());
        let mut cfg = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "5s"
[cluster]
enabled = true
nats_url = "nats://{NATS}"
node = "{node}"
lease_ttl = "{ttl}s"
bucket = "{bucket}"
stream = "{stream}"
subject_prefix = "{prefix}"
"#,
            ttl = TTL.as_secs(),
            bucket = names.bucket,
            stream = names.stream,
            prefix = names.prefix,
        );
        for (i, f) in feeds {
            cfg.push_str(&format!(
                "[[upstreams]]\nname = \"u{i}\"\nurl = \"{}\"\n[upstreams.reconnect]\ninitial = \"{}ms\"\n",
                f.feed.url("/"),
                INITIAL.as_millis()
            ));
        }
        cfg.push_str(&self.extra);
        std::fs::write(&self.config, cfg).unwrap();
    }

    /// SIGHUP by PID: reload the config file.
    fn reload(&self) {
        let pid = self.daemon.as_ref().expect("running").0.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }

    fn upstream_names(&self) -> Vec<String> {
        let status = self.status().expect("/status");
        status["upstreams"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect()
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Daemon(child));
    }

    /// SIGKILL by PID (the `Child` handle), no cleanup of any kind.
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.0.kill().unwrap();
            d.0.wait().unwrap();
        }
    }

    /// SIGTERM by PID; a clean exit.
    fn terminate(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            assert!(d.terminate().success(), "{} exits 0 after SIGTERM:\n{}", self.node, self.logs());
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn owned(&self) -> Option<f64> {
        let (code, text) = http_get(self.addr, "/metrics").ok()?;
        (code == 200).then(|| metric(&text, "wsgate_cluster_owned_upstreams ")).flatten()
    }

    fn status(&self) -> Option<serde_json::Value> {
        let (code, text) = http_get(self.addr, "/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&text).ok()).flatten()
    }

    fn ready(&self) -> bool {
        http_get(self.addr, "/readyz").is_ok_and(|(c, _)| c == 200)
    }
}

/// Every (upstream, seq) a `/ws` subscriber received, in order.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<String, Vec<u64>>>);

impl Seen {
    /// Subscribes to every upstream of `addr` and records in the background.
    async fn follow(addr: SocketAddr) -> Arc<Seen> {
        let mut ws = ws_connect(&format!("ws://{addr}/ws"), &[]).await.expect("a subscriber");
        let seen = Arc::new(Seen::default());
        let into = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if let (Some(u), Some(seq)) = (v["upstream"].as_str(), v["seq"].as_u64()) {
                    if v.get("event").is_none() {
                        into.0.lock().unwrap().entry(u.to_string()).or_default().push(seq);
                    }
                }
            }
        });
        seen
    }

    fn count(&self, upstream: &str) -> usize {
        self.0.lock().unwrap().get(upstream).map_or(0, Vec::len)
    }

    /// Per upstream: seqs consecutive (each the last + 1), so nothing
    /// missing and nothing twice. Returns the number of messages checked.
    fn assert_consecutive(&self) -> usize {
        let all = self.0.lock().unwrap();
        let mut n = 0;
        for (u, seqs) in all.iter() {
            for w in seqs.windows(2) {
                assert_eq!(w[1], w[0] + 1, "{u}: seq {} followed by {} (of {} messages)", w[0], w[1], seqs.len());
            }
            n += seqs.len();
        }
        n
    }
}

/// Waits until each feed has exactly one open connection and each live
/// replica holds `per` upstreams; returns how long that took.
async fn balanced(feeds: &[CountingFeed], replicas: &[&Replica], per: f64, deadline: Duration, what: &str) -> Duration {
    let started = Instant::now();
    eventually(deadline, what, || {
        feeds.iter().all(|f| f.open() == 1) && replicas.iter().all(|r| r.owned() == Some(per))
    })
    .await;
    started.elapsed()
}

/// Which replica (by node name) `/status` of `r` names as owner of each upstream.
fn owners(r: &Replica) -> BTreeMap<String, String> {
    let status = r.status().expect("/status");
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().to_string(), u["owner"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// 3 replicas x 6 upstreams: each feed connected exactly once, 2 per
/// replica, every replica ready and its `/ws` subscribers getting all 6;
/// after `kill -9` of an owner its upstreams are back within lease_ttl +
/// lease_ttl/3 + backoff initial (+ slack for a loaded machine), and a
/// subscriber on a survivor sees every upstream's seq continue with no gap
/// and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_upstreams_once_and_survive_a_kill() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..6).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["n1", "n2", "n3"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds)).collect();
    for r in &mut replicas {
        r.start();
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    let took = balanced(&feeds, &all, 2.0, Duration::from_secs(30), "6 feeds connected once, 2 per replica").await;
    eprintln!("balanced after {took:?}");
    for (i, f) in feeds.iter().enumerate() {
        assert_eq!(f.feed.log.accepted(), 1, "u{i} was connected exactly once");
    }
    eventually(Duration::from_secs(10), "every replica ready", || replicas.iter().all(Replica::ready)).await;
    let by_owner = owners(&replicas[2]);
    assert_eq!(by_owner, owners(&replicas[0]), "replicas agree on the owners");
    assert!(by_owner.values().all(|o| ["n1", "n2", "n3"].contains(&o.as_str())), "{by_owner:?}");
    // A replica shows the owner's state for upstreams it does not hold.
    let status = replicas[2].status().unwrap();
    assert_eq!(status["cluster"]["node"], "n3");
    for u in status["upstreams"].as_array().unwrap() {
        assert_eq!(u["state"], "connected", "{u}");
    }
    let (_, text) = http_get(replicas[2].addr, "/metrics").unwrap();
    let changes: f64 = (0..6)
        .filter_map(|i| metric(&text, &format!("wsgate_cluster_lease_changes_total{{upstream=\"u{i}\"}} ")))
        .sum();
    assert_eq!(changes, 2.0, "n3 took two leases:\n{text}");

    let seen = Seen::follow(replicas[2].addr).await;
    eventually(Duration::from_secs(10), "the survivor's subscriber gets all 6", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > 20)
    })
    .await;

    let victims: Vec<usize> =
        by_owner.iter().filter(|(_, o)| *o == "n1").map(|(u, _)| u[1..].parse().unwrap()).collect();
    assert_eq!(victims.len(), 2, "{by_owner:?}");
    replicas[0].kill();
    let killed = Instant::now();
    eventually(Duration::from_secs(15), "the victim's upstreams connected again", || {
        victims.iter().all(|&i| feeds[i].open() == 1 && feeds[i].feed.log.accepted() == 2)
    })
    .await;
    let back = killed.elapsed();
    let bound = TTL + TTL / 3 + INITIAL;
    eprintln!("kill -9: upstreams back after {back:?} (SPEC bound {bound:?})");
    assert!(back <= bound + Duration::from_millis(2500), "back after {back:?}, bound {bound:?}");
    let survivors: Vec<&Replica> = replicas[1..].iter().collect();
    balanced(&feeds, &survivors, 3.0, Duration::from_secs(10), "3 per survivor").await;
    let before: Vec<usize> = victims.iter().map(|i| seen.count(&format!("u{i}"))).collect();
    eventually(Duration::from_secs(10), "the subscriber gets the new owner's messages", || {
        victims.iter().zip(&before).all(|(i, b)| seen.count(&format!("u{i}")) > b + 20)
    })
    .await;
    let checked = seen.assert_consecutive();
    eprintln!("{checked} messages on the survivor, seq consecutive");
    for f in &feeds {
        assert!(f.open() <= 1, "never two links to one feed at the end");
    }
    // The cluster's run id lives in the bucket, and every stored message
    // carries it in its Nats-Msg-Id.
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let run = js.get_key_value(&names.bucket).await.unwrap().get("run").await.unwrap().expect("a run key");
    let run = String::from_utf8(run.to_vec()).unwrap();
    let stream = js.get_stream(&names.stream).await.unwrap();
    let last = stream.get_last_raw_message_by_subject(&format!("{}.u0.>", names.prefix)).await.unwrap();
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| panic!("{:?}", last.headers));
    let seq = last.headers.get("wsgate-seq").unwrap().as_str().to_string();
    assert_eq!(id, format!("u0:{run}:{seq}"));
    for r in &mut replicas {
        r.terminate();
    }
}

/// A rolling restart (n1 stopped and started again, then n2) loses
/// nothing for a subscriber of n3, which stays: every upstream's seq is
/// consecutive throughout, and the cluster is balanced again after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..6).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["r1", "r2", "r3"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds)).collect();
    for r in &mut replicas {
        r.start();
    }
    {
        let all: Vec<&Replica> = replicas.iter().collect();
        balanced(&feeds, &all, 2.0, Duration::from_secs(30), "balanced at start").await;
    }
    let seen = Seen::follow(replicas[2].addr).await;
    eventually(Duration::from_secs(10), "the subscriber gets all 6", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > 10)
    })
    .await;
    for step in 0..2 {
        let stopped = Instant::now();
        replicas[step].terminate();
        {
            let rest: Vec<&Replica> = replicas.iter().filter(|r| r.daemon.is_some()).collect();
            let took = balanced(&feeds, &rest, 3.0, Duration::from_secs(15), "the others hold all").await;
            eprintln!("{} stopped: the others hold all after {:?}", replicas[step].node, stopped.elapsed().max(took));
        }
        replicas[step].start();
        let all: Vec<&Replica> = replicas.iter().collect();
        let took = balanced(&feeds, &all, 2.0, Duration::from_secs(20), "balanced again").await;
        eprintln!("{} started: balanced again after {took:?}", replicas[step].node);
    }
    let counts: Vec<usize> = (0..6).map(|i| seen.count(&format!("u{i}"))).collect();
    eventually(Duration::from_secs(10), "messages keep coming", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > counts[i] + 10)
    })
    .await;
    let checked = seen.assert_consecutive();
    eprintln!("{checked} messages on the staying replica across the rolling restart, seq consecutive");
    for r in &mut replicas {
        r.terminate();
    }
}

/// SIGHUP in cluster mode: an added upstream is shared out and connected
/// once; a removed one is closed and gone from every replica's /status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_upstreams_across_the_cluster() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..3).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["h1", "h2"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds[..2])).collect();
    // With Redis, each replica also has a redis sink: it stores only what
    // that replica owns, so each message is stored once across the cluster.
    let redis_up = TcpStream::connect_timeout(&REDIS.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if redis_up {
        for r in &mut replicas {
            r.extra = format!(
                "[[sinks]]\nkind = \"redis\"\nurl = \"redis://{REDIS}\"\nstream = \"{}:{{upstream}}\"\n",
                names.prefix
            );
            r.write(&names, &feeds[..2].iter().enumerate().collect::<Vec<_>>());
        }
    } else {
        eprintln!("skipped (the redis sink part): no Redis on {REDIS}");
    }
    for r in &mut replicas {
        r.start();
    }
    {
        let all: Vec<&Replica> = replicas.iter().collect();
        balanced(&feeds[..2], &all, 1.0, Duration::from_secs(30), "1 each").await;
    }
    let three: Vec<(usize, &CountingFeed)> = feeds.iter().enumerate().collect();
    for r in &replicas {
        r.write(&names, &three);
        r.reload();
    }
    eventually(Duration::from_secs(15), "the added upstream connected once", || {
        feeds.iter().all(|f| f.open() == 1) && replicas.iter().map(|r| r.owned().unwrap_or(0.0)).sum::<f64>() == 3.0
    })
    .await;
    assert_eq!(feeds[2].feed.log.accepted(), 1);
    let two: Vec<(usize, &CountingFeed)> = feeds.iter().enumerate().skip(1).collect();
    for r in &replicas {
        r.write(&names, &two);
        r.reload();
    }
    eventually(Duration::from_secs(15), "u0 closed and gone everywhere", || {
        feeds[0].open() == 0
            && feeds[1..].iter().all(|f| f.open() == 1)
            && replicas.iter().all(|r| r.upstream_names() == ["u1", "u2"])
    })
    .await;
    eventually(Duration::from_secs(10), "ready everywhere", || replicas.iter().all(Replica::ready)).await;
    for r in &mut replicas {
        r.terminate();
    }
    if redis_up {
        let mut conn = redis::Client::open(format!("redis://{REDIS}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis reachable");
        for u in ["u0", "u1", "u2"] {
            let key = format!("{}:{u}", names.prefix);
            type Entry = (String, Vec<(String, String)>);
            let entries: Vec<Entry> =
                redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
            let mut seqs: Vec<u64> = entries
                .iter()
                .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.parse().ok()))
                .collect();
            let stored = seqs.len();
            seqs.sort_unstable();
            seqs.dedup();
            assert_eq!(seqs.len(), stored, "{u}: every message stored once across the replicas");
            assert!(stored > 10, "{u}: {stored} stored");
            let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
        }
    }
}
