//! Soak helpers for wsgate (driven by `scripts/soak.sh`).
//!
//! - `wsgate-soak feed`: a WebSocket feed on loopback that sends numbered
//!   JSON (`{"type":"tick","n":N,...}`) at a steady rate to whoever is
//!   connected, and appends `<connection> <n>` to a log for every message it
//!   has written to a socket. Killed and restarted by the script; numbering
//!   continues from the log (with a jump, so no number is ever reused).
//!   SIGTERM closes its clients with 1001 first; SIGKILL does not.
//! - `wsgate-soak subs`: N healthy subscribers that record every `data.n`
//!   and check that wsgate's `seq` is consecutive, plus M subscribers that
//!   connect and never read. On SIGTERM (or at `--max-seconds`) it compares
//!   what each healthy subscriber got with the feed's log and writes a JSON
//!   report.
//!
//! Only the feed decides what was "sent": it sends only while wsgate is
//! connected, so messages of the upstream's downtime are never in its log,
//! and what a healthy subscriber misses from the log is loss.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let result = match args.first().map(String::as_str) {
        Some("feed") => rt.block_on(feed(Opts::parse(&args[1..]))),
        Some("subs") => rt.block_on(subs(Opts::parse(&args[1..]))),
        _ => Err("usage: wsgate-soak feed|subs --key value ...".into()),
    };
    if let Err(e) = result {
        eprintln!("wsgate-soak: {e}");
        std::process::exit(1);
    }
}

/// `--key value` pairs.
struct Opts(BTreeMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut map = BTreeMap::new();
        for pair in args.chunks(2) {
            if let [k, v] = pair {
                map.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
        }
        Opts(map)
    }

    fn get(&self, key: &str) -> Res<&str> {
        self.0.get(key).map(String::as_str).ok_or_else(|| format!("missing --{key}").into())
    }

    fn num(&self, key: &str, default: u64) -> Res<u64> {
        match self.0.get(key) {
            Some(v) => Ok(v.parse()?),
            None => Ok(default),
        }
    }
}

// === feed ===

/// Appends `<connection> <n>` lines; written per message (unbuffered), so a
/// SIGKILL loses at most the line of the message being sent.
struct SentLog(Mutex<std::fs::File>);

impl SentLog {
    fn line(&self, text: &str) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(text.as_bytes());
    }
}

/// The highest `n` in an existing feed log (0 when there is none).
fn max_sent(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

async fn feed(o: Opts) -> Res<()> {
    let listen: SocketAddr = o.get("listen")?.parse()?;
    let rate = o.num("rate", 50)?.max(1);
    let log_path = o.get("log")?.to_string();
    // A jump over anything a killed predecessor may have sent without logging.
    let last = max_sent(&log_path);
    let first = if last == 0 { 1 } else { last + 1000 };
    let log = Arc::new(SentLog(Mutex::new(OpenOptions::new().create(true).append(true).open(&log_path)?)));
    let listener = TcpListener::bind(listen).await?;
    eprintln!("feed: pid {} on {listen}, {rate} msg/s, numbering from {first}", std::process::id());

    let (tx, _) = broadcast::channel::<u64>(4096);
    let (stop_tx, stop_rx) = watch::channel(false);
    let generator = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = first;
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Only while a client listens: the downtime sends nothing.
                if tx.receiver_count() > 0 && tx.send(n).is_ok() {
                    n += 1;
                }
            }
        })
    };

    let pid = std::process::id();
    let conns = Arc::new(AtomicUsize::new(0));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tasks = Vec::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let id = conns.fetch_add(1, Ordering::SeqCst);
                let (rx, log, stop) = (tx.subscribe(), Arc::clone(&log), stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        serve_feed(ws, format!("{pid}.{id}"), rx, log, stop).await;
                    }
                }));
            }
            _ = term.recv() => break,
        }
    }
    // SIGTERM: a clean close for every client, bounded.
    generator.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), futures_util::future::join_all(tasks)).await;
    eprintln!("feed: pid {pid} stopped by SIGTERM");
    Ok(())
}

