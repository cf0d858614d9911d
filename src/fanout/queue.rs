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
use crate::telemetry::SubscriberMetrics;

/// One queued item.
#[derive(Debug, Clone)]
pub enum Item {
    /// A data message.
    Message(Arc<Delivery>),
    /// A control event (state, gap), already encoded.
    Event(ByteString),
}

/// Why a queue was closed by the producer side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Overflow under the `disconnect` policy: close 1008 "slow consumer".
    Slow,
    /// The process is shutting down: close 1001.
    Shutdown,
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Item>,
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

/// A bounded, policy-enforcing queue shared by the hub and one subscriber.
#[derive(Debug)]
pub struct SubQueue {
    inner: Mutex<Inner>,
    waker: AtomicWaker,
    capacity: usize,
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
    /// A queue holding at most `capacity` items.
    pub fn new(capacity: usize, policy: Overflow, events: bool, metrics: SubscriberMetrics) -> Arc<Self> {
        Arc::new(SubQueue {
            inner: Mutex::new(Inner {
                // Empty until used: idle subscribers are the common case (2 KB each saved).
                items: VecDeque::new(),
                missed: Vec::new(),
                missed_tail: Vec::new(),
                closed: None,
                finished: false,
            }),
            waker: AtomicWaker::new(),
            capacity: capacity.max(1),
            policy,
            events,
            metrics: SubscriberMetricsHandle(metrics),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Inner holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this subscriber wants state and gap events.
    pub fn wants_events(&self) -> bool {
        self.events
    }

    /// The subscriber's counters.
    pub fn metrics(&self) -> &SubscriberMetrics {
        &self.metrics.0
    }

    /// Queues a message, applying the overflow policy when full. Never blocks
    /// on the consumer.
    pub fn push(&self, d: &Arc<Delivery>) -> Pushed {
        let (result, wake) = {
            let mut g = self.lock();
            if g.closed.is_some() {
                return Pushed::Dropped;
            }
            let was_empty = g.items.is_empty();
            if g.items.len() < self.capacity {
                if !g.missed_tail.is_empty() {
                    // Gap events take no message room: at most one per upstream.
                    let tail = std::mem::take(&mut g.missed_tail);
                    if self.events {
                        for (upstream, n) in tail {
                            g.items.push_back(Item::Event(gap_event(&upstream, n)));
                        }
                    }
                }
                g.items.push_back(Item::Message(Arc::clone(d)));
                (Pushed::Queued, was_empty)
            } else {
                match self.policy {
                    Overflow::DropOldest => {
                        if let Some(Item::Message(old)) = g.items.pop_front() {
                            note_missed(&mut g.missed, &old.msg.upstream);
                            self.metrics.0.dropped_overflow(1);
                        }
                        g.items.push_back(Item::Message(Arc::clone(d)));
                        (Pushed::Queued, false)
                    }
                    Overflow::DropNewest => {
                        note_missed(&mut g.missed_tail, &d.msg.upstream);
                        self.metrics.0.dropped_overflow(1);
                        (Pushed::Dropped, false)
                    }
                    Overflow::Disconnect => {
                        let lost = 1 + g.items.iter().filter(|i| matches!(i, Item::Message(_))).count() as u64;
                        g.items.clear();
                        self.metrics.0.dropped_overflow(lost);
                        g.closed = Some(Closed::Slow);
                        (Pushed::Disconnected, true)
                    }
                }
            }
        };
        if wake {
            self.waker.wake();
        }
        result
    }

    /// Queues an event (only for subscribers that want events). Events take
    /// room like messages; when full the oldest item makes way.
    pub fn push_event(&self, event: ByteString) {
        if !self.events {
            return;
        }
        let wake = {
            let mut g = self.lock();
            if g.closed.is_some() {
                return;
            }
            let was_empty = g.items.is_empty();
            if g.items.len() >= self.capacity {
                if let Some(Item::Message(old)) = g.items.pop_front() {
                    note_missed(&mut g.missed, &old.msg.upstream);
                    self.metrics.0.dropped_overflow(1);
                }
            }
            g.items.push_back(Item::Event(event));
            was_empty
        };
        if wake {
            self.waker.wake();
        }
    }

    /// Closes the queue; the consumer sees `Next::Closed(why)` after what is queued.
    pub fn close(&self, why: Closed) {
        {
            let mut g = self.lock();
            if g.closed.is_none() {
                g.closed = Some(why);
            }
        }
        self.waker.wake();
    }

    /// Items queued now (tests and status).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes everything queued, with gap events placed before the first
    /// message that follows drops.
    fn drain(&self, g: &mut Inner, out: &mut Vec<Item>) {
        out.reserve(g.items.len() + g.missed.len());
        for item in g.items.drain(..) {
            if matches!(item, Item::Message(_)) && !g.missed.is_empty() {
                for (upstream, missed) in g.missed.drain(..) {
                    if self.events {
                        out.push(Item::Event(gap_event(&upstream, missed)));
                    }
                }
            }
            out.push(item);
        }
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
mod tests {
    use std::time::{Instant, SystemTime};

    use futures_util::StreamExt;

    use super::*;
    use crate::fanout::message::{DataKind, Incoming};
    use crate::telemetry::Metrics;

    fn msg(upstream: &str, seq: u64) -> Arc<Delivery> {
        Delivery::new(
            Incoming {
                upstream: upstream.into(),
                topic: "".into(),
                raw: bytes::Bytes::from(seq.to_string()),
                raw_is_text: true,
                kind: DataKind::Json,
                received_at: SystemTime::now(),
                received: Instant::now(),
            },
            seq,
        )
    }

    fn seqs(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Message(d) => d.seq.to_string(),
                Item::Event(e) => e.to_string(),
            })
            .collect()
    }

    async fn next_items(s: &mut QueueStream) -> Vec<Item> {
        match s.next().await {
            Some(Next::Items(v)) => v,
            other => panic!("expected items, got {other:?}"),
        }
    }

    /// drop_oldest keeps the newest `capacity` and announces the gap first.
    #[actix_rt::test]
    async fn drop_oldest_with_gap() {
        let m = Metrics::new();
        let q = SubQueue::new(3, Overflow::DropOldest, true, m.subscriber("websocket"));
        for s in 1..=5 {
            assert_eq!(q.push(&msg("a", s)), Pushed::Queued);
        }
        let mut st = q.stream();
        let got = seqs(&next_items(&mut st).await);
        assert_eq!(
            got,
            vec![r#"{"event":"gap","upstream":"a","missed":2}"#.to_string(), "3".into(), "4".into(), "5".into()]
        );
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"} 2"#), "{text}");
    }

    /// drop_newest keeps the oldest; raw subscribers get no gap event.
    #[actix_rt::test]
    async fn drop_newest_without_events() {
        let q = SubQueue::new(2, Overflow::DropNewest, false, Metrics::new().subscriber("websocket"));
        assert_eq!(q.push(&msg("a", 1)), Pushed::Queued);
        assert_eq!(q.push(&msg("a", 2)), Pushed::Queued);
        assert_eq!(q.push(&msg("a", 3)), Pushed::Dropped);
        q.push_event(ByteString::from_static("ignored"));
        let mut st = q.stream();
        assert_eq!(seqs(&next_items(&mut st).await), vec!["1", "2"]);
        q.push(&msg("a", 4));
        assert_eq!(seqs(&next_items(&mut st).await), vec!["4"]);
    }

    /// disconnect closes the queue as Slow and the stream ends.
    #[actix_rt::test]
    async fn disconnect_closes() {
        let q = SubQueue::new(1, Overflow::Disconnect, true, Metrics::new().subscriber("websocket"));
        assert_eq!(q.push(&msg("a", 1)), Pushed::Queued);
        assert_eq!(q.push(&msg("a", 2)), Pushed::Disconnected);
        assert_eq!(q.push(&msg("a", 3)), Pushed::Dropped);
        let mut st = q.stream();
        assert!(matches!(st.next().await, Some(Next::Closed(Closed::Slow))));
        assert!(st.next().await.is_none());
    }
}
