//! Unit tests of `queue.rs`.

use futures_util::StreamExt;

use super::*;
use crate::fanout::{Next, QueueStream, Taken};
use crate::telemetry::Metrics;
use std::task::{Context, Poll};

fn msg(upstream: &str, seq: u64) -> Arc<Delivery> {
    Delivery::json_for_test(upstream, "", seq.to_string(), seq)
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

fn sized(upstream: &str, seq: u64, bytes: usize) -> Arc<Delivery> {
    let d = msg(upstream, seq);
    let mut m = d.msg.clone();
    m.raw = bytes::Bytes::from(vec![b'1'; bytes]);
    Delivery::new(m, seq)
}

fn dropped(m: &Metrics, reason: &str) -> f64 {
    let text = String::from_utf8(m.encode()).unwrap();
    let series = format!(r#"wsgate_subscriber_dropped_total{{kind="websocket",reason="{reason}"}} "#);
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.parse().unwrap())
}

/// `queue_bytes` bounds the queue beside `queue_capacity`; one message
/// larger than the bound still goes into an empty queue.
#[actix_rt::test]
async fn bytes_bound_the_queue() {
    let m = Metrics::new();
    let q = SubQueue::bounded(100, 10, Overflow::DropOldest, false, m.subscriber("websocket"));
    for s in 1..=4 {
        q.push(&sized("a", s, 4));
    }
    assert_eq!((q.len(), q.bytes()), (2, 8));
    assert_eq!(dropped(&m, "overflow"), 2.0);
    q.push(&sized("a", 5, 50));
    assert_eq!((q.len(), q.bytes()), (1, 50), "a large message replaces everything and fits alone");
    let mut st = q.stream();
    assert_eq!(seqs(&next_items(&mut st).await), ["5"]);
    assert_eq!(q.bytes(), 0);
}

/// drop_oldest displaces messages, never a queued state event.
#[actix_rt::test]
async fn state_events_are_never_displaced() {
    let m = Metrics::new();
    let q = SubQueue::new(2, Overflow::DropOldest, true, m.subscriber("websocket"));
    assert!(q.push_event(ByteString::from_static("state-1")));
    q.push(&msg("a", 1));
    assert!(q.push_event(ByteString::from_static("state-2")));
    q.push(&msg("a", 2));
    q.push(&msg("a", 3));
    q.push(&msg("a", 4));
    let mut st = q.stream();
    let got = seqs(&next_items(&mut st).await);
    assert_eq!(got, ["state-1", "state-2", r#"{"event":"gap","upstream":"a","missed":2}"#, "3", "4"]);
    assert_eq!(dropped(&m, "overflow"), 2.0);
}

/// Pushes into a closed queue are counted for the reason it closed, and
/// what a departed consumer left queued is counted when abandoned.
#[actix_rt::test]
async fn every_drop_is_counted() {
    let m = Metrics::new();
    let q = SubQueue::new(10, Overflow::DropOldest, false, m.subscriber("websocket"));
    q.push(&msg("a", 1));
    q.close(Closed::Shutdown);
    assert_eq!(q.push(&msg("a", 2)), Pushed::Dropped);
    assert_eq!(dropped(&m, "shutdown"), 1.0);
    assert_eq!(q.abandon(DropReason::Shutdown), 1);
    assert_eq!(dropped(&m, "shutdown"), 2.0);

    let q = SubQueue::new(10, Overflow::DropOldest, false, m.subscriber("websocket"));
    q.push(&msg("a", 1));
    assert_eq!(q.abandon(DropReason::Reload), 1);
    assert_eq!(q.push(&msg("a", 2)), Pushed::Dropped);
    assert_eq!(dropped(&m, "reload"), 2.0);
}

/// A queue holds one item per message: two words.
#[test]
fn items_are_small() {
    assert_eq!(std::mem::size_of::<Item>(), 16);
}

/// Batches are bounded in items and bytes; a gap event stays in front
/// of the first message after drops; Closed follows the last item.
#[actix_rt::test]
async fn take_in_bounded_batches() {
    let q = SubQueue::new(4, Overflow::DropOldest, true, Metrics::new().subscriber("websocket"));
    for s in 1..=6 {
        q.push(&msg("a", s));
    }
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    assert_eq!(q.poll_take(&mut cx, 2, usize::MAX, &mut out), Poll::Ready(Taken::Items));
    assert_eq!(seqs(&out), [r#"{"event":"gap","upstream":"a","missed":2}"#, "3", "4"]);
    out.clear();
    q.push(&sized("a", 7, 100));
    q.push(&msg("a", 8));
    assert_eq!(q.poll_take(&mut cx, 10, 50, &mut out), Poll::Ready(Taken::Items));
    assert_eq!(seqs(&out), ["5", "6", "7"], "stops once past the byte bound");
    q.close(Closed::Shutdown);
    out.clear();
    assert_eq!(q.poll_take(&mut cx, 10, 50, &mut out), Poll::Ready(Taken::Items));
    assert_eq!(seqs(&out), ["8"]);
    assert_eq!(q.poll_take(&mut cx, 10, 50, &mut out), Poll::Ready(Taken::Closed(Closed::Shutdown)));
    assert_eq!(q.poll_take(&mut cx, 10, 50, &mut out), Poll::Ready(Taken::Finished));
    assert_eq!(q.closed(), Some(Closed::Shutdown));
}

/// A subscriber that leaves MAX_EVENTS state events unread is closed as
/// slow rather than growing without bound.
#[actix_rt::test]
async fn unread_events_are_bounded() {
    let q = SubQueue::new(4, Overflow::DropOldest, true, Metrics::new().subscriber("websocket"));
    for _ in 0..MAX_EVENTS {
        assert!(q.push_event(ByteString::from_static("e")));
    }
    assert!(!q.push_event(ByteString::from_static("e")));
    let mut st = q.stream();
    assert!(matches!(st.next().await, Some(Next::Closed(Closed::Slow))));
}
