//! The subscriber swarm: N WebSocket clients on one URL. Each reading client
//! records, inside the measurement window, deliveries, per-message latency
//! (receive wall clock minus the feed's send stamp) in an HDR histogram, and
//! sequence gaps. `--never-read K` makes K of them connect and then never
//! read their socket (a stalled consumer).
//!
//! Prints on stdout `{"event":"connected",...}` once every client is up, then
//! `{"event":"result",...}` at the end of the window, and exits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{now_ns, parse_stamp};
use crate::feed::println_json;

#[derive(clap::Args, Debug, Clone)]
pub struct SwarmArgs {
    /// Subscriber URL, e.g. ws://127.0.0.1:9750/ws?format=raw
    #[arg(long)]
    pub url: String,
    /// Number of clients.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// How many of them never read.
    #[arg(long, default_value_t = 0)]
    pub never_read: usize,
    /// Seconds after all clients connected before the window opens.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Window length, seconds.
    #[arg(long, default_value_t = 4.0)]
    pub measure: f64,
    /// Connect, report, then hold the connections (reading, not recording)
    /// for `--measure` seconds: idle-memory runs.
    #[arg(long)]
    pub idle: bool,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Lossless burst: every reader reads until it has this many messages
    /// (the window opens at once and `--measure` is only the time limit).
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// Each client follows this many upstreams (`&upstream=` added to the
    /// URL), out of `--upstreams` named `{prefix}0`.. (the scale run); 0 =
    /// the URL as given.
    #[arg(long, default_value_t = 0)]
    pub follow: usize,
    /// The number of upstreams `--follow` picks from.
    #[arg(long, default_value_t = 1)]
    pub upstreams: usize,
    /// The name prefix of those upstreams.
    #[arg(long, default_value = "u")]
    pub prefix: String,
}

/// Client `i`'s URL: with `--follow K`, upstreams i*K .. i*K+K-1 (mod M), so
/// every upstream has clients x K / M followers.
fn client_url(args: &SwarmArgs, i: usize) -> String {
    let mut url = args.url.clone();
    let m = args.upstreams.max(1);
    for k in 0..args.follow {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("upstream={}{}", args.prefix, (i * args.follow + k) % m));
    }
    url
}

/// What the swarm reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwarmResult {
    pub clients: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub readers: usize,
    pub window_s: f64,
    /// Messages received by all readers inside the window.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub min_per_reader: u64,
    pub max_per_reader: u64,
    /// Sequence numbers skipped (lost) inside the window, all readers.
    pub missed: u64,
    /// wsgate `gap` events received (envelope only).
    pub gap_events: u64,
    /// Messages at or below the last sequence number seen (duplicates or
    /// out of order) inside the window, all readers.
    #[serde(default)]
    pub repeated: u64,
    /// Readers whose connection ended before the window closed.
    pub closed_early: usize,
    pub lat_us_p50: f64,
    pub lat_us_p90: f64,
    pub lat_us_p99: f64,
    pub lat_us_p999: f64,
    pub lat_us_max: f64,
    pub lat_samples: u64,
    /// `--expect` runs: readers that got all the expected messages.
    pub complete: usize,
    /// `--expect` runs: wall clock (ns) of the first and the last message received.
    pub first_recv_ns: u64,
    pub last_recv_ns: u64,
}

#[derive(Default)]
struct ClientStats {
    deliveries: u64,
    missed: u64,
    repeated: u64,
    gap_events: u64,
    closed_early: bool,
    hist: Option<Histogram<u64>>,
    first_ns: u64,
    last_ns: u64,
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 2).expect("histogram bounds")
}