async fn serve_feed(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    conn: String,
    mut rx: broadcast::Receiver<u64>,
    log: Arc<SentLog>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = ws.split();
    log.line(&format!("# open {conn}\n"));
    let pad = "x".repeat(64);
    loop {
        tokio::select! {
            n = rx.recv() => match n {
                Ok(n) => {
                    let text = format!(r#"{{"type":"tick","n":{n},"pad":"{pad}"}}"#);
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                    log.line(&format!("{conn} {n}\n"));
                }
                Err(broadcast::error::RecvError::Lagged(k)) => log.line(&format!("# lagged {conn} {k}\n")),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // Read everything (pings are answered on the next write), so
            // that a kill finds no unread data and the kernel sends FIN
            // after what we wrote, not RST.
            m = stream.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let frame = CloseFrame { code: CloseCode::Away, reason: "feed restarting".into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
        }
    }
    log.line(&format!("# close {conn}\n"));
}

// === subscribers ===

#[derive(Default)]
struct Healthy {
    /// Every `data.n` received, in order.
    ns: Vec<u64>,
    /// `seq` jumps seen (wsgate dropped something for this subscriber).
    seq_jumps: u64,
    /// Messages missing according to `seq`.
    seq_missing: u64,
    /// `gap` events and the `missed` they announced.
    gap_events: u64,
    gap_missed: u64,
    /// `upstream` state events.
    state_events: u64,
    /// Error events, frames that were not JSON.
    other: u64,
    /// Times the connection ended before the soak did.
    disconnects: u64,
    connected: bool,
}

async fn subs(o: Opts) -> Res<()> {
    let url = o.get("url")?.to_string();
    let healthy = o.num("healthy", 49)? as usize;
    let stalled = o.num("stalled", 1)? as usize;
    let max_seconds = o.num("max-seconds", 3600)?;
    let feed_log = o.get("feed-log")?.to_string();
    let out = o.get("out")?.to_string();

    let (stop_tx, stop_rx) = watch::channel(false);
    let connected = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..healthy {
        let (url, stop) = (url.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(healthy_subscriber(url, stop, Arc::clone(&connected), Arc::clone(&alive))));
    }
    let end = Instant::now() + Duration::from_secs(max_seconds);
    while connected.load(Ordering::SeqCst) < healthy as u64 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stalled_streams = Vec::new();
    for _ in 0..stalled {
        stalled_streams.push(connect_stalled(&url).await?);
    }
    eprintln!(
        "subs: {} healthy and {} stalled subscribers connected",
        connected.load(Ordering::SeqCst),
        stalled_streams.len()
    );
    println!("READY");

    // A client that never reads also never answers pings, so wsgate drops it
    // after its client timeout (or the kernel after stall_timeout). Like a
    // stuck client with reconnect logic, it comes back: whenever /metrics
    // counts fewer WebSocket subscribers than the healthy ones alive plus
    // the stalled ones, the stalled ones are replaced.
    let metrics_addr = url.trim_start_matches("ws://").split('/').next().unwrap_or("").to_string();
    let mut stalled_replaced = 0u64;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::time::sleep_until(end.into()) => {
                eprintln!("subs: --max-seconds reached");
                break;
            }
            _ = check.tick() => {
                let want = alive.load(Ordering::SeqCst) + stalled as i64;
                let Some(live) = websocket_subscribers(&metrics_addr).await else { continue };
                if live < want && stalled > 0 {
                    stalled_streams.clear();
                    for _ in 0..stalled {
                        stalled_streams.push(connect_stalled(&url).await?);
                    }
                    stalled_replaced += stalled as u64;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            results.push(h);
        }
    }
    let stalled_count = stalled_streams.len();
    drop(stalled_streams);
    let mut report = analyse(&feed_log, &results, stalled_count);
    report["stalled_replaced"] = stalled_replaced.into();
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("{report}");
    Ok(())
}

/// A subscriber that connects and is never polled again.
async fn connect_stalled(url: &str) -> Res<Stalled> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) if Instant::now() > deadline => return Err(format!("stalled subscriber: {e}").into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

type Stalled = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `wsgate_subscribers{kind="websocket"}` from /metrics (plain HTTP/1.0).
async fn websocket_subscribers(addr: &str) -> Option<i64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("wsgate_subscribers{kind=\"websocket\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as i64)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.ok().flatten()
}

async fn healthy_subscriber(
    url: String,
    mut stop: watch::Receiver<bool>,
    connected: Arc<AtomicU64>,
    alive: Arc<AtomicI64>,
) -> Healthy {
    let mut h = Healthy::default();
    let mut last_seq: Option<u64> = None;
    // Bounded: stops when told to, and reconnects are paced.
    while !*stop.borrow() {
        let ws = tokio::select! {
            r = tokio_tungstenite::connect_async(url.as_str()) => r,
            _ = stop.changed() => break,
        };
        let Ok((mut ws, _)) = ws else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !h.connected {
            h.connected = true;
            connected.fetch_add(1, Ordering::SeqCst);
        }
        alive.fetch_add(1, Ordering::SeqCst);
        loop {
            let m = tokio::select! {
                m = ws.next() => m,
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return h;
                }
            };
            match m {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
                        h.other += 1;
                        continue;
                    };
                    match v.get("event").and_then(|e| e.as_str()) {
                        Some("gap") => {
                            h.gap_events += 1;
                            h.gap_missed += v["missed"].as_u64().unwrap_or(0);
                        }
                        Some("upstream") => h.state_events += 1,
                        Some(_) => h.other += 1,
                        None => {
                            let (Some(seq), Some(n)) = (v["seq"].as_u64(), v["data"]["n"].as_u64()) else {
                                h.other += 1;
                                continue;
                            };
                            if let Some(last) = last_seq {
                                if seq != last + 1 {
                                    h.seq_jumps += 1;
                                    h.seq_missing += seq.saturating_sub(last + 1);
                                }
                            }
                            last_seq = Some(seq);
                            h.ns.push(n);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        alive.fetch_sub(1, Ordering::SeqCst);
        h.disconnects += 1;
        last_seq = None;
    }
    h
}

/// Messages at the very end of a feed connection that may have died in the
/// feed's kernel with it (0.1 s at 200 msg/s).
const TAIL_GRACE: usize = 20;

/// Compares each healthy subscriber with the feed's log.
fn analyse(feed_log: &str, results: &[Healthy], stalled: usize) -> serde_json::Value {
    // Sent numbers by feed connection, in order.
    let mut by_conn: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let text = std::fs::read_to_string(feed_log).unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        if let (Some(c), Some(Ok(n))) = (parts.next(), parts.next().map(str::parse::<u64>)) {
            by_conn.entry(c.to_string()).or_default().push(n);
        }
    }
    let sent_total: usize = by_conn.values().map(Vec::len).sum();
    let mut per_sub = Vec::new();
    let (mut lost_total, mut lost_middle_total, mut lost_tail_total) = (0u64, 0u64, 0u64);
    let mut worst = 0u64;
    for h in results {
        let got: HashSet<u64> = h.ns.iter().copied().collect();
        let duplicates = h.ns.len() - got.len();
        let first = h.ns.iter().copied().min().unwrap_or(u64::MAX);
        let (mut middle, mut tail) = (0u64, 0u64);
        for ns in by_conn.values() {
            // Only what was sent after this subscriber's first message.
            let window: Vec<u64> = ns.iter().copied().filter(|n| *n >= first).collect();
            let last_got = window.iter().rposition(|n| got.contains(n));
            for (i, n) in window.iter().enumerate() {
                if got.contains(n) {
                    continue;
                }
                // Missing after the last message this subscriber got from that
                // link, and among the link's last few: in flight when the
                // upstream died (its own downtime). Anything else is loss.
                if last_got.is_none_or(|l| i > l) && window.len() - i <= TAIL_GRACE {
                    tail += 1;
                } else {
                    middle += 1;
                }
            }
        }
        lost_total += middle + tail;
        lost_middle_total += middle;
        lost_tail_total += tail;
        worst = worst.max(middle + tail);
        per_sub.push(serde_json::json!({
            "received": h.ns.len(), "first_n": first, "duplicates": duplicates,
            "lost_mid_link": middle, "lost_at_link_end": tail,
            "seq_jumps": h.seq_jumps, "seq_missing": h.seq_missing,
            "gap_events": h.gap_events, "gap_missed": h.gap_missed,
            "state_events": h.state_events, "other_frames": h.other, "disconnects": h.disconnects,
        }));
    }
    serde_json::json!({
        "feed_connections": by_conn.len(),
        "feed_sent": sent_total,
        "healthy_subscribers": results.len(),
        "stalled_subscribers": stalled,
        "lost_total": lost_total,
        "lost_mid_link_total": lost_middle_total,
        "lost_at_link_end_total": lost_tail_total,
        "worst_subscriber_lost": worst,
        "seq_jumps_total": results.iter().map(|h| h.seq_jumps).sum::<u64>(),
        "gap_events_total": results.iter().map(|h| h.gap_events).sum::<u64>(),
        "subscriber_disconnects_total": results.iter().map(|h| h.disconnects).sum::<u64>(),
        "received_min": results.iter().map(|h| h.ns.len()).min().unwrap_or(0),
        "received_max": results.iter().map(|h| h.ns.len()).max().unwrap_or(0),
        "per_subscriber": per_sub,
    })
}
