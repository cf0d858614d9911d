//! The cluster helpers of `tests/cluster_e2e.rs` (SPEC §15): replicas as
//! real binaries with their own config, feeds that count their open
//! connections, a `/ws` recorder of (upstream, seq), and the NATS names of
//! one test (deleted on drop). Included with `#[path]` by that test only.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{eventually, free_port, http_get, metric, ws_connect, Daemon, Feed};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");
pub const NATS: &str = "127.0.0.1:4222";
pub const REDIS: &str = "127.0.0.1:6379";
pub const TTL: Duration = Duration::from_secs(2);
pub const INITIAL: Duration = Duration::from_millis(200);

pub fn nats_up() -> bool {
    let sock: SocketAddr = NATS.parse().unwrap();
    let ok = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok();
    if !ok {
        eprintln!("skipped: no NATS on {NATS}");
    }
    ok
}

/// Bucket, stream and subject prefix of one test.
pub struct Names {
    pub bucket: String,
    pub stream: String,
    pub prefix: String,
}

impl Names {
    pub fn new() -> Names {
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
/// counting the connections open now and the most ever open at once
/// (`accepted` counts them all).
pub struct CountingFeed {
    pub feed: Feed,
    pub open: Arc<AtomicI64>,
    pub max_open: Arc<AtomicI64>,
}

impl CountingFeed {
    pub fn start() -> CountingFeed {
        let open = Arc::new(AtomicI64::new(0));
        let max_open = Arc::new(AtomicI64::new(0));
        let (counter, max) = (Arc::clone(&open), Arc::clone(&max_open));
        let feed = Feed::start(move |mut c| {
            let (open, max) = (Arc::clone(&counter), Arc::clone(&max));
            async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
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
        CountingFeed { feed, open, max_open }
    }

    pub fn open(&self) -> i64 {
        self.open.load(Ordering::SeqCst)
    }

    /// The most connections this feed ever had open at once.
    pub fn max_open(&self) -> i64 {
        self.max_open.load(Ordering::SeqCst)
    }
}

/// One replica: the real binary with its own config and port.
pub struct Replica {
    pub node: String,
    pub addr: SocketAddr,
    pub config: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub daemon: Option<Daemon>,
    /// Appended to the config (sinks).
    pub extra: String,
}

impl Replica {
    pub fn new(dir: &std::path::Path, node: &str, names: &Names, feeds: &[CountingFeed]) -> Replica {
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
    pub fn write(&self, names: &Names, feeds: &[(usize, &CountingFeed)]) {
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
    pub fn reload(&self) {
        let pid = self.daemon.as_ref().expect("running").0.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }

    pub fn upstream_names(&self) -> Vec<String> {
        let status = self.status().expect("/status");
        status["upstreams"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect()
    }

    pub fn start(&mut self) {
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
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.0.kill().unwrap();
            d.0.wait().unwrap();
        }
    }

    /// SIGTERM by PID; a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            assert!(d.terminate().success(), "{} exits 0 after SIGTERM:\n{}", self.node, self.logs());
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn owned(&self) -> Option<f64> {
        let (code, text) = http_get(self.addr, "/metrics").ok()?;
        (code == 200).then(|| metric(&text, "wsgate_cluster_owned_upstreams ")).flatten()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let (code, text) = http_get(self.addr, "/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&text).ok()).flatten()
    }

    pub fn ready(&self) -> bool {
        http_get(self.addr, "/readyz").is_ok_and(|(c, _)| c == 200)
    }
}

/// Every (upstream, seq) a `/ws` subscriber received, in order.
#[derive(Default)]
pub struct Seen(Mutex<BTreeMap<String, Vec<u64>>>, std::sync::atomic::AtomicUsize);

impl Seen {
    /// Subscribes to every upstream of `addr` and records in the background.
    pub async fn follow(addr: SocketAddr) -> Arc<Seen> {
        let mut ws = ws_connect(&format!("ws://{addr}/ws"), &[]).await.expect("a subscriber");
        let seen = Arc::new(Seen::default());
        let into = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if v["event"] == "upstream" && v["state"] == "stopped" {
                    into.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                if let (Some(u), Some(seq)) = (v["upstream"].as_str(), v["seq"].as_u64()) {
                    if v.get("event").is_none() {
                        into.0.lock().unwrap().entry(u.to_string()).or_default().push(seq);
                    }
                }
            }
        });
        seen
    }

    /// `stopped` state events seen (an upstream that moves between
    /// replicas is never stopped for a subscriber).
    pub fn stopped(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn count(&self, upstream: &str) -> usize {
        self.0.lock().unwrap().get(upstream).map_or(0, Vec::len)
    }

    /// Per upstream: seqs consecutive (each the last + 1), so nothing
    /// missing and nothing twice. Returns the number of messages checked.
    pub fn assert_consecutive(&self) -> usize {
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
pub async fn balanced(
    feeds: &[CountingFeed],
    replicas: &[&Replica],
    per: f64,
    deadline: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    eventually(deadline, what, || {
        feeds.iter().all(|f| f.open() == 1) && replicas.iter().all(|r| r.owned() == Some(per))
    })
    .await;
    started.elapsed()
}

/// Which replica (by node name) `/status` of `r` names as owner of each upstream.
pub fn owners(r: &Replica) -> BTreeMap<String, String> {
    let status = r.status().expect("/status");
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().to_string(), u["owner"].as_str().unwrap_or("").to_string()))
        .collect()
}
