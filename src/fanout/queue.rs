//! The bounded queue between the hub and one subscriber.
//!
//! The overflow policy is applied here, on the producer side, because a
//! session whose client stopped reading is not polled at all (ACTIX-FACTS):
//! the hub can always act, the stalled consumer cannot: `drop_oldest`,
//! `drop_newest`, `disconnect`, `conflate` (the index in `conflate.rs`) and,
//! for sinks, `block` (holding the pushing upstream's `Gate`, `gate.rs`).
//! A live message of an upstream whose replay is pending joins the replay
//! instead of the queue (`Inner::absorb`). The consumer side (`take.rs`)
//! inserts `gap` events before the next message after drops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;

use super::conflate::Conflation;
pub(super) use super::entries::{Entry, Inner};
use super::gate::Gate;
use super::message::{gap_event, Delivery};
use crate::config::Overflow;
use crate::telemetry::{DropReason, SubscriberMetrics};

/// Unread events one subscriber may hold (state changes of the upstreams
/// it follows) before it counts as having stopped reading.
pub const MAX_EVENTS: usize = 1024;

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
    pub(super) fn drop_reason(self) -> DropReason {
        match self {
            Closed::Slow => DropReason::Overflow,
            Closed::Shutdown => DropReason::Shutdown,
            Closed::Reload => DropReason::Reload,
        }
    }
}

