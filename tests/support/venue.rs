//! A venue-like feed for the continuity tests (SPEC §14): one numbered
//! stream, `{"type":"tick","seq":N}` from a global counter, sent to every
//! connection of every endpoint at the same moment, as a real venue
//! broadcasts. An endpoint can be taken down (its links dropped, new ones
//! refused with 503) and brought back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::{Feed, FeedLog};

/// Endpoints of one numbered stream.
pub struct Venue {
    pub feeds: Vec<Feed>,
    down: Vec<Arc<AtomicBool>>,
    refused: Vec<Arc<AtomicBool>>,
    stop: Arc<AtomicBool>,
    /// The last number sent.
    pub sent: Arc<AtomicU64>,
}

impl Venue {
    /// `endpoints` servers of one stream; a new number every `every`.
    pub fn start(endpoints: usize, every: Duration) -> Venue {
        let (tx, _) = broadcast::channel::<u64>(1 << 16);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        {
            let (tx, stop, sent) = (tx.clone(), Arc::clone(&stop), Arc::clone(&sent));
            // The venue's clock: a producer, not a test wait.
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let n = sent.fetch_add(1, Ordering::SeqCst) + 1;
                    let _ = tx.send(n);
                    std::thread::sleep(every);
                }
            });
        }
        let mut feeds = Vec::new();
        let (mut down, mut refused) = (Vec::new(), Vec::new());
        for _ in 0..endpoints {
            let flag = Arc::new(AtomicBool::new(false));
            let refuse = Arc::new(AtomicBool::new(false));
            let (gate_down, gate_refuse) = (Arc::clone(&flag), Arc::clone(&refuse));
            let gate: super::Gate = Arc::new(move |_, _| {
                if gate_down.load(Ordering::SeqCst) || gate_refuse.load(Ordering::SeqCst) {
                    Err((503, Vec::new()))
                } else {
                    Ok(Vec::new())
                }
            });
            let (tx, flag2) = (tx.clone(), Arc::clone(&flag));
            feeds.push(Feed::start_gated(gate, None, move |mut c| {
                let mut rx = tx.subscribe();
                let down = Arc::clone(&flag2);
                async move {
                    loop {
                        tokio::select! {
                            n = rx.recv() => {
                                let Ok(n) = n else { return };
                                if down.load(Ordering::SeqCst)
                                    || !c.send_text(format!(r#"{{"type":"tick","seq":{n}}}"#)).await
                                {
                                    return;
                                }
                            }
                            frame = c.ws.next() => match frame {
                                Some(Ok(Message::Close(cf))) => {
                                    if let Some(cf) = cf {
                                        c.log.closes.lock().unwrap().push(u16::from(cf.code));
                                    }
                                    return;
                                }
                                Some(Ok(Message::Text(t))) => {
                                    c.log.received.lock().unwrap().push((c.index, t.to_string()));
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            },
                        }
                    }
                }
            }));
            down.push(flag);
            refused.push(refuse);
        }
        Venue { feeds, down, refused, stop, sent }
    }

    /// The URL of endpoint `i`.
    pub fn url(&self, i: usize) -> String {
        self.feeds[i].url("/")
    }

    /// What endpoint `i` saw.
    pub fn log(&self, i: usize) -> &FeedLog {
        &self.feeds[i].log
    }

    /// Takes endpoint `i` down (drops its links, refuses new ones) or back up.
    pub fn set_down(&self, i: usize, down: bool) {
        self.down[i].store(down, Ordering::SeqCst);
    }

    /// Refuses new links of endpoint `i` (503), keeping the open ones.
    pub fn refuse(&self, i: usize, refuse: bool) {
        self.refused[i].store(refuse, Ordering::SeqCst);
    }
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What one subscriber saw: the numbers of the data messages, and events.
#[derive(Debug, Default)]
pub struct Seen {
    pub seqs: Vec<u64>,
    pub events: Vec<serde_json::Value>,
}

impl Seen {
    /// Numbers missing between the first and the last one seen.
    pub fn missing(&self) -> u64 {
        let set: std::collections::BTreeSet<u64> = self.seqs.iter().copied().collect();
        match (set.first(), set.last()) {
            (Some(a), Some(b)) => (b - a + 1) - set.len() as u64,
            _ => 0,
        }
    }

    /// Numbers seen more than once.
    pub fn duplicates(&self) -> u64 {
        let set: std::collections::BTreeSet<u64> = self.seqs.iter().copied().collect();
        (self.seqs.len() - set.len()) as u64
    }

    /// `upstream` state events, by state.
    pub fn states(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "upstream")
            .map(|e| e["state"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// `n` envelope subscribers on their own runtime, each reading `url` for
/// `run`; the thread's result is what each one saw.
pub fn subscribers(n: usize, url: String, run: Duration) -> std::thread::JoinHandle<Vec<Result<Seen, String>>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let mut ws = super::ws_connect(&url, &[]).await.map_err(|s| format!("sub {i}: HTTP {s}"))?;
                        let end = tokio::time::Instant::now() + run;
                        let mut seen = Seen::default();
                        loop {
                            let frame = match tokio::time::timeout_at(end, ws.next()).await {
                                Err(_) => return Ok(seen),
                                Ok(f) => f,
                            };
                            match frame {
                                Some(Ok(Message::Text(t))) => {
                                    let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                                    if v.get("event").is_some() {
                                        seen.events.push(v);
                                    } else if let Some(s) = v["data"]["seq"].as_u64() {
                                        seen.seqs.push(s);
                                    }
                                }
                                Some(Ok(_)) => {}
                                other => return Err(format!("sub {i}: {other:?}")),
                            }
                        }
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        })
    })
}