pub async fn run(args: SwarmArgs) -> anyhow::Result<()> {
    let sem = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (start_tx, start_rx) = tokio::sync::watch::channel::<Option<(Instant, Instant)>>(None);
    let mut handles = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let never = i < args.never_read;
        let (sem, connected, failed, url) =
            (Arc::clone(&sem), Arc::clone(&connected), Arc::clone(&failed), client_url(&args, i));
        let mut start_rx = start_rx.clone();
        let idle = args.idle;
        let expect = args.expect;
        let measure = args.measure;
        handles.push(tokio::spawn(async move {
            let ws = {
                let _permit = sem.acquire().await;
                let mut ws = None;
                for attempt in 0..5 {
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio_tungstenite::connect_async_with_config(
                            url.as_str(),
                            // tungstenite zero-fills the read buffer before each read: keep it small.
                            Some(WebSocketConfig::default().read_buffer_size(16 * 1024)),
                            true,
                        ),
                    )
                    .await
                    {
                        Ok(Ok((s, _))) => {
                            ws = Some(s);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await,
                    }
                }
                ws
            };
            let Some(mut ws) = ws else {
                failed.fetch_add(1, Ordering::SeqCst);
                return None;
            };
            connected.fetch_add(1, Ordering::SeqCst);
            if expect > 0 && !never {
                // A lossless burst: every message counts from the upgrade on,
                // so read at once (the window is only the time limit).
                let limit = Instant::now() + Duration::from_secs_f64(measure + 120.0);
                return Some(read_loop(&mut ws, Instant::now(), limit, idle, expect).await);
            }
            // Wait for the window to be fixed (reading meanwhile, unless stalled).
            let (open, close) = loop {
                if let Some(w) = *start_rx.borrow() {
                    break w;
                }
                if never {
                    let _ = start_rx.changed().await;
                    continue;
                }
                tokio::select! {
                    _ = start_rx.changed() => {}
                    m = ws.next() => if !matches!(m, Some(Ok(_))) { return Some(ClientStats { closed_early: true, ..Default::default() }) },
                }
            };
            if never {
                // Hold the socket, never read it.
                tokio::time::sleep_until(close.into()).await;
                drop(ws);
                return None;
            }
            Some(read_loop(&mut ws, open, close, idle, expect).await)
        }));
    }

    // All connected (or failed), bounded.
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < args.clients
        && Instant::now() < connect_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n_conn = connected.load(Ordering::SeqCst);
    let n_fail = failed.load(Ordering::SeqCst);
    println_json(json!({"event": "connected", "connected": n_conn, "failed": n_fail, "at_ns": now_ns()}));
    let open = Instant::now() + Duration::from_secs_f64(if args.expect > 0 { 0.0 } else { args.warmup });
    let close = open + Duration::from_secs_f64(args.measure);
    let _ = start_tx.send(Some((open, close)));

    let mut res = SwarmResult {
        clients: args.clients,
        connected: n_conn,
        connect_failed: n_fail,
        window_s: args.measure,
        min_per_reader: u64::MAX,
        ..Default::default()
    };
    let mut hist = new_hist();
    for h in handles {
        // Every client returns by `close` (+ a little for the last frame).
        let Ok(Some(s)) = h.await else { continue };
        res.readers += 1;
        res.deliveries += s.deliveries;
        res.min_per_reader = res.min_per_reader.min(s.deliveries);
        res.max_per_reader = res.max_per_reader.max(s.deliveries);
        res.missed += s.missed;
        res.repeated += s.repeated;
        res.gap_events += s.gap_events;
        res.closed_early += usize::from(s.closed_early);
        res.complete += usize::from(args.expect > 0 && s.deliveries == args.expect);
        if s.deliveries > 0 {
            res.first_recv_ns = if res.first_recv_ns == 0 { s.first_ns } else { res.first_recv_ns.min(s.first_ns) };
            res.last_recv_ns = res.last_recv_ns.max(s.last_ns);
        }
        if let Some(h) = s.hist {
            let _ = hist.add(&h);
        }
    }
    if res.readers == 0 {
        res.min_per_reader = 0;
    }
    res.deliveries_per_s = res.deliveries as f64 / args.measure;
    res.lat_samples = hist.len();
    if !hist.is_empty() {
        res.lat_us_p50 = hist.value_at_quantile(0.50) as f64;
        res.lat_us_p90 = hist.value_at_quantile(0.90) as f64;
        res.lat_us_p99 = hist.value_at_quantile(0.99) as f64;
        res.lat_us_p999 = hist.value_at_quantile(0.999) as f64;
        res.lat_us_max = hist.max() as f64;
    }
    let mut v = serde_json::to_value(&res)?;
    v["event"] = json!("result");
    println_json(v);
    Ok(())
}

async fn read_loop<S>(ws: &mut S, open: Instant, close: Instant, idle: bool, expect: u64) -> ClientStats
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut st = ClientStats { hist: (!idle).then(new_hist), ..Default::default() };
    // (run, last seq) per stream: one for a plain feed, one per followed
    // upstream in the scale run (a few: a linear search).
    let mut last: Vec<(u64, u64)> = Vec::with_capacity(1);
    let deadline = tokio::time::sleep_until(close.into());
    tokio::pin!(deadline);
    loop {
        let m = tokio::select! {
            biased;
            _ = &mut deadline => break,
            m = ws.next() => m,
        };
        let bytes: &[u8] = match &m {
            Some(Ok(Message::Text(t))) => t.as_bytes(),
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(_)) => continue,
            _ => {
                st.closed_early = true;
                break;
            }
        };
        if idle {
            continue;
        }
        let now = Instant::now();
        let Some(stamp) = parse_stamp(bytes) else {
            if bytes.starts_with(br#"{"event":"gap""#) && now >= open {
                st.gap_events += 1;
            }
            continue;
        };
        let recv = now_ns();
        let in_window = now >= open;
        match last.iter_mut().find(|(run, _)| *run == stamp.run) {
            Some((_, seq)) => {
                if stamp.seq > *seq + 1 && in_window {
                    st.missed += stamp.seq - *seq - 1;
                }
                if stamp.seq <= *seq && in_window {
                    st.repeated += 1;
                }
                *seq = stamp.seq;
            }
            None => last.push((stamp.run, stamp.seq)),
        }
        if in_window {
            st.deliveries += 1;
            if st.first_ns == 0 {
                st.first_ns = recv;
            }
            st.last_ns = recv;
            if let Some(h) = st.hist.as_mut() {
                h.saturating_record(recv.saturating_sub(stamp.ts) / 1000);
            }
            if expect > 0 && st.deliveries >= expect {
                break;
            }
        }
    }
    st
}
