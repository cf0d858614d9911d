//! The bounded queue between the hub and one subscriber.
//!
//! The overflow policy is applied here, on the producer side, because a
//! session whose client stopped reading is not polled at all (ACTIX-FACTS):
//! the hub can always act, the stalled consumer cannot. The consumer side is
//! a `Stream` that drains everything queued in one poll and inserts `gap`
//! events before the next message after drops.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytestring::ByteString;
use futures_core::Stream;
use futures_util::task::AtomicWaker;

use super::message::{gap_event, Delivery};
use crate::config::Overflow;
use crate::telemetry::{DropReason, SubscriberMetrics};

/// Unread events one subscriber may hold (state changes of the upstreams
/// it follows) before it counts as having stopped reading.
pub const MAX_EVENTS: usize = 1024;

/// An emptied queue keeps at most this many slots allocated.
const SHRINK_ABOVE: usize = 1024;

/// One queued item.
#[derive(Debug, Clone)]
pub enum Item {
    /// A data message.
    Message(Arc<Delivery>),
    /// A control event (state, gap), already encoded. Boxed: a queue holds
    /// one `Item` per message per subscriber, so the common case (a
    /// message) stays two words.
    Event(Box<ByteString>),
}

/// Why a queue was closed by the producer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Overflow under the `disconnect` policy (or a queue full of unread
    /// state events): close 1008 "slow consumer".
    Slow,
    /// The process is shutting down: close 1001.
    Shutdown,
    /// A reload replaced this subscriber (sinks): flush and stop.
    Reload,
}

impl Closed {
    /// How a message that can no longer be queued is counted.
    fn drop_reason(self) -> DropReason {
        match self {
            Closed::Slow => DropReason::Overflow,
            Closed::Shutdown => DropReason::Shutdown,
            Closed::Reload => DropReason::Reload,
        }
    }
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Item>,
    /// Data messages in `items` (events excluded).
    messages: usize,
    /// Bytes of the data messages in `items`, against `max_bytes`.
    bytes: usize,
    /// Messages dropped from the head (drop_oldest): older than everything
    /// queued, so their gap event goes before the first queued message.
    missed: Vec<(Arc<str>, u64)>,
    /// Messages dropped on arrival (drop_newest): newer than everything
    /// queued, so their gap event goes before the next message pushed.
    missed_tail: Vec<(Arc<str>, u64)>,
    closed: Option<Closed>,
    /// The consumer has seen `closed` and the stream ended.
    finished: bool,
}

impl Inner {
    /// Removes the oldest data message, leaving events where they are (a
    /// state event is never displaced). Returns it, or `None` when only
    /// events are queued.
    fn pop_oldest_message(&mut self) -> Option<Arc<Delivery>> {
        let at = self.items.iter().position(|i| matches!(i, Item::Message(_)))?;
        let Some(Item::Message(d)) = self.items.remove(at) else { return None };
        self.messages -= 1;
        self.bytes -= d.size();
        Some(d)
    }

    /// Empties the queue; returns how many data messages it held.
    fn clear(&mut self) -> u64 {
        let n = self.messages as u64;
        self.items.clear();
        self.messages = 0;
        self.bytes = 0;
        n
    }
}

/// A bounded, policy-enforcing queue shared by the hub and one subscriber.
#[derive(Debug)]
pub struct SubQueue {
    inner: Mutex<Inner>,
    waker: AtomicWaker,
    /// Items (messages and events) held at most.
    capacity: usize,
    /// Bytes of queued messages held at most; one message larger than this
    /// is still taken into a queue that holds no other message, so that
    /// every message can be delivered.
    max_bytes: usize,
    policy: Overflow,
    /// Envelope subscribers get state and gap events; raw ones and sinks do not.
    events: bool,
    metrics: SubscriberMetricsHandle,
}

/// Wrapper so `SubQueue` can derive Debug.
#[derive(Clone)]
pub(crate) struct SubscriberMetricsHandle(pub SubscriberMetrics);

impl std::fmt::Debug for SubscriberMetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriberMetrics")
    }
}

/// What `push` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (possibly after dropping the oldest).
    Queued,
    /// The new message was dropped (`drop_newest`), or the queue is closed.
    Dropped,
    /// Overflow under `disconnect`: the queue is now closed as `Slow`.
    Disconnected,
}

