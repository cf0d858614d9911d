//! Replay at the hub: the switch from history to live, with the feed
//! publishing between every take.
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures_util::task::noop_waker;

use crate::config::Overflow;
use crate::fanout::{Filter, Hub, Incoming, Item, Publisher, Resume, SubQueue, Taken};
use crate::model::{DataKind, RunId};
use crate::telemetry::Metrics;

fn publish(p: &Publisher, n: u64) {
    p.publish(Incoming {
        upstream: "a".into(),
        topic: "".into(),
        raw: bytes::Bytes::from(n.to_string()),
        raw_is_text: true,
        kind: DataKind::Json,
        received_at: SystemTime::now(),
        received: Instant::now(),
        conn: 1,
    });
}

/// Takes one batch of at most `max` items: (message seqs, event texts).
fn take(q: &SubQueue, max: usize) -> (Vec<u64>, Vec<String>) {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut out = Vec::new();
    match q.poll_take(&mut cx, max, usize::MAX, &mut out) {
        Poll::Ready(Taken::Items) | Poll::Pending => {}
        other => panic!("{other:?}"),
    }
    let mut seqs = Vec::new();
    let mut events = Vec::new();
    for i in out {
        match i {
            Item::Message(d) => seqs.push(d.seq),
            Item::Event(e) => events.push(e.to_string()),
        }
    }
    (seqs, events)
}

fn setup(history: usize) -> (Hub, Publisher, Arc<Metrics>) {
    let hub = Hub::new();
    hub.configure_replay(RunId::random(), history, usize::MAX);
    let p = hub.publisher("a");
    (hub, p, Metrics::new())
}

fn all() -> Filter {
    Filter::from_lists(&[], &[], 1).unwrap()
}

/// `since` while the upstream publishes between every take (the unsent
/// live part stays within the queue of 64): every seq after `since`
/// exactly once, in order, nothing dropped.
#[test]
fn history_then_live_without_a_seam() {
    let (hub, p, m) = setup(1000);
    for n in 1..=10 {
        publish(&p, n);
    }
    let q = SubQueue::new(64, Overflow::DropOldest, true, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 3, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    let (mut seqs, mut events) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let (s, e) = take(&q, 3);
        seqs.extend(s);
        events.extend(e);
        for n in 0..5 {
            publish(&p, 11 + round * 5 + n);
        }
    }
    loop {
        let (s, e) = take(&q, 100);
        if s.is_empty() && e.is_empty() {
            break;
        }
        seqs.extend(s);
        events.extend(e);
    }
    assert_eq!(seqs, (4..=110).collect::<Vec<u64>>());
    assert!(events[0].starts_with(r#"{"event":"hello","run":"#), "{events:?}");
    assert_eq!(events.len(), 2, "hello and the state event, no gap: {events:?}");
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains(r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"} 0"#));
}

/// `resume` on a live subscription goes back: queued messages of that
/// upstream give way to the replay, and the stream goes on after it.
#[test]
fn resume_goes_back_then_on() {
    let (hub, p, m) = setup(1000);
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let sub = hub.subscribe(Arc::clone(&q), all()).unwrap();
    for n in 1..=5 {
        publish(&p, n);
    }
    assert_eq!(take(&q, 2).0, [1, 2]);
    assert!(sub.resume(&Resume { upstream: "a".into(), after: 1, run: None }).unwrap());
    publish(&p, 6);
    assert_eq!(take(&q, 100).0, [2, 3, 4, 5, 6]);
    publish(&p, 7);
    assert_eq!(take(&q, 100).0, [7]);
    // Another run: no replay, nothing queued is lost.
    publish(&p, 8);
    assert!(!sub.resume(&Resume { upstream: "a".into(), after: 1, run: Some("other".into()) }).unwrap());
    assert_eq!(take(&q, 100).0, [8]);
}

/// A subscriber following one topic: live messages of that topic join the
/// replay even though the upstream's other topics skip seqs between them.
#[test]
fn filtered_replay_absorbs_live() {
    let (hub, p, m) = setup(1000);
    let topic = |n: u64| Incoming {
        upstream: "a".into(),
        topic: if n % 2 == 0 { "even" } else { "odd" }.into(),
        raw: bytes::Bytes::from(n.to_string()),
        raw_is_text: true,
        kind: DataKind::Json,
        received_at: SystemTime::now(),
        received: Instant::now(),
        conn: 1,
    };
    for n in 1..=10 {
        p.publish(topic(n));
    }
    let q = SubQueue::new(16, Overflow::DropOldest, false, m.subscriber("websocket"));
    let f = Filter::from_lists(&[], &["even".into()], 4).unwrap();
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), f, &since).unwrap();
    for n in 11..=30 {
        p.publish(topic(n));
    }
    assert_eq!(q.len(), 0, "nothing queued: all of it joined the replay");
    assert_eq!(take(&q, 100).0, (1..=15).map(|n| n * 2).collect::<Vec<u64>>());
}