/// A bounded, policy-enforcing queue shared by the hub and one subscriber.
#[derive(Debug)]
pub struct SubQueue {
    pub(super) inner: Mutex<Inner>,
    pub(super) waker: AtomicWaker,
    /// Items (messages and events) held at most.
    capacity: usize,
    /// Bytes of queued messages held at most; one message larger than this
    /// is still taken into a queue that holds no other message, so that
    /// every message can be delivered.
    max_bytes: usize,
    policy: Overflow,
    /// Envelope subscribers get state and gap events; raw ones and sinks do not.
    pub(super) events: bool,
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
    /// Queued (possibly after dropping or conflating older ones).
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
        Self::keyed(capacity, max_bytes, policy, "", events, metrics)
    }

    /// As [`SubQueue::bounded`], with the `conflate_key` pointer that
    /// `overflow = "conflate"` groups messages by (`""`: the topic).
    pub fn keyed(
        capacity: usize,
        max_bytes: usize,
        policy: Overflow,
        conflate_key: &str,
        events: bool,
        metrics: SubscriberMetrics,
    ) -> Arc<Self> {
        Arc::new(SubQueue {
            inner: Mutex::new(Inner {
                // Empty until used: idle subscribers are the common case (2 KB each saved).
                items: VecDeque::new(),
                messages: 0,
                bytes: 0,
                gone: 0,
                missed: Vec::new(),
                missed_tail: Vec::new(),
                closed: None,
                finished: false,
                conflation: (policy == Overflow::Conflate).then(|| Conflation::new(conflate_key)),
                holding: Vec::new(),
                replay: None,
                replays: 0,
                replayed: Vec::new(),
            }),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            policy,
            events,
            metrics: SubscriberMetricsHandle(metrics),
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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

    /// True when the queue is below its bounds (a blocked upstream may read again).
    pub(super) fn below_bounds(&self, g: &Inner) -> bool {
        g.messages < self.capacity && g.bytes < self.max_bytes
    }

    /// Queues a message, applying the overflow policy when full. Never blocks
    /// on the consumer. Every message that is not queued is counted.
    pub fn push(&self, d: &Arc<Delivery>) -> Pushed {
        self.push_from(d, None)
    }

    /// As [`SubQueue::push`], from the upstream whose gate is `gate`: under
    /// `overflow = "block"` a full queue keeps the message (at most one over
    /// per upstream) and holds the gate shut until its consumer drains it
    /// below its bounds. (Without a gate, block drops the oldest.)
    pub fn push_from(&self, d: &Arc<Delivery>, gate: Option<&Gate>) -> Pushed {
        let size = d.size();
        let (result, wake) = {
            let mut g = self.lock();
            if let Some(why) = g.closed {
                self.metrics.0.dropped(why.drop_reason(), 1);
                return Pushed::Dropped;
            }
            if g.absorb(d, self.capacity, self.max_bytes) {
                drop(g);
                self.waker.wake();
                return Pushed::Queued;
            }
            let was_empty = g.items.is_empty();
            if !self.fits(&g, size) {
                match (self.policy, gate) {
                    (Overflow::Block, Some(_)) => {}
                    (Overflow::DropOldest | Overflow::Conflate | Overflow::Block, _) => {
                        if self.policy == Overflow::Conflate {
                            self.conflate(&mut g, d);
                        }
                        while !self.fits(&g, size) {
                            let Some(old) = g.pop_oldest_message() else { break };
                            note_missed(&mut g.missed, &old.msg.upstream);
                            self.metrics.0.dropped_overflow(1);
                        }
                        g.compact();
                    }
                    (Overflow::DropNewest, _) => {
                        note_missed(&mut g.missed_tail, &d.msg.upstream);
                        self.metrics.0.dropped_overflow(1);
                        return Pushed::Dropped;
                    }
                    (Overflow::Disconnect, _) => {
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
                        g.items.push_back(Entry::Event(Box::new(gap_event(&upstream, n))));
                    }
                }
            }
            let at = g.items.len();
            if let Some(c) = g.conflation.as_mut() {
                c.appended(d, at);
            }
            g.items.push_back(Entry::Message(Arc::clone(d)));
            g.messages += 1;
            g.bytes += size;
            if let (Overflow::Block, Some(gate)) = (self.policy, gate) {
                if !self.below_bounds(&g) && !g.holding.iter().any(|h| h.same(gate)) {
                    gate.hold();
                    g.holding.push(gate.clone());
                }
            }
            (Pushed::Queued, was_empty)
        };
        if wake {
            self.waker.wake();
        }
        result
    }

    /// A full conflating queue: removes every queued message with the key
    /// of `d` (counted as dropped; their gap comes before the next message).
    fn conflate(&self, g: &mut Inner, d: &Delivery) {
        let Some(c) = g.conflation.as_mut() else { return };
        for at in c.take_same_key(d) {
            if let Some(old) = g.tombstone(at) {
                note_missed(&mut g.missed, &old.msg.upstream);
                self.metrics.0.dropped_overflow(1);
            }
        }
    }

    /// Queues an event (only for subscribers that want events). Events are
    /// never dropped or displaced; they take no message room, but a
    /// subscriber that leaves [`MAX_EVENTS`] of them unread has stopped
    /// reading and is closed as slow instead (its queued messages counted
    /// as dropped). Returns false when that happened.
    pub fn push_event(&self, event: ByteString) -> bool {
        self.push_event_of(None, event)
    }

    /// As [`SubQueue::push_event`], for an event about `upstream`: its live
    /// messages stop joining its replays, so they come after the event.
    pub(super) fn push_event_of(&self, upstream: Option<&str>, event: ByteString) -> bool {
        if !self.events {
            return true;
        }
        self.push_entry(Entry::Event(Box::new(event)), upstream)
    }

    pub(super) fn push_entry(&self, entry: Entry, upstream: Option<&str>) -> bool {
        let replay = matches!(entry, Entry::Replay(_));
        let wake = {
            let mut g = self.lock();
            if g.closed.is_some() {
                return true;
            }
            let was_empty = g.items.is_empty();
            if g.events() >= MAX_EVENTS {
                let lost = g.clear();
                self.metrics.0.dropped_overflow(lost);
                g.closed = Some(Closed::Slow);
                self.release_gates(&mut g);
                drop(g);
                self.waker.wake();
                return false;
            }
            if let Some(u) = upstream {
                g.stop_joining(Some(u));
            }
            g.items.push_back(entry);
            g.replays += usize::from(replay);
            was_empty
        };
        if wake {
            self.waker.wake();
        }
        true
    }

    /// Releases every gate this queue holds (it drained, or closed).
    pub(super) fn release_gates(&self, g: &mut Inner) {
        for gate in g.holding.drain(..) {
            gate.release();
        }
    }

    /// Closes the queue; the consumer sees `Next::Closed(why)` after what is
    /// queued. Later pushes are counted as dropped for `why`.
    pub fn close(&self, why: Closed) {
        {
            let mut g = self.lock();
            if g.closed.is_none() {
                g.closed = Some(why);
            }
            // A closed queue takes nothing more: it holds no upstream back.
            self.release_gates(&mut g);
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
            self.release_gates(&mut g);
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
            self.release_gates(&mut g);
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

    /// Why the producer side closed the queue, once it did.
    pub fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }
}

impl Drop for SubQueue {
    fn drop(&mut self) {
        // A queue nobody drains any more holds no upstream back.
        let mut g = self.lock();
        for gate in g.holding.drain(..) {
            gate.release();
        }
    }
}

pub(super) fn note_missed(missed: &mut Vec<(Arc<str>, u64)>, upstream: &Arc<str>) {
    match missed.iter_mut().find(|(u, _)| u == upstream) {
        Some((_, n)) => *n += 1,
        None => missed.push((Arc::clone(upstream), 1)),
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
