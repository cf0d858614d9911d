//! The actor shared by the broker sinks (`nats.rs`, `redis.rs`; SPEC §15).
//!
//! One worker future, run in the actor's context, drains the sink's queue:
//! it takes what is queued (at most one drain, so at most `queue_capacity`
//! messages), hands it to the [`Broker`], which stores it (retrying what
//! fails, after a backoff) and only then takes the next drain. While the
//! broker is unreachable the worker waits, so the hub queue fills and its
//! `overflow` policy applies, counted; `/ws` is not affected (the hub never
//! waits for a subscriber). When the broker comes back, the held batch and
//! then the queue go out.
//!
//! Shutdown: `Flush` closes the queue and cuts the current backoff short;
//! the worker stores what is left, then stops the actor. `Abandon` drops the
//! worker at once and counts what it held and what was queued as dropped.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::retry::Backoff;
use super::{Abandon, Flush, Throttle, Waiters};
use crate::fanout::{Closed, Delivery, Item, Next, QueueStream, SubQueue, Subscription};
use crate::telemetry::Left;

/// A broker a sink stores messages in.
pub(super) trait Broker: Sized + Unpin + 'static {
    /// The metric `kind` label and the `sink` log field.
    const KIND: &'static str;

    /// Stores `batch` (oldest first). Calls [`Control::delivered`] for what
    /// is stored and [`Control::rejected`] for what the broker refuses for
    /// good; retries everything else after [`Control::pause`] until it is
    /// stored. Returns when nothing of `batch` is left.
    async fn deliver(&mut self, batch: Vec<Arc<Delivery>>, ctl: &Control);

    /// The queue is closed and drained: let go of connections.
    async fn close(&mut self) {}
}

// === impl Control ===

/// What the worker and the actor share (same thread: the worker runs in
/// the actor's context).
pub(super) struct Control {
    /// The sink's queue, for its counters.
    queue: Arc<SubQueue>,
    /// Messages taken from the queue and not yet stored or dropped; what
    /// `Abandon` counts as lost.
    held: Cell<u64>,
    /// Wakes a backoff pause at shutdown, for one more attempt now.
    hurry: Notify,
    /// Delays between failed attempts; reset by a success.
    backoff: RefCell<Backoff>,
    /// Bounds the warnings about failed attempts.
    warnings: RefCell<Throttle>,
    /// True while attempts fail, to log once when they work again.
    failing: Cell<bool>,
}

impl Control {
    fn new(queue: Arc<SubQueue>) -> Self {
        Control {
            queue,
            held: Cell::new(0),
            hurry: Notify::new(),
            backoff: RefCell::new(Backoff::default()),
            warnings: RefCell::new(Throttle::default()),
            failing: Cell::new(false),
        }
    }

    /// These messages (their receive instants) are stored.
    pub(super) fn delivered(&self, received: Vec<Instant>) {
        if received.is_empty() {
            return;
        }
        self.held.set(self.held.get().saturating_sub(received.len() as u64));
        self.queue.metrics().delivered(received);
    }

    /// `n` messages were refused for good: dropped, counted as `error`.
    pub(super) fn rejected(&self, n: u64) {
        self.held.set(self.held.get().saturating_sub(n));
        self.queue.metrics().dropped_error(n);
    }

    /// An attempt worked: the backoff starts over, and a failure streak is
    /// logged as over.
    pub(super) fn succeeded<B: Broker>(&self, shown: &str) {
        self.backoff.borrow_mut().reset();
        if self.failing.replace(false) {
            info!(sink = B::KIND, url = %shown, "Sink stores messages again.");
        }
    }

    /// An attempt failed with `error` (already scrubbed of secrets): warns
    /// (rate-limited) and waits out the next backoff delay, or less when
    /// shutdown begins.
    pub(super) async fn pause<B: Broker>(&self, shown: &str, error: &str) {
        self.failing.set(true);
        let delay = self.backoff.borrow_mut().next_delay();
        if let Some(suppressed) = self.warnings.borrow_mut().allow() {
            warn!(
                sink = B::KIND,
                url = %shown,
                error = %error,
                held = self.held.get(),
                retry_in = ?delay,
                suppressed,
                "Sink cannot store messages; they are kept and sent again."
            );
        }
        self.sleep(delay).await;
    }

