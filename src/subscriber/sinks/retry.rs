//! Retrying a line batch that did not reach the output (SPEC §11: a file
//! sink retries after a backoff instead of dropping): the backoff, and the
//! gate that stops the sink taking more from its queue meanwhile, so the
//! queue's own bound and overflow policy keep applying.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::task::AtomicWaker;

/// Delay before the first retry of a failed batch.
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest delay between two retries: a disk that has room again is used
/// within this long.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(5);

/// Retry delays: [`RETRY_FIRST`], doubling up to [`RETRY_MAX`].
#[derive(Debug)]
pub(super) struct Backoff {
    /// The delay the next failure waits.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: RETRY_FIRST }
    }
}

impl Backoff {
    /// The delay before the next retry; the one after is twice as long.
    pub(super) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(RETRY_MAX);
        d
    }

    /// A write worked: the next failure starts again from [`RETRY_FIRST`].
    pub(super) fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Pauses a stream from the outside: the sink actor pauses its queue stream
/// while it holds a batch to retry.
#[derive(Debug, Default)]
pub(super) struct Gate {
    /// True while the stream must not yield.
    paused: AtomicBool,
    /// The task polling the paused stream, woken by [`Gate::resume`].
    waker: AtomicWaker,
}

impl Gate {
    /// The stream yields nothing until [`Gate::resume`].
    pub(super) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// The stream yields again (and its task is woken to poll it).
    pub(super) fn resume(&self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// `inner`, paused whenever this gate is.
    pub(super) fn wrap<S>(self: &Arc<Self>, inner: S) -> Gated<S> {
        Gated { inner, gate: Arc::clone(self) }
    }
}

/// A stream behind a [`Gate`].
#[derive(Debug)]
pub(super) struct Gated<S> {
    /// The stream itself; not polled while the gate is paused.
    inner: S,
    /// The gate, shared with whoever pauses it.
    gate: Arc<Gate>,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.gate.paused.load(Ordering::SeqCst) {
            self.gate.waker.register(cx.waker());
            // Checked again after registering: a resume in between would
            // otherwise wake nobody.
            if self.gate.paused.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{stream, FutureExt, StreamExt};

    use super::*;

    /// Delays double from 100 ms to the 5 s cap and start over after a reset.
    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), RETRY_FIRST);
    }

    /// A paused stream yields nothing; resuming yields what it held, in order.
    #[test]
    fn gate_pauses_and_resumes() {
        let gate = Arc::new(Gate::default());
        let mut s = gate.wrap(stream::iter([1, 2]));
        assert_eq!(s.next().now_or_never(), Some(Some(1)));
        gate.pause();
        assert_eq!(s.next().now_or_never(), None);
        gate.resume();
        assert_eq!(s.next().now_or_never(), Some(Some(2)));
        assert_eq!(s.next().now_or_never(), Some(None));
    }
}
