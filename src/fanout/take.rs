//! The consumer side of a [`SubQueue`]: `poll_take` for a writer that pulls
//! when its socket can take more (`/ws` sessions), `stream` for the sinks.
//!
//! Gap events go before the first message taken after drops. A replay
//! marker (SPEC §14) makes the consumer take the cursor's messages from the
//! upstream's history, one bounded batch at a time, before the entries
//! behind it; live messages at or below the last seq a replay sent are
//! skipped. Taking from a blocking queue releases the upstream gates it
//! holds once it is below its bounds again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::message::gap_event;
use super::queue::{Closed, Entry, Inner, Item, SubQueue};

/// An emptied queue keeps at most this many slots allocated.
const SHRINK_ABOVE: usize = 1024;

impl SubQueue {
    /// The consumer side for a writer that pulls only when its socket can
    /// take more: moves at most `max_items` items and about `max_bytes` of
    /// message bytes (always at least one item) onto `out`, gap events placed
    /// before the first message after drops; one lock per batch. `Closed`
    /// comes once everything queued was taken; after it, nothing more.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        max_items: usize,
        max_bytes: usize,
        out: &mut Vec<Item>,
    ) -> Poll<Taken> {
        let mut g = self.lock();
        let (taken, _, more) = self.take(&mut g, max_items.max(1), max_bytes, out);
        if taken > 0 {
            return Poll::Ready(Taken::Items);
        }
        if more {
            // A replay examined its share of the history and found nothing
            // to send yet: the locks go, and the task comes back.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(why) = g.closed {
            if g.finished {
                return Poll::Ready(Taken::Finished);
            }
            g.finished = true;
            return Poll::Ready(Taken::Closed(why));
        }
        // Registered under the lock: a push after this sees an empty queue and wakes us.
        self.waker.register(cx.waker());
        Poll::Pending
    }

    /// Moves items onto `out` within the bounds; returns (items, bytes,
    /// more): `more` when a replay stopped at its examination cap (take again).
    fn take(&self, g: &mut Inner, max_items: usize, max_bytes: usize, out: &mut Vec<Item>) -> (usize, usize, bool) {
        let (mut items, mut bytes, mut more) = (0, 0, false);
        while items < max_items && (items == 0 || bytes < max_bytes) {
            if let Some(cursor) = g.replay.as_mut() {
                let b = cursor.take(max_items - items, max_bytes.saturating_sub(bytes), out);
                items += b.items;
                bytes += b.bytes;
                if b.dropped > 0 {
                    self.metrics().dropped_overflow(b.dropped);
                }
                if cursor.done() {
                    let (upstream, end) = (Arc::clone(&cursor.upstream), cursor.end);
                    g.replay = None;
                    g.replayed.retain(|(u, _)| *u != upstream);
                    g.replayed.push((upstream, end));
                } else if b.capped {
                    more = true;
                    break;
                }
                continue;
            }
            let Some(entry) = g.pop_front() else { break };
            match entry {
                Entry::Message(d) => {
                    if g.replayed.iter().any(|(u, end)| *u == d.msg.upstream && d.seq <= *end) {
                        // Already sent by the replay.
                        continue;
                    }
                    bytes += d.size();
                    if !g.missed.is_empty() {
                        for (upstream, missed) in std::mem::take(&mut g.missed) {
                            if self.events {
                                out.push(Item::Event(Box::new(gap_event(&upstream, missed))));
                            }
                        }
                    }
                    out.push(Item::Message(d));
                    items += 1;
                }
                Entry::Event(e) => {
                    out.push(Item::Event(e));
                    items += 1;
                }
                Entry::Gone => {}
                Entry::Replay(cursor) => g.replay = Some(cursor),
            }
        }
        if g.items.is_empty() && g.items.capacity() > SHRINK_ABOVE {
            // A burst is over: give its room back.
            g.items = VecDeque::new();
        }
        if !g.holding.is_empty() && self.below_bounds(g) {
            self.release_gates(g);
        }
        (items, bytes, more)
    }

    /// The consumer side as a stream of batches.
    pub fn stream(self: &Arc<Self>) -> QueueStream {
        QueueStream { queue: Arc::clone(self) }
    }
}

/// What the consumer gets next.
#[derive(Debug)]
pub enum Next {
    /// Everything queued since the last poll, in order.
    Items(Vec<Item>),
    /// The producer closed the queue; the stream ends after this.
    Closed(Closed),
}

/// What [`SubQueue::poll_take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Items were moved out.
    Items,
    /// The producer closed the queue and everything queued was taken.
    Closed(Closed),
    /// `Closed` was already handed out.
    Finished,
}

/// The consumer end of a [`SubQueue`].
#[derive(Debug)]
pub struct QueueStream {
    queue: Arc<SubQueue>,
}

impl Stream for QueueStream {
    type Item = Next;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        let q = &self.queue;
        let mut g = q.lock();
        let mut out = Vec::with_capacity(g.items.len());
        let (_, _, more) = q.take(&mut g, usize::MAX, usize::MAX, &mut out);
        if !out.is_empty() {
            return Poll::Ready(Some(Next::Items(out)));
        }
        if more {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(why) = g.closed {
            if g.finished {
                return Poll::Ready(None);
            }
            g.finished = true;
            return Poll::Ready(Some(Next::Closed(why)));
        }
        // Registered under the lock: a push after this sees an empty queue and wakes us.
        q.waker.register(cx.waker());
        Poll::Pending
    }
}
