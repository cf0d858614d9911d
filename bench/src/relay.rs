//! The reference relay: the minimal fan-out a Rust programmer would write
//! with tokio-tungstenite. One task per upstream reads frames and sends an
//! `Arc` of the message (raw frame, plus the envelope encoded once when any
//! envelope subscriber exists) on a `tokio::sync::broadcast` channel of
//! `capacity` (like wsgate's `queue_capacity`; a lagging receiver skips, like
//! drop_oldest). One task per subscriber writes what it receives, flushing
//! when the channel is momentarily empty. No heartbeat, no metrics, no
//! filters: the floor wsgate is compared against.
//!
//! Serves `/ws?format=raw|envelope` (any path) on 127.0.0.1.
//!
//! One deliberate deviation from tokio-tungstenite's defaults: an 8 KiB read
//! buffer instead of 128 KiB. tungstenite zero-fills the read buffer up to its
//! size before every read (40 % of the relay's instructions at 400 msg/s under
//! callgrind) and allocates it per connection (135 KiB per idle subscriber),
//! which would make the reference an easy target.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::feed::println_json;

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Port on 127.0.0.1 (0 = any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Upstream feed URL; repeat for several upstreams (named feed, feed1, ...).
    #[arg(long, required = true)]
    pub upstream: Vec<String>,
    /// Broadcast channel capacity (messages).
    #[arg(long, default_value_t = 1024)]
    pub capacity: usize,
    /// Fixed delay between reconnect attempts, ms.
    #[arg(long, default_value_t = 100)]
    pub retry_ms: u64,
    /// Exit after this many seconds (every run is bounded).
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Lossless: one bounded channel (`capacity`) per subscriber instead of
    /// the broadcast; a full one pauses the upstream read until it has room.
    #[arg(long)]
    pub lossless: bool,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

struct Msg {
    raw: Utf8Bytes,
    envelope: Option<Utf8Bytes>,
}

#[derive(Default)]
struct Shared {
    envelope_subs: AtomicUsize,
    lagged: AtomicU64,
    /// Lossless mode: every subscriber's channel; `generation` counts changes.
    subs: Mutex<Vec<mpsc::Sender<Arc<Msg>>>>,
    generation: AtomicU64,
}

/// Where an upstream sends.
enum Out {
    Broadcast(broadcast::Sender<Arc<Msg>>),
    /// Each subscriber's bounded channel; a full one is waited for.
    Lossless(Arc<Shared>),
}

/// What a subscriber reads.
enum Rx {
    Broadcast(broadcast::Receiver<Arc<Msg>>),
    Lossless(mpsc::Receiver<Arc<Msg>>),
}

impl Rx {
    async fn recv(&mut self) -> Result<Arc<Msg>, broadcast::error::RecvError> {
        match self {
            Rx::Broadcast(r) => r.recv().await,
            Rx::Lossless(r) => r.recv().await.ok_or(broadcast::error::RecvError::Closed),
        }
    }

    fn try_recv(&mut self) -> Result<Arc<Msg>, broadcast::error::TryRecvError> {
        match self {
            Rx::Broadcast(r) => r.try_recv(),
            Rx::Lossless(r) => r.try_recv().map_err(|e| match e {
                mpsc::error::TryRecvError::Empty => broadcast::error::TryRecvError::Empty,
                mpsc::error::TryRecvError::Disconnected => broadcast::error::TryRecvError::Closed,
            }),
        }
    }
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();
    let (tx, _) = broadcast::channel::<Arc<Msg>>(args.capacity);
    let shared = Arc::new(Shared::default());
    for (i, url) in args.upstream.iter().enumerate() {
        let name: Arc<str> = if i == 0 { "feed".into() } else { format!("feed{i}").into() };
        let out = if args.lossless { Out::Lossless(Arc::clone(&shared)) } else { Out::Broadcast(tx.clone()) };
        tokio::spawn(upstream(name, url.clone(), out, Arc::clone(&shared), args.retry_ms));
    }
    println_json(json!({"event": "listening", "port": port}));
    let capacity = args.capacity;
    let accept = async {
        loop {
            let Ok((sock, _)) = listener.accept().await else { continue };
            let _ = sock.set_nodelay(true);
            let rx = if args.lossless {
                let (stx, srx) = mpsc::channel(capacity);
                let mut subs = shared.subs.lock().unwrap_or_else(|p| p.into_inner());
                subs.push(stx);
                shared.generation.fetch_add(1, Ordering::SeqCst);
                Rx::Lossless(srx)
            } else {
                Rx::Broadcast(tx.subscribe())
            };
            tokio::spawn(downstream(sock, rx, Arc::clone(&shared)));
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::time::sleep(Duration::from_secs(args.duration)) => {}
    }
    std::process::exit(0)
}

async fn upstream(name: Arc<str>, url: String, out: Out, shared: Arc<Shared>, retry_ms: u64) {
    let mut seq: u64 = 0;
    // Lossless: the subscribers' senders, re-read when the set changes.
    let mut subs: Vec<mpsc::Sender<Arc<Msg>>> = Vec::new();
    let mut generation = u64::MAX;
    loop {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true).await {
            let (_w, mut r) = ws.split();
            while let Some(Ok(m)) = r.next().await {
                let Message::Text(raw) = m else { continue };
                seq += 1;
                let envelope = (shared.envelope_subs.load(Ordering::SeqCst) > 0)
                    .then(|| encode_envelope(&name, &raw, seq))
                    .flatten();
                let msg = Arc::new(Msg { raw, envelope });
                match &out {
                    // No receiver is fine.
                    Out::Broadcast(tx) => {
                        let _ = tx.send(msg);
                    }
                    Out::Lossless(sh) => {
                        let g = sh.generation.load(Ordering::SeqCst);
                        if g != generation {
                            generation = g;
                            let mut all = sh.subs.lock().unwrap_or_else(|p| p.into_inner());
                            all.retain(|s| !s.is_closed());
                            subs.clone_from(&all);
                        }
                        for s in &subs {
                            match s.try_send(Arc::clone(&msg)) {
                                Ok(()) => {}
                                // Full: this read waits until the subscriber has room.
                                Err(mpsc::error::TrySendError::Full(m)) => {
                                    let _ = s.send(m).await;
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => {
                                    sh.generation.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    }
}

/// The same envelope as wsgate's (SPEC §5), encoded once per message.
fn encode_envelope(upstream: &str, raw: &Utf8Bytes, seq: u64) -> Option<Utf8Bytes> {
    #[derive(serde::Deserialize)]
    struct Topic<'a> {
        #[serde(rename = "type", borrow)]
        ty: Option<Cow<'a, str>>,
    }
    // Validates the whole document, as a JSON-decoding gateway must.
    let topic = serde_json::from_str::<Topic>(raw.as_str()).ok()?.ty.unwrap_or_default();
    let mut out = BytesMut::with_capacity(raw.len() + upstream.len() + topic.len() + 112);
    out.put_slice(b"{\"upstream\":");
    out.put_slice(serde_json::to_string(upstream).ok()?.as_bytes());
    out.put_slice(b",\"topic\":");
    out.put_slice(serde_json::to_string(&topic).ok()?.as_bytes());
    out.put_slice(b",\"seq\":");
    out.put_slice(seq.to_string().as_bytes());
    out.put_slice(b",\"received_at\":\"");
    out.put_slice(humantime::format_rfc3339_nanos(SystemTime::now()).to_string().as_bytes());
    out.put_slice(b"\",\"data\":");
    out.put_slice(raw.as_bytes());
    out.put_u8(b'}');
    Utf8Bytes::try_from(out.freeze()).ok()
}

#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
async fn downstream(sock: TcpStream, mut rx: Rx, shared: Arc<Shared>) {
    let mut raw = false;
    let cb = |req: &Request, resp: Response| {
        raw = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "format=raw"));
        // Counted before the 101 goes out: a client that saw its upgrade
        // gets envelopes for every message published after that.
        if !raw {
            shared.envelope_subs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, Some(ws_config())).await else {
        if !raw {
            shared.envelope_subs.fetch_sub(1, Ordering::SeqCst);
        }
        return;
    };
    let (mut w, mut r) = ws.split();
    // Drains the client; ends the session when it goes away.
    let mut reader = tokio::spawn(async move { while let Some(Ok(_)) = r.next().await {} });
    let frame = |m: &Msg| -> Option<Message> {
        if raw {
            Some(Message::Text(m.raw.clone()))
        } else {
            m.envelope.clone().map(Message::Text)
        }
    };
    'session: loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = &mut reader => break 'session,
        };
        let mut next = first;
        let mut fed = 0;
        loop {
            match next {
                Ok(m) => {
                    if let Some(f) = frame(&m) {
                        if w.feed(f).await.is_err() {
                            break 'session;
                        }
                        fed += 1;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    shared.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break 'session,
            }
            if fed >= 256 {
                break;
            }
            match rx.try_recv() {
                Ok(m) => next = Ok(m),
                Err(broadcast::error::TryRecvError::Lagged(n)) => next = Err(broadcast::error::RecvError::Lagged(n)),
                Err(_) => break,
            }
        }
        if w.flush().await.is_err() {
            break;
        }
    }
    reader.abort();
    if !raw {
        shared.envelope_subs.fetch_sub(1, Ordering::SeqCst);
    }
}
