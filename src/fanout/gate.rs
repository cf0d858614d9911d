//! `overflow = "block"` (SPEC §14): the back-pressure path from a full
//! blocking sink queue to the upstreams that feed it.
//!
//! Each upstream has one [`Gate`] (in its hub slot). A blocking queue that a
//! push filled *holds* the gate of the upstream that pushed; when its
//! consumer drains it below its bounds it releases every gate it holds. An
//! upstream's link reads its socket through a [`Pausable`] stream, which
//! yields `Pending` while the gate is held by any queue and is woken when
//! the last hold is released. So a full blocking sink stops the reading of
//! exactly the upstreams that feed it, and the kernel's socket buffers (then
//! TCP flow control) hold the feed back: nothing is dropped.
//!
//! No actix here: the stream wrapper is a plain `Stream`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tracing::warn;

use crate::telemetry::PauseMeter;

/// A link whose stream ends within this long after a pause counts as lost
/// while paused: the feed dropped a reader that stopped reading, and the
/// end is only seen once the data buffered before it has been read.
const LOST_AFTER_PAUSE: Duration = Duration::from_secs(10);

/// One upstream's gate; cheap to clone (all clones are the same gate).
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<GateInner>);

#[derive(Default)]
struct GateInner {
    /// Blocking queues that hold the gate shut; open at 0.
    holds: AtomicUsize,
    /// Streams waiting for the gate to open, and when it closed.
    state: Mutex<GateState>,
    /// Counts the paused time (`wsgate_upstream_paused_seconds_total`).
    meter: OnceLock<PauseMeter>,
}

#[derive(Default)]
struct GateState {
    wakers: Vec<Waker>,
    closed_at: Option<Instant>,
}

impl std::fmt::Debug for GateInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("holds", &self.holds.load(Ordering::Relaxed)).finish()
    }
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Plain data; a panic elsewhere cannot leave it inconsistent.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while some blocking queue holds the gate: the upstream must not read.
    pub fn is_closed(&self) -> bool {
        self.0.holds.load(Ordering::Acquire) > 0
    }

    /// True when both are the same gate.
    pub(crate) fn same(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Where paused time is counted; the first meter set stays.
    pub fn meter(&self, meter: PauseMeter) {
        let _ = self.0.meter.set(meter);
    }

    /// A full blocking queue holds the gate shut (once per queue).
    pub(crate) fn hold(&self) {
        let mut st = self.state();
        if self.0.holds.fetch_add(1, Ordering::AcqRel) == 0 {
            st.closed_at = Some(Instant::now());
        }
    }

    /// A blocking queue drained (or closed): its hold goes; the gate opens
    /// when no hold is left, and the waiting streams are woken.
    pub(crate) fn release(&self) {
        let wakers = {
            let mut st = self.state();
            // Under the lock, so the check and the decrement are one step;
            // a release without a hold (never expected) changes nothing.
            let holds = self.0.holds.load(Ordering::Acquire);
            if holds == 0 {
                return;
            }
            self.0.holds.store(holds - 1, Ordering::Release);
            if holds != 1 {
                return;
            }
            if let (Some(at), Some(meter)) = (st.closed_at.take(), self.0.meter.get()) {
                meter.add(at.elapsed());
            }
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// While closed, counts the paused time so far (so the metric moves
    /// during a long pause, not only when it ends). Called by the
    /// upstream's tick.
    pub fn settle(&self) {
        let mut st = self.state();
        if let (Some(at), Some(meter)) = (st.closed_at.as_mut(), self.0.meter.get()) {
            let now = Instant::now();
            meter.add(now.saturating_duration_since(*at));
            *at = now;
        }
    }

    /// Registers `waker` to be woken when the gate opens; returns false
    /// (nothing registered) when it is open already.
    fn wait(&self, waker: &Waker) -> bool {
        let mut st = self.state();
        if !self.is_closed() {
            return false;
        }
        if !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
        true
    }
}

/// A link's frame stream that yields nothing while its upstream's gate is
/// shut (see the module docs). `is_end` tells the items that end a link
/// (errors, a close frame), for the log line when a feed dropped a link
/// that was paused.
pub struct Pausable<S, F> {
    inner: S,
    gate: Gate,
    is_end: F,
    upstream: Arc<str>,
    /// When the current pause began.
    paused_at: Option<Instant>,
    /// When the last pause ended, and how long it was.
    last_pause: Option<(Instant, Duration)>,
    /// The end was seen (and logged if it came after a pause).
    ended: bool,
}

impl<S, F> Pausable<S, F> {
    /// `inner`, read only while `gate` is open.
    pub fn new(inner: S, gate: Gate, upstream: &str, is_end: F) -> Self {
        Pausable { inner, gate, is_end, upstream: Arc::from(upstream), paused_at: None, last_pause: None, ended: false }
    }

    fn lost_after_pause(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        if let Some((at, paused)) = self.last_pause {
            if at.elapsed() <= LOST_AFTER_PAUSE {
                warn!(
                    upstream = %self.upstream,
                    paused = ?paused,
                    "Upstream link was lost while paused by a blocking sink (the feed dropped a reader that stopped reading)."
                );
            }
        }
    }
}

impl<S, F> Stream for Pausable<S, F>
where
    S: Stream + Unpin,
    F: Fn(&S::Item) -> bool + Unpin,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if this.gate.is_closed() && this.gate.wait(cx.waker()) {
            this.paused_at.get_or_insert_with(Instant::now);
            return Poll::Pending;
        }
        if let Some(at) = this.paused_at.take() {
            this.last_pause = Some((Instant::now(), at.elapsed()));
        }
        let item = Pin::new(&mut this.inner).poll_next(cx);
        match &item {
            Poll::Ready(None) => this.lost_after_pause(),
            Poll::Ready(Some(i)) if (this.is_end)(i) => this.lost_after_pause(),
            _ => {}
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;

    /// The stream yields while the gate is open, waits while any hold is
    /// left, and yields again once the last hold is released.
    #[test]
    fn pauses_while_held() {
        let gate = Gate::default();
        let mut s = Pausable::new(futures_util::stream::iter(1..=3), gate.clone(), "a", |_: &i32| false);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut poll = |s: &mut Pausable<_, _>| Pin::new(s).poll_next(&mut cx);
        assert_eq!(poll(&mut s), Poll::Ready(Some(1)));
        gate.hold();
        gate.hold();
        assert!(poll(&mut s).is_pending());
        gate.release();
        assert!(poll(&mut s).is_pending(), "one hold is left");
        gate.release();
        assert!(!gate.is_closed());
        assert_eq!(poll(&mut s), Poll::Ready(Some(2)));
        assert!(s.last_pause.is_some());
    }
}
