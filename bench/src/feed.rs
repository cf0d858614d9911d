//! The feed server: a WebSocket server that sends ~200-byte JSON messages,
//! each stamped with its send time and a per-connection sequence number.
//!
//! Controlled through stdin, one command a line:
//! - `halfopen`: every connection stops sending AND stops reading (so pings
//!   go unanswered) while the socket stays open: a half-open link.
//! - `quit`, or stdin closed: exit.
//!
//! Reports on stdout, one JSON object a line: `listening` (port, at_ns),
//! `conn` (connections accepted so far), `halfopen` (at_ns).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{build_message, now_ns, padding};

#[derive(clap::Args, Debug, Clone)]
pub struct FeedArgs {
    /// Port on 127.0.0.1 (0 = any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Messages per second per connection; 0 = as fast as the socket takes them.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Send nothing at all (answer pings only): for idle-memory runs.
    #[arg(long)]
    pub idle: bool,
    /// Identifies this feed instance in every message (`run`), for restarts.
    #[arg(long, default_value_t = 1)]
    pub run_id: u64,
    /// Stop sending after this many messages per connection.
    #[arg(long, default_value_t = 50_000_000)]
    pub count: u64,
    /// Exit after this many seconds whatever happens (every run is bounded).
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Hold every connection silent until stdin says `go` (lossless bursts:
    /// the subscribers connect first).
    #[arg(long)]
    pub wait_go: bool,
    /// Give each connection its own `run` (run_id x 1 000 000 + its number),
    /// so a subscriber of several upstreams fed by this feed tells their
    /// streams apart (the scale run).
    #[arg(long)]
    pub run_per_conn: bool,
    /// Accept permessage-deflate and send compressed frames (when the
    /// client offers it): the scale run with compressed upstreams.
    #[arg(long)]
    pub deflate: bool,
}

pub fn println_json(v: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub async fn run(args: FeedArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();
    println_json(json!({"event": "listening", "port": port, "at_ns": now_ns()}));

    let (half_tx, half_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(!args.wait_go);
    let conns = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let args = Arc::new(args);

    // Commands on stdin.
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) if l.trim() == "halfopen" => {
                    let _ = half_tx.send(true);
                    println_json(json!({"event": "halfopen", "at_ns": now_ns()}));
                }
                Ok(Some(l)) if l.trim() == "go" => {
                    let _ = go_tx.send(true);
                    println_json(json!({"event": "go", "at_ns": now_ns()}));
                }
                Ok(Some(l)) if l.trim() == "quit" => std::process::exit(0),
                Ok(Some(_)) => {}
                _ => std::process::exit(0),
            }
        }
    });

    let accept = async {
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue,
            };
            let _ = sock.set_nodelay(true);
            let (args, half, conns) = (Arc::clone(&args), half_rx.clone(), Arc::clone(&conns));
            let mut go = go_rx.clone();
            tokio::spawn(async move {
                if args.deflate {
                    let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                    println_json(json!({"event": "conn", "n": n, "at_ns": now_ns()}));
                    let run = if args.run_per_conn { args.run_id * 1_000_000 + n } else { args.run_id };
                    if let Err(e) = crate::deflate_feed::serve(sock, &args, run, deadline, &mut go).await {
                        eprintln!("feed: connection ended: {e}");
                    }
                    return;
                }
                if let Err(e) = serve(sock, &args, half, conns, deadline, &mut go).await {
                    eprintln!("feed: connection ended: {e}");
                }
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::time::sleep_until(deadline.into()) => {}
    }
    std::process::exit(0)
}

async fn serve(
    sock: TcpStream,
    args: &FeedArgs,
    mut half: watch::Receiver<bool>,
    conns: Arc<AtomicU64>,
    deadline: Instant,
    go: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ws = tokio_tungstenite::accept_async(sock).await?;
    let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
    println_json(json!({"event": "conn", "n": n, "at_ns": now_ns()}));
    let (mut tx, mut rx) = ws.split();

    // Reader: drains the client (tungstenite answers pings while reading),
    // until half-open, then holds the socket without reading.
    let mut half_r = half.clone();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = rx.next() => match m {
                    Some(Ok(_)) => {}
                    _ => return,
                },
                _ = half_r.wait_for(|h| *h) => break,
            }
        }
        // Half-open: keep the socket, never read it again.
        let _keep = rx;
        std::future::pending::<()>().await;
    });

    let run = if args.run_per_conn { args.run_id * 1_000_000 + n } else { args.run_id };
    let pad = padding();
    let mut buf = String::with_capacity(256);
    let mut sent: u64 = 0;
    tokio::select! {
        _ = go.wait_for(|g| *g) => {}
        _ = tokio::time::sleep_until(deadline.into()) => return Ok(()),
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if *half.borrow() {
            // Keep the socket (and the reader holding it) open, silent.
            let _keep = (tx, reader);
            std::future::pending::<()>().await;
            unreachable!();
        }
        if reader.is_finished() || Instant::now() >= deadline {
            return Ok(());
        }
        if args.idle || sent >= args.count {
            tokio::select! {
                _ = half.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let batch = if args.rate == 0 {
            64
        } else {
            tokio::select! {
                _ = tick.tick() => {}
                _ = half.changed() => continue,
            }
            let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
            // A stalled socket does not cause an unbounded burst afterwards.
            due.saturating_sub(sent).min(args.rate / 10 + 1)
        };
        let batch = batch.min(args.count - sent);
        for _ in 0..batch {
            sent += 1;
            build_message(&mut buf, &pad, run, sent, now_ns());
            tx.feed(Message::text(buf.as_str())).await?;
        }
        if batch > 0 {
            tx.flush().await?;
        }
        if args.rate == 0 {
            tokio::task::yield_now().await;
        }
    }
}
