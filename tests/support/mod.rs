//! Real parts for tests: a scriptable WebSocket feed server, a fault proxy,
//! an HTTP getter, and deadline-based waiting. Servers run on their own
//! thread and tokio runtime, bound to 127.0.0.1:0.

#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub mod proxies;
pub mod tls;
pub mod venue;

/// What the feed saw of one connection's handshake.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub uri: String,
    /// Lower-cased header names with values.
    pub headers: Vec<(String, String)>,
    /// When the handshake arrived.
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Shared record of everything the feed saw.
#[derive(Debug, Default)]
pub struct FeedLog {
    /// Every handshake attempt, accepted or refused.
    pub attempts: Mutex<Vec<Seen>>,
    /// Text messages received from the client, per connection index.
    pub received: Mutex<Vec<(usize, String)>>,
    /// Close codes received from the client.
    pub closes: Mutex<Vec<u16>>,
    /// Accepted connections.
    pub accepted: AtomicUsize,
}

impl FeedLog {
    pub fn attempts(&self) -> Vec<Seen> {
        self.attempts.lock().unwrap().clone()
    }
    pub fn received(&self) -> Vec<(usize, String)> {
        self.received.lock().unwrap().clone()
    }
    pub fn closes(&self) -> Vec<u16> {
        self.closes.lock().unwrap().clone()
    }
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Decides how to answer a handshake: `Ok(extra response headers)` accepts,
/// `Err((status, headers))` refuses.
pub type Gate = Arc<dyn Fn(usize, &Seen) -> Result<Vec<(String, String)>, (u16, Vec<(String, String)>)> + Send + Sync>;

/// One accepted connection, for the script to drive.
pub struct Conn {
    pub ws: WebSocketStream<Box<dyn Io>>,
    /// 0-based index of the accepted connection.
    pub index: usize,
    pub log: Arc<FeedLog>,
}

pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Conn {
    pub async fn send_text(&mut self, text: impl Into<String>) -> bool {
        self.ws.send(Message::text(text.into())).await.is_ok()
    }

    /// Reads the next text message from the client, recording it; `None` at close/EOF.
    pub async fn recv_text(&mut self) -> Option<String> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(t)) => {
                    let t = t.to_string();
                    self.log.received.lock().unwrap().push((self.index, t.clone()));
                    return Some(t);
                }
                Ok(Message::Close(c)) => {
                    if let Some(c) = c {
                        self.log.closes.lock().unwrap().push(u16::from(c.code));
                    }
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Reads (answering pings, recording texts and closes) until the client goes away.
    pub async fn drain(&mut self) {
        while self.recv_text().await.is_some() {}
    }
}

type Script = Arc<dyn Fn(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A WebSocket server on 127.0.0.1:0 driven by a script per connection.
pub struct Feed {
    pub addr: SocketAddr,
    pub log: Arc<FeedLog>,
    stop: Arc<AtomicBool>,
}

impl Feed {
    /// Accepts every handshake; runs `script` for each connection.
    pub fn start<F, Fut>(script: F) -> Feed
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::start_gated(Arc::new(|_, _| Ok(Vec::new())), None, script)
    }

    /// As [`Feed::start`], with a handshake gate and optional TLS.
    pub fn start_gated<F, Fut>(gate: Gate, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>, script: F) -> Feed
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let script: Script = Arc::new(move |c| Box::pin(script(c)));
        let log = Arc::new(FeedLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (log2, stop2) = (Arc::clone(&log), Arc::clone(&stop));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let attempts = Arc::new(AtomicUsize::new(0));
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    let (gate, script, log, attempts, tls) =
                        (Arc::clone(&gate), Arc::clone(&script), Arc::clone(&log2), Arc::clone(&attempts), tls.clone());
                    tokio::spawn(async move {
                        let io: Box<dyn Io> = match tls {
                            Some(cfg) => match tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                Ok(s) => Box::new(s),
                                Err(_) => return,
                            },
                            None => Box::new(tcp),
                        };
                        serve(io, gate, script, log, attempts).await;
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        Feed { addr, log, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = StdTcpStream::connect(self.addr);
    }
}

// The handshake callback's signature is tungstenite's (a large `Err` type).
#[allow(clippy::result_large_err)]
async fn serve(io: Box<dyn Io>, gate: Gate, script: Script, log: Arc<FeedLog>, attempts: Arc<AtomicUsize>) {
    let n = attempts.fetch_add(1, Ordering::SeqCst);
    let log_cb = Arc::clone(&log);
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let seen = Seen {
            uri: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            at: Instant::now(),
        };
        log_cb.attempts.lock().unwrap().push(seen.clone());
        match gate(n, &seen) {
            Ok(extra) => {
                for (k, v) in extra {
                    resp.headers_mut().insert(
                        tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                Ok(resp)
            }
            Err((status, headers)) => {
                let mut b = tokio_tungstenite::tungstenite::http::Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                Err(b.body(None).unwrap())
            }
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(io, callback).await else { return };
    let index = log.accepted.fetch_add(1, Ordering::SeqCst);
    script(Conn { ws, index, log }).await;
}

/// A TCP proxy that can stop forwarding while keeping both sockets open
/// (a half-open link as a dead NAT or a cut cable leaves it).
pub struct FaultProxy {
    pub addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(target: SocketAddr) -> FaultProxy {
        let blackhole = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let bh = Arc::clone(&blackhole);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    let Ok(server) = TcpStream::connect(target).await else { continue };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, Arc::clone(&bh)));
                    tokio::spawn(pump(sr, cw, Arc::clone(&bh)));
                }
            });
        });
        FaultProxy { addr: rx.recv().unwrap(), blackhole }
    }

    /// Stop (true) or resume (false) forwarding; sockets stay open either way.
    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, bh: Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if !bh.load(Ordering::SeqCst) {
                    let _ = to.shutdown().await;
                    return;
                }
                // Blackholed: keep the other side open, as a dead path would.
                std::future::pending::<()>().await;
                return;
            }
            Ok(n) => n,
        };
        if bh.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A blocking HTTP/1.0 GET; returns (status, body). For the real binary.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = StdTcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `cond` every 20 ms until it holds or `deadline` passes.
