//! Sinks (SPEC §6): subscribers that are not WebSocket sessions.
//!
//! Each configured sink is one actor draining its own bounded hub queue
//! (`events = false`: data messages only, never state or gap events), with
//! the sink's `upstreams`/`topics` filter and the shared §5 envelope.
//!
//! - `stdout` and `file` write JSON lines with blocking I/O, so each runs on
//!   an arbiter (a thread) of its own: a stalled pipe or a slow disk stalls
//!   only that sink, while its queue (`queue_capacity`, 10 000 by default;
//!   `overflow` drop oldest by default, counted) keeps the upstreams and
//!   the other subscribers going, or, with `overflow = "block"`, holds the
//!   upstreams feeding it back (`fanout::Gate`) so nothing is lost. They share one actor,
//!   `LineSink`; `stdout.rs` and `file.rs` only say how a batch is written.
//!   A file sink never leaves a torn line and retries a failed batch after
//!   a backoff (`retry.rs`); only what is still unwritten at shutdown is
//!   counted as dropped.
//! - `webhook` is async HTTP (awc) on the current arbiter (`webhook.rs`).
//! - `nats` (JetStream) and `redis` (Streams) store each message in a
//!   broker (`nats.rs`, `redis.rs`), on the current arbiter, through one
//!   actor (`broker.rs`) that takes a drain of its queue only when the
//!   last one is stored: while the broker is down the queue fills and its
//!   `overflow` policy applies, counted (SPEC §15).
//!
//! Shutdown: [`Sinks::flush_and_stop`] sends each actor `Flush`, which
//! closes its queue (the hub has usually done so already) and resolves once
//! the actor has taken everything left, written it (files synced) or sent it
//! (the webhook's last batch), and stopped. A sink still busy at the
//! deadline is told to `Abandon`: it stops at once and counts what it held
//! (queued, or waiting for a retry) as dropped (`error`). The broker sinks
//! answer `Flush` and `Abandon` the same way.

mod broker;
mod file;
mod lines;
mod nats;
mod redis;
mod retry;
mod stdout;
mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::config::{SinkConfig, WebhookConfig};
use crate::fanout::{Closed, Filter, Hub, SubQueue};
use crate::model::RunId;
use crate::telemetry::{DropReason, Metrics};

use self::broker::BrokerSink;
use self::file::FileLines;
use self::lines::{discard, start_lines, BatchError, LineSink, Lines, OnError};
use self::nats::Nats;
use self::redis::Redis;
use self::stdout::StdoutLines;
use self::webhook::{Endpoint, Webhook};

/// Default queue bound of the `stdout` and `file` sinks (tests).
#[cfg(test)]
const LINE_QUEUE_CAPACITY: usize = 10_000;

/// Shortest interval between two warnings of the same sink about the same
/// kind of trouble; every failure is still counted in the metrics.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Shutdown callers waiting for a sink to finish. Dropping the senders
/// (when the sink stops) resolves every waiting `Flush`.
#[derive(Debug, Default)]
struct Waiters(Vec<oneshot::Sender<()>>);

