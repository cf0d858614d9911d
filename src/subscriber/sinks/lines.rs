//! The `stdout` and `file` sinks' actor, `LineSink`: one envelope per line,
//! written by a [`Lines`] target on an arbiter of its own; a failed write is
//! retried with backoff (files) or dropped and counted.

use std::io;
use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};

use super::retry::{Backoff, Gate};
use super::{Abandon, Flush, Reopen, Throttle, Waiters};
use crate::fanout::{Closed, Delivery, Item, Next, SubQueue, Subscription};
use crate::telemetry::{DropReason, Left};

/// Starts a line sink on an arbiter of its own; the sink stops the arbiter
/// when it stops.
pub(super) fn start_lines<O: Lines>(sink: LineSink<O>) -> Addr<LineSink<O>> {
    LineSink::start_in_arbiter(&Arbiter::new().handle(), move |_| sink)
}

/// A batch that did not fully reach the output.
#[derive(Debug)]
pub(super) struct BatchError {
    /// How many messages, from the start of the batch, are whole lines in
    /// the output (the rest are not there at all).
    pub(super) written: usize,
    /// Why the write stopped.
    pub(super) error: io::Error,
}

/// What a line sink does with the unwritten rest of a failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnError {
    /// Keep it and write it again after a backoff (a full disk).
    Retry,
    /// Count it as dropped (`error`) and go on with the next batch.
    Drop,
    /// The output is gone for good: count it and stop the sink (`error`).
    Stop,
}

/// Where a line sink writes: one envelope and `\n` per message.
pub(super) trait Lines: Send + Unpin + 'static {
    /// The metric `kind` label and the `sink` log field.
    const KIND: &'static str;

    /// Appends one batch of lines and pushes it out of user-space buffers.
    fn write_batch(&mut self, batch: &[Arc<Delivery>]) -> Result<(), BatchError>;

    /// Last call at shutdown: flush, and fsync where that means something.
    fn finish(&mut self) -> io::Result<()>;

    /// SIGHUP: files reopen their path; stdout has nothing to do.
    fn reopen(&mut self) {}

    /// Decides, in this one place, what a write error means for the rest
    /// of the batch.
    fn on_error(&self, e: &io::Error) -> OnError;
}

/// The actor of a `stdout` or `file` sink, on an arbiter of its own.
pub(super) struct LineSink<O: Lines> {
    /// Where the lines go.
    out: O,
    /// What the hub queued for us; closed by `Flush` so the stream ends.
    queue: Arc<SubQueue>,
    /// The hub registration; dropped (unsubscribed) when the sink stops.
    sub: Option<Subscription>,
    /// Shutdown callers waiting for the final write.
    waiters: Waiters,
    /// Why the sink stopped, for `wsgate_subscriber_disconnects_total`.
    left: Option<Left>,
    /// Bounds the write-error warnings.
    errors: Throttle,
    /// True while writes fail, to log once when they work again.
    failing: bool,
    /// The unwritten rest of a failed batch, oldest first, written again
    /// when `retry` fires. While it is held, `gate` pauses the queue
    /// stream: the sink holds at most one drain of its queue (at most the
    /// queue's capacity) and the queue keeps its own bound and overflow
    /// policy (drop oldest, counted) for what arrives meanwhile.
    held: Vec<Arc<Delivery>>,
    /// The scheduled retry of `held`.
    retry: Option<SpawnHandle>,
    /// Delays between retries; reset by a write that works.
    backoff: Backoff,
    /// Pauses the queue stream while `held` is not empty.
    gate: Arc<Gate>,
    /// How a batch still held when the sink stops is counted (shutdown,
    /// or reload when a reload replaced the sink).
    ending: DropReason,
}

impl<O: Lines> LineSink<O> {
    /// A sink writing to `out` what `queue` receives through `sub`.
    pub(super) fn new(out: O, queue: Arc<SubQueue>, sub: Subscription) -> Self {
        LineSink {
            out,
            queue,
            sub: Some(sub),
            waiters: Waiters::default(),
            left: None,
            errors: Throttle::default(),
            failing: false,
            held: Vec::new(),
            retry: None,
            backoff: Backoff::default(),
            gate: Arc::default(),
            ending: DropReason::Shutdown,
        }
    }