impl SubQueue {
    /// A queue holding at most `capacity` items, unbounded in bytes (tests,
    /// and callers that bound message sizes otherwise).
    pub fn new(capacity: usize, policy: Overflow, events: bool, metrics: SubscriberMetrics) -> Arc<Self> {
        Self::bounded(capacity, usize::MAX, policy, events, metrics)
    }

    /// A queue holding at most `capacity` items and `max_bytes` of message
    /// bytes, whichever is reached first.
    pub fn bounded(
        capacity: usize,
        max_bytes: usize,
        policy: Overflow,
        events: bool,
        metrics: SubscriberMetrics,
    ) -> Arc<Self> {
        Arc::new(SubQueue {
            inner: Mutex::new(Inner {
                // Empty until used: idle subscribers are the common case (2 KB each saved).
                items: VecDeque::new(),
                messages: 0,
                bytes: 0,
                missed: Vec::new(),
                missed_tail: Vec::new(),
                closed: None,
                finished: false,
            }),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            policy,
            events,
            metrics: SubscriberMetricsHandle(metrics),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Inner holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscriber's counters.
    pub fn metrics(&self) -> &SubscriberMetrics {
        &self.metrics.0
    }

    /// True when a message of `size` bytes fits beside what is queued.
    fn fits(&self, g: &Inner, size: usize) -> bool {
        g.messages < self.capacity && (g.messages == 0 || g.bytes.saturating_add(size) <= self.max_bytes)
    }

    /// Queues a message, applying the overflow policy when full. Never blocks
    /// on the consumer. Every message that is not queued is counted.
    pub fn push(&self, d: &Arc<Delivery>) -> Pushed {
        let size = d.size();
        let (result, wake) = {
            let mut g = self.lock();
            if let Some(why) = g.closed {
                self.metrics.0.dropped(why.drop_reason(), 1);
                return Pushed::Dropped;
            }
            let was_empty = g.items.is_empty();
            if !self.fits(&g, size) {
                match self.policy {
                    Overflow::DropOldest => {
                        while !self.fits(&g, size) {
                            let Some(old) = g.pop_oldest_message() else { break };
                            note_missed(&mut g.missed, &old.msg.upstream);
                            self.metrics.0.dropped_overflow(1);
                        }
                    }
                    Overflow::DropNewest => {
                        note_missed(&mut g.missed_tail, &d.msg.upstream);
                        self.metrics.0.dropped_overflow(1);
                        return Pushed::Dropped;
                    }
                    Overflow::Disconnect => {
                        let lost = 1 + g.clear();
                        self.metrics.0.dropped_overflow(lost);
                        g.closed = Some(Closed::Slow);
                        drop(g);
                        self.waker.wake();
                        return Pushed::Disconnected;
                    }
                }
            }
            if !g.missed_tail.is_empty() {
                // Gap events take no message room: at most one per upstream.
                let tail = std::mem::take(&mut g.missed_tail);
                if self.events {
                    for (upstream, n) in tail {
                        g.items.push_back(Item::Event(Box::new(gap_event(&upstream, n))));
                    }
                }
            }
            g.items.push_back(Item::Message(Arc::clone(d)));
            g.messages += 1;
            g.bytes += size;
            (Pushed::Queued, was_empty)
        };
        if wake {
            self.waker.wake();
        }
        result
    }

    /// Queues an event (only for subscribers that want events). Events are
    /// never dropped or displaced; they take no message room, but a
    /// subscriber that leaves [`MAX_EVENTS`] of them unread has stopped
    /// reading and is closed as slow instead (its queued messages counted
    /// as dropped). Returns false when that happened.
    pub fn push_event(&self, event: ByteString) -> bool {
        if !self.events {
            return true;
        }
        let wake = {
            let mut g = self.lock();
            if g.closed.is_some() {
                return true;
            }
            let was_empty = g.items.is_empty();
            if g.items.len() - g.messages >= MAX_EVENTS {
                let lost = g.clear();
                self.metrics.0.dropped_overflow(lost);
                g.closed = Some(Closed::Slow);
                drop(g);
                self.waker.wake();
                return false;
            }
            g.items.push_back(Item::Event(Box::new(event)));
            was_empty
        };
        if wake {
            self.waker.wake();
        }
        true
    }

    /// Closes the queue; the consumer sees `Next::Closed(why)` after what is
    /// queued. Later pushes are counted as dropped for `why`.
    pub fn close(&self, why: Closed) {
        {
            let mut g = self.lock();
            if g.closed.is_none() {
                g.closed = Some(why);
            }
        }
        self.waker.wake();
    }

    /// The consumer is gone for `reason`: what is still queued will never
    /// be delivered. Closes the queue, counts the messages it held as
    /// dropped and returns their number.
    pub fn abandon(&self, reason: DropReason) -> u64 {
        let lost = {
            let mut g = self.lock();
            if g.closed.is_none() {
                g.closed = Some(match reason {
                    DropReason::Reload => Closed::Reload,
                    DropReason::Overflow => Closed::Slow,
                    DropReason::Shutdown | DropReason::Error => Closed::Shutdown,
                });
            }
            g.clear()
        };
        self.metrics.0.dropped(reason, lost);
        self.waker.wake();
        lost
    }

    /// The consumer left by its own choice (a client closed its session):
    /// the queue is closed and emptied without counting a drop.
    pub fn abandon_uncounted(&self) {
        {
            let mut g = self.lock();
            g.closed.get_or_insert(Closed::Shutdown);
            g.clear();
        }
        self.waker.wake();
    }

    /// Data messages queued now (events excluded).
    pub fn len(&self) -> usize {
        self.lock().messages
    }

    /// True when no data message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the data messages queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Takes everything queued, with gap events placed before the first
    /// message that follows drops.
    fn drain(&self, g: &mut Inner, out: &mut Vec<Item>) {
        out.reserve(g.items.len() + g.missed.len());
        g.messages = 0;
        g.bytes = 0;
        for item in g.items.drain(..) {
            if matches!(item, Item::Message(_)) && !g.missed.is_empty() {
                for (upstream, missed) in g.missed.drain(..) {
                    if self.events {
                        out.push(Item::Event(Box::new(gap_event(&upstream, missed))));
                    }
                }
            }
            out.push(item);
        }
    }

    /// Why the producer side closed the queue, once it did.
    pub fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// The consumer side for a writer that pulls only when its socket can
    /// take more: moves at most `max_items` items and about `max_bytes` of
    /// message bytes (always at least one item) onto `out`, gap events placed
    /// as [`Self::stream`] places them; one lock per batch. `Closed` comes
    /// once everything queued was taken; after it, nothing more.
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        max_items: usize,
        max_bytes: usize,
        out: &mut Vec<Item>,
    ) -> Poll<Taken> {
        let mut g = self.lock();
        if !g.items.is_empty() {
            let mut items = 0;
            let mut bytes = 0;
            while items < max_items.max(1) && (items == 0 || bytes < max_bytes) {
                let Some(item) = g.items.pop_front() else { break };
                if let Item::Message(d) = &item {
                    g.messages -= 1;
                    g.bytes -= d.size();
                    bytes += d.size();
                    if !g.missed.is_empty() {
                        for (upstream, missed) in std::mem::take(&mut g.missed) {
                            if self.events {
                                out.push(Item::Event(Box::new(gap_event(&upstream, missed))));
                            }
                        }
                    }
                }
                out.push(item);
                items += 1;
            }
            if g.items.is_empty() && g.items.capacity() > SHRINK_ABOVE {
                // A burst is over: give its room back.
                g.items = VecDeque::new();
            }
            return Poll::Ready(Taken::Items);
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

    /// The consumer side as a stream of batches.
    pub fn stream(self: &Arc<Self>) -> QueueStream {
        QueueStream { queue: Arc::clone(self) }
    }
}

fn note_missed(missed: &mut Vec<(Arc<str>, u64)>, upstream: &Arc<str>) {
    match missed.iter_mut().find(|(u, _)| u == upstream) {
        Some((_, n)) => *n += 1,
        None => missed.push((Arc::clone(upstream), 1)),
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
        if !g.items.is_empty() {
            let mut out = Vec::new();
            q.drain(&mut g, &mut out);
            return Poll::Ready(Some(Next::Items(out)));
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

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