pub async fn eventually(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`eventually`] for tests that drive the real binary.
pub fn eventually_blocking(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Logs of the in-process gateway on stderr when RUST_LOG is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        wsgate::telemetry::init_logging(&wsgate::config::LogConfig::default());
    }
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of a metric series in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// A WebSocket client stream as tokio-tungstenite gives it.
pub type Client = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects a subscriber with extra headers; `Err(status)` when the upgrade is refused.
pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect {url}: {e}"),
    }
}

/// The next text frame as JSON, skipping pings; panics after `deadline`.
pub async fn next_json(ws: &mut Client, deadline: Duration) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(deadline, ws.next()).await.expect("a frame within the deadline");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON text frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Resident set size of a process in bytes (Linux).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A feed that sends `{"type":"trade"|"book","i":N}` every `every`, topics
/// alternating, until the client goes away.
pub fn ticking_feed(every: Duration) -> Feed {
    Feed::start(move |mut c| async move {
        let mut i = 0u64;
        loop {
            i += 1;
            let topic = if i % 2 == 0 { "book" } else { "trade" };
            if !c.send_text(format!(r#"{{"type":"{topic}","i":{i}}}"#)).await {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Gateway settings listening on 127.0.0.1:0 with these upstreams.
pub fn settings(upstreams: Vec<wsgate::config::UpstreamConfig>) -> wsgate::config::Settings {
    let mut s = wsgate::config::Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.upstreams = upstreams;
    s
}

/// The real binary as a child process, killed if a test ends early.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's stderr, collected line by line on a thread of its own.
pub struct StderrLog {
    text: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl StderrLog {
    /// Takes the child's piped stderr and starts collecting it.
    pub fn collect(child: &mut std::process::Child) -> StderrLog {
        use std::io::BufRead;
        let pipe = child.stderr.take().expect("stderr is piped");
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        StderrLog { text, reader: Some(reader) }
    }

    /// Everything so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// True when `needle` has appeared.
    pub fn has(&self, needle: &str) -> bool {
        self.text.lock().unwrap().contains(needle)
    }

    /// After the child exited: everything it wrote.
    pub fn finish(mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

impl Daemon {
    /// SIGTERM by PID, then waits (up to 15 s) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