    /// Sleeps `delay`, or until shutdown begins.
    async fn sleep(&self, delay: Duration) {
        tokio::select! {
            _ = actix_rt::time::sleep(delay) => {}
            _ = self.hurry.notified() => {}
        }
    }
}

/// Drains the queue into the broker until the queue is closed.
async fn run<B: Broker>(mut broker: B, mut stream: QueueStream, ctl: Rc<Control>) -> Left {
    while let Some(next) = stream.next().await {
        match next {
            Next::Items(items) => {
                let batch: Vec<Arc<Delivery>> = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Item::Message(d) => Some(d),
                        Item::Event(_) => None,
                    })
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                ctl.held.set(batch.len() as u64);
                broker.deliver(batch, &ctl).await;
                ctl.held.set(0);
            }
            Next::Closed(why) => {
                broker.close().await;
                return match why {
                    Closed::Shutdown | Closed::Reload => Left::Shutdown,
                    Closed::Slow => Left::Slow,
                };
            }
        }
    }
    Left::Shutdown
}

// === impl BrokerSink ===

/// The actor of one `nats` or `redis` sink, on the current arbiter.
pub(super) struct BrokerSink<B: Broker> {
    /// The broker, until `started` moves it into the worker.
    broker: Option<B>,
    /// Shared with the worker.
    ctl: Rc<Control>,
    /// What the hub queued for us; closed by `Flush` so the worker ends.
    queue: Arc<SubQueue>,
    /// The hub registration; dropped (unsubscribed) when the sink stops.
    sub: Option<Subscription>,
    /// The worker, cancelled by `Abandon`.
    worker: Option<SpawnHandle>,
    /// Shutdown callers waiting for the last messages to be stored.
    waiters: Waiters,
    /// Why the sink stopped, for `wsgate_subscriber_disconnects_total`.
    left: Option<Left>,
}

impl<B: Broker> BrokerSink<B> {
    /// A sink storing in `broker` what `queue` receives through `sub`.
    pub(super) fn new(broker: B, queue: Arc<SubQueue>, sub: Subscription) -> Self {
        BrokerSink {
            broker: Some(broker),
            ctl: Rc::new(Control::new(Arc::clone(&queue))),
            queue,
            sub: Some(sub),
            worker: None,
            waiters: Waiters::default(),
            left: None,
        }
    }

    fn finish(&mut self, left: Left, ctx: &mut Context<Self>) {
        if self.left.is_none() {
            self.left = Some(left);
        }
        self.worker = None;
        self.sub = None;
        self.waiters.release();
        ctx.stop();
    }
}

impl<B: Broker> Actor for BrokerSink<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(broker) = self.broker.take() else { return };
        let work = run(broker, self.queue.stream(), Rc::clone(&self.ctl));
        self.worker = Some(ctx.spawn(work.into_actor(self).map(|left, act, ctx| act.finish(left, ctx))));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sub = None;
        self.queue.metrics().left(self.left.unwrap_or(Left::Error));
    }
}

impl<B: Broker> Handler<Flush> for BrokerSink<B> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Flush(why): Flush, _ctx: &mut Self::Context) -> Self::Result {
        // What is queued is still stored, then `Closed` ends the worker.
        self.queue.close(why);
        self.ctl.hurry.notify_waiters();
        self.waiters.wait(self.left.is_some())
    }
}

impl<B: Broker> Handler<Abandon> for BrokerSink<B> {
    type Result = ();

    fn handle(&mut self, Abandon(reason): Abandon, ctx: &mut Self::Context) {
        if self.left.is_some() {
            return;
        }
        if let Some(worker) = self.worker.take() {
            ctx.cancel_future(worker);
        }
        let held = self.ctl.held.replace(0);
        self.queue.metrics().dropped(reason, held);
        let lost = held + self.queue.abandon(reason);
        if lost > 0 {
            warn!(sink = B::KIND, dropped = lost, "Sink stopped before storing everything; messages dropped.");
        }
        self.finish(Left::Shutdown, ctx);
    }
}

/// A header value as NATS can carry it: control characters (CR and LF
/// would end the header) become U+FFFD.
pub(super) fn header_text(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header values never carry a line break.
    #[test]
    fn header_text_has_no_control_characters() {
        assert_eq!(header_text("trade"), "trade");
        assert_eq!(header_text("a\r\nb\tc"), "a\u{FFFD}\u{FFFD}b\u{FFFD}c");
        assert_eq!(header_text("ünï"), "ünï");
    }
}