impl Waiters {
    /// A future that resolves once the sink is done (at once if it already is).
    fn wait(&mut self, done: bool) -> ResponseFuture<()> {
        if done {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.0.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    /// Resolves every waiter.
    fn release(&mut self) {
        self.0.clear();
    }
}

/// Shutdown or reload: close the queue (as the value says), write or send
/// what is left, then stop. Resolves when the sink is done (or already was).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush(Closed);

/// After a missed flush deadline, or when [`Sinks`] is dropped unflushed:
/// stop now; what the sink still holds is counted as dropped, for the
/// reason given (`shutdown`, or `reload` when a reload replaced the sink).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Abandon(DropReason);

/// SIGHUP: a file sink reopens its path (logrotate moved the file away).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Reopen;

/// One started sink, as the owner of [`Sinks`] sees it.
struct Running {
    /// The metric `kind` label, for log lines.
    kind: &'static str,
    /// Shutdown entry point.
    flush: Recipient<Flush>,
    /// Last resort: stop now, count the rest as dropped.
    abandon: Recipient<Abandon>,
}

/// The running sinks.
pub struct Sinks {
    /// Every sink, in config order.
    running: Vec<Running>,
    /// The file sinks, told to reopen their path on SIGHUP.
    reopen: Vec<Recipient<Reopen>>,
    /// How messages still held when the sinks are dropped are counted.
    ending: DropReason,
}

/// Sinks whose fallible parts are done (files opened, webhook endpoints
/// built) but which have not subscribed yet: a reload prepares the new
/// sinks first and changes nothing when that fails (SPEC §11).
pub struct PreparedSinks {
    /// In config order, with what each one opened.
    sinks: Vec<(SinkConfig, Opened)>,
}

/// What preparing a sink produced.
enum Opened {
    /// Nothing to open.
    Stdout,
    /// The file, open for appending.
    File(FileLines),
    /// The webhook's config, and its parsed URL, headers and TLS.
    Webhook(Box<(WebhookConfig, Endpoint)>),
    /// The NATS sink: template parsed, credentials read; not connected.
    Nats(Box<Nats>),
    /// The Redis sink: URL parsed, password read; not connected.
    Redis(Box<Redis>),
}

impl Sinks {
    /// No sinks (between a reload's old and new ones).
    pub fn none() -> Sinks {
        Sinks { running: Vec::new(), reopen: Vec::new(), ending: DropReason::Shutdown }
    }

    /// Prepares and starts every configured sink; see [`Sinks::prepare`].
    pub fn start(cfgs: &[SinkConfig], hub: &Hub, metrics: &Arc<Metrics>, run: &RunId) -> anyhow::Result<Sinks> {
        Ok(Self::prepare(cfgs, run)?.start(hub, metrics))
    }

    /// Opens every file, builds every webhook endpoint and reads every
    /// broker credential, without subscribing or connecting anything.
    /// Fails when a file cannot be opened or a webhook URL or header, or a
    /// broker URL or credential, cannot be used, naming the sink. `run` is
    /// this process's run id (`Nats-Msg-Id`).
    pub fn prepare(cfgs: &[SinkConfig], run: &RunId) -> anyhow::Result<PreparedSinks> {
        let mut sinks = Vec::with_capacity(cfgs.len());
        for (i, cfg) in cfgs.iter().enumerate() {
            let context = || format!("sinks[{i}] ({})", cfg.kind());
            let opened = match cfg {
                SinkConfig::Stdout { .. } => Opened::Stdout,
                SinkConfig::File { path, .. } => Opened::File(FileLines::open(path).map_err(|e| {
                    anyhow::anyhow!("{}: cannot open {} for appending: {e}", context(), path.display())
                })?),
                SinkConfig::Webhook(w) => {
                    let endpoint = Endpoint::new(w).map_err(|e| anyhow::anyhow!("{}: {e}", context()))?;
                    Opened::Webhook(Box::new((w.clone(), endpoint)))
                }
                SinkConfig::Nats(n) => Opened::Nats(Box::new(
                    Nats::prepare(n, run.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", context()))?,
                )),
                SinkConfig::Redis(r) => {
                    Opened::Redis(Box::new(Redis::prepare(r).map_err(|e| anyhow::anyhow!("{}: {e}", context()))?))
                }
            };
            sinks.push((cfg.clone(), opened));
        }
        Ok(PreparedSinks { sinks })
    }
}

impl PreparedSinks {
    /// Subscribes and starts one actor per sink: line sinks each on an
    /// arbiter of its own (stopped with the sink), webhooks on the current
    /// one. A sink the hub refuses (its upstream is gone, or shutdown has
    /// begun) is logged and left out.
    pub fn start(self, hub: &Hub, metrics: &Arc<Metrics>) -> Sinks {
        let mut sinks = Sinks::none();
        for (cfg, opened) in self.sinks {
            let kind = cfg.kind();
            let (upstreams, topics) = cfg.filters();
            let (capacity, overflow, conflate_key) = cfg.queue_policy();
            let bytes = cfg.queue_bytes().bytes();
            let queue = SubQueue::keyed(capacity, bytes, overflow, conflate_key, false, metrics.subscriber(kind));
            // Sink filters come from the config, which the operator controls: no pair limit.
            // Broker sinks store what this replica's own links bring; in
            // cluster mode the others' messages are the owners' to store.
            let local = matches!(cfg, SinkConfig::Nats(_) | SinkConfig::Redis(_));
            let filter = match Filter::from_lists(upstreams, topics, usize::MAX) {
                Ok(f) if local => f.local_only(),
                Ok(f) => f,
                Err(e) => {
                    warn!(sink = kind, error = %e, "Sink not started.");
                    continue;
                }
            };
            let sub = match hub.subscribe(Arc::clone(&queue), filter) {
                Ok(sub) => sub,
                Err(e) => {
                    warn!(sink = kind, error = %e, "Sink not started.");
                    continue;
                }
            };
            let running = match opened {
                Opened::Stdout => Running::new(kind, start_lines(LineSink::new(StdoutLines::new(), queue, sub))),
                Opened::File(out) => {
                    let addr = start_lines(LineSink::new(out, queue, sub));
                    sinks.reopen.push(addr.clone().recipient());
                    Running::new(kind, addr)
                }
                Opened::Webhook(webhook) => {
                    let (w, endpoint) = *webhook;
                    Running::new(kind, Webhook::new(w, endpoint, queue, sub).start())
                }
                Opened::Nats(nats) => Running::new(kind, BrokerSink::new(*nats, queue, sub).start()),
                Opened::Redis(redis) => Running::new(kind, BrokerSink::new(*redis, queue, sub).start()),
            };
            sinks.running.push(running);
            info!(sink = kind, "Sink started.");
        }
        sinks
    }
}

impl Sinks {
    /// Flushes what is queued (files synced, the webhook's last batch sent)
    /// and stops, within `deadline`. Each sink closes its own queue first,
    /// so nothing new is taken even if the hub did not close it. A sink
    /// still busy at the deadline is stopped, its messages counted as dropped.
    /// `why` is `Shutdown`, or `Reload` when a reload replaces the sinks
    /// (messages they cannot write are then counted with reason `reload`).
    pub async fn flush_and_stop(mut self, deadline: Duration, why: Closed) {
        self.ending = if why == Closed::Reload { DropReason::Reload } else { DropReason::Shutdown };
        let started = Instant::now();
        let flushes = self.running.iter().map(|r| {
            let flush = r.flush.send(Flush(why));
            async move {
                // An error means the actor has already stopped: nothing left to do.
                actix_rt::time::timeout(deadline, flush).await.is_ok()
            }
        });
        let done = join_all(flushes).await;
        let late: Vec<&str> = self.running.iter().zip(&done).filter(|(_, ok)| !**ok).map(|(r, _)| r.kind).collect();
        if late.is_empty() {
            if !done.is_empty() {
                info!(sinks = done.len(), took = ?started.elapsed(), "Sinks flushed.");
            }
        } else {
            warn!(deadline = ?deadline, sinks = ?late, "Sinks did not finish flushing in time; they stop now.");
        }
        // Dropping `self` abandons whatever did not finish.
    }

    /// Reopens file sinks (SIGHUP, for logrotate).
    pub fn reopen_files(&self) {
        for r in &self.reopen {
            r.do_send(Reopen);
        }
    }
}

impl Drop for Sinks {
    /// No sink outlives its owner: one that has not finished stops now.
    fn drop(&mut self) {
        for r in &self.running {
            r.abandon.do_send(Abandon(self.ending));
        }
    }
}

impl Running {
    fn new<A>(kind: &'static str, addr: Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Flush> + Handler<Abandon>,
    {
        Running { kind, flush: addr.clone().recipient(), abandon: addr.recipient() }
    }
}

// === impl Throttle ===

/// Bounds the warnings one sink logs about one kind of trouble: at most one
/// per [`WARN_EVERY`], saying how many were left out in between.
#[derive(Debug, Default)]
struct Throttle {
    /// When the last warning went out.
    last: Option<Instant>,
    /// Occurrences since then that were not logged.
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed)` when a warning may go out now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The throttle lets the first warning through and counts the rest.
    #[test]
    fn throttle_bounds_warnings() {
        let mut t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.last = Instant::now().checked_sub(WARN_EVERY);
        assert_eq!(t.allow(), Some(2));
    }
}