    /// Writes `batch`; on failure counts, keeps or drops the unwritten
    /// rest as [`Lines::on_error`] decides.
    fn write(&mut self, mut batch: Vec<Arc<Delivery>>, ctx: &mut Context<Self>) {
        let (written, error) = match self.out.write_batch(&batch) {
            Ok(()) => (batch.len(), None),
            Err(BatchError { written, error }) => (written.min(batch.len()), Some(error)),
        };
        self.queue.metrics().delivered(batch[..written].iter().map(|d| d.msg.received));
        let Some(e) = error else {
            self.backoff.reset();
            self.gate.resume();
            if std::mem::take(&mut self.failing) {
                info!(sink = O::KIND, "Sink writes again.");
            }
            return;
        };
        self.failing = true;
        let rest = (batch.len() - written) as u64;
        match self.out.on_error(&e) {
            OnError::Retry => {
                batch.drain(..written);
                self.held = batch;
                self.gate.pause();
                let delay = self.backoff.next_delay();
                self.retry = Some(ctx.run_later(delay, |this, ctx| {
                    this.retry = None;
                    let held = std::mem::take(&mut this.held);
                    this.write(held, ctx);
                }));
                if let Some(suppressed) = self.errors.allow() {
                    warn!(sink = O::KIND, error = %e, held = rest, retry_in = ?delay, suppressed, "Sink cannot write; will retry.");
                }
            }
            OnError::Drop => {
                self.queue.metrics().dropped_error(rest);
                if let Some(suppressed) = self.errors.allow() {
                    warn!(sink = O::KIND, error = %e, dropped = rest, suppressed, "Sink cannot write; messages dropped.");
                }
            }
            OnError::Stop => {
                self.queue.metrics().dropped_error(rest);
                warn!(sink = O::KIND, error = %e, dropped = rest, "Sink output is gone; the sink stops.");
                self.stop(ctx, Left::Error);
            }
        }
    }

    /// Shutdown: a batch waiting for its retry is tried now (the disk may
    /// have room again) rather than after the rest of its backoff.
    fn retry_now(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.retry.take() {
            ctx.cancel_future(handle);
            let held = std::mem::take(&mut self.held);
            self.write(held, ctx);
        }
    }

    fn stop(&mut self, ctx: &mut Context<Self>, reason: Left) {
        if self.left.is_none() {
            self.left = Some(reason);
        }
        let lost = std::mem::take(&mut self.held).len();
        if lost > 0 {
            let why = if reason == Left::Error { DropReason::Error } else { self.ending };
            self.queue.metrics().dropped(why, lost as u64);
            warn!(
                sink = O::KIND,
                dropped = lost,
                "Sink stopped before it could write a failed batch; messages dropped."
            );
        }
        self.sub = None;
        self.waiters.release();
        ctx.stop();
    }
}

impl<O: Lines> Actor for LineSink<O> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.gate.wrap(self.queue.stream()));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sub = None;
        self.queue.metrics().left(self.left.unwrap_or(Left::Error));
        // The arbiter was made for this sink alone.
        Arbiter::current().stop();
    }
}

impl<O: Lines> StreamHandler<Next> for LineSink<O> {
    fn handle(&mut self, next: Next, ctx: &mut Self::Context) {
        match next {
            Next::Items(items) => {
                let batch: Vec<Arc<Delivery>> = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Item::Message(d) => Some(d),
                        Item::Event(_) => None,
                    })
                    .collect();
                if batch.is_empty() || self.left.is_some() {
                    return;
                }
                if self.held.is_empty() {
                    self.write(batch, ctx);
                } else {
                    // Not expected (the gate pauses the stream while a batch
                    // is held); bounded by the queue all the same.
                    self.held.extend(batch);
                }
            }
            Next::Closed(why) => {
                if let Err(e) = self.out.finish() {
                    warn!(sink = O::KIND, error = %e, "Sink cannot flush its output at shutdown.");
                }
                self.stop(
                    ctx,
                    match why {
                        Closed::Shutdown | Closed::Reload => Left::Shutdown,
                        Closed::Slow => Left::Slow,
                    },
                );
            }
        }
    }

    /// The queue stream ends only after `Closed`, handled above.
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl<O: Lines> Handler<Flush> for LineSink<O> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Flush(why): Flush, ctx: &mut Self::Context) -> Self::Result {
        // What is queued is still delivered, then `Closed`, which finishes.
        if why == Closed::Reload {
            self.ending = DropReason::Reload;
        }
        self.queue.close(why);
        self.retry_now(ctx);
        self.waiters.wait(self.left.is_some())
    }
}

impl<O: Lines> Handler<Abandon> for LineSink<O> {
    type Result = ();

    fn handle(&mut self, Abandon(reason): Abandon, ctx: &mut Self::Context) {
        if self.left.is_some() {
            return;
        }
        // What waits for a retry is counted by `stop`.
        self.ending = reason;
        let lost = self.queue.abandon(reason) + self.held.len() as u64;
        if lost > 0 {
            warn!(sink = O::KIND, dropped = lost, "Sink stopped before writing everything; messages dropped.");
        }
        if let Err(e) = self.out.finish() {
            warn!(sink = O::KIND, error = %e, "Sink cannot flush its output.");
        }
        self.stop(ctx, Left::Shutdown);
    }
}

impl<O: Lines> Handler<Reopen> for LineSink<O> {
    type Result = ();

    fn handle(&mut self, _: Reopen, _ctx: &mut Self::Context) {
        self.out.reopen();
    }
}

/// Drops what a `BufWriter` holds without writing it (after a failed write,
/// so a retry does not repeat a half-written batch).
pub(super) fn discard<W: io::Write>(w: io::BufWriter<W>) -> W {
    w.into_parts().0
}
