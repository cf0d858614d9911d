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

fn sized(p: &Publisher, topic: &str, size: usize) -> u64 {
    p.publish(Incoming {
        upstream: "a".into(),
        topic: topic.into(),
        raw: bytes::Bytes::from(vec![b'1'; size]),
        raw_is_text: true,
        kind: DataKind::Json,
        received_at: SystemTime::now(),
        received: Instant::now(),
        conn: 1,
    })
}

fn overflow_drops(m: &Metrics) -> String {
    let text = String::from_utf8(m.encode()).unwrap();
    let line =
        text.lines().find(|l| l.starts_with(r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"}"#));
    line.unwrap_or_default().rsplit(' ').next().unwrap_or_default().to_string()
}

/// Takes until a batch brings nothing: (message seqs, event texts).
fn drain(q: &SubQueue) -> (Vec<u64>, Vec<String>) {
    let (mut seqs, mut events) = (Vec::new(), Vec::new());
    loop {
        let (s, e) = take(q, 100);
        if s.is_empty() && e.is_empty() {
            return (seqs, events);
        }
        seqs.extend(s);
        events.extend(e);
    }
}

/// A replaying subscriber that does not read: live messages join the
/// replay only up to the queue's capacity, then queue under the overflow
/// policy, so `disconnect` closes it and the loss is counted.
#[test]
fn unread_replay_overflows_by_policy() {
    let (hub, p, m) = setup(10_000);
    for n in 1..=5 {
        publish(&p, n);
    }
    let q = SubQueue::new(8, Overflow::Disconnect, false, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    for n in 6..=100 {
        publish(&p, n);
    }
    assert_eq!(q.closed(), Some(crate::fanout::Closed::Slow), "closed as slow");
    assert_ne!(overflow_drops(&m), "0", "the loss is counted");
    // The byte bound too: 100 bytes hold five messages of 20.
    let q = SubQueue::bounded(1000, 100, Overflow::Disconnect, false, m.subscriber("websocket"));
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    for _ in 0..5 {
        sized(&p, "", 20);
    }
    assert_eq!(q.closed(), None, "five fit");
    for _ in 0..6 {
        sized(&p, "", 20);
    }
    assert_eq!(q.closed(), Some(crate::fanout::Closed::Slow), "past queue_bytes: closed as slow");
}

/// Live messages that joined a replay and that the history overwrote
/// before they were sent are overflow drops (a plain gap), not history.
#[test]
fn overwritten_joined_messages_are_overflow_drops() {
    let (hub, p, m) = setup(10);
    for n in 1..=5 {
        publish(&p, n);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, true, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    for n in 6..=30 {
        publish(&p, n);
    }
    let (seqs, events) = drain(&q);
    assert_eq!(seqs, (21..=30).collect::<Vec<u64>>());
    assert!(
        events.iter().any(|e| e == r#"{"event":"gap","upstream":"a","missed":5,"reason":"history"}"#),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == r#"{"event":"gap","upstream":"a","missed":15}"#), "{events:?}");
    assert_eq!(overflow_drops(&m), "15");
}

/// A live message the history cannot hold (larger than history_bytes),
/// and those after a reload turned history off, still arrive; what had
/// joined before the reload is counted as dropped.
#[test]
fn live_messages_the_history_cannot_hold_still_arrive() {
    let hub = Hub::new();
    let run = RunId::random();
    hub.configure_replay(run.clone(), 100, 1000);
    let p = hub.publisher("a");
    let m = Metrics::new();
    for _ in 1..=3 {
        sized(&p, "", 10);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    assert_eq!(take(&q, 2).0, [1, 2]);
    assert_eq!(sized(&p, "", 5000), 4, "empties the ring, 3 included");
    assert_eq!(sized(&p, "", 10), 5);
    assert_eq!(drain(&q).0, [4, 5], "the big one queued, and what came after it");
    assert_eq!(overflow_drops(&m), "0");
    // Again, and history turned off mid-replay.
    sized(&p, "", 10);
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    sized(&p, "", 10);
    hub.configure_replay(run, 0, 1000);
    sized(&p, "", 10);
    assert_eq!(drain(&q).0, [8]);
    assert_eq!(overflow_drops(&m), "1", "7 had joined the replay: counted");
}

/// A topic added mid-replay: its live messages arrive (the replay filters
/// with the filter it started with; they queue behind it).
#[test]
fn filter_change_mid_replay_loses_nothing() {
    let (hub, p, m) = setup(1000);
    for _ in 1..=4 {
        sized(&p, "x", 1);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let f = Filter::from_lists(&[], &["x".into()], 4).unwrap();
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let sub = hub.subscribe_from(Arc::clone(&q), f, &since).unwrap();
    sized(&p, "x", 1);
    sub.add(crate::fanout::Pair { upstream: None, topic: Some("y".into()) }, 4).unwrap();
    sized(&p, "y", 1);
    sized(&p, "x", 1);
    assert_eq!(drain(&q).0, [1, 2, 3, 4, 5, 6, 7]);
}

/// An event of the upstream queued during its replay comes before the
/// live messages published after it.
#[test]
fn events_keep_their_place_during_a_replay() {
    let (hub, p, m) = setup(1000);
    for n in 1..=3 {
        publish(&p, n);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, true, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    publish(&p, 4);
    p.announce(crate::fanout::upstream_gap_event("a", None, 5, 7, false));
    publish(&p, 5);
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut shown = Vec::new();
    loop {
        let mut out = Vec::new();
        if !matches!(q.poll_take(&mut cx, 100, usize::MAX, &mut out), Poll::Ready(Taken::Items)) {
            break;
        }
        for i in out {
            shown.push(match i {
                Item::Message(d) => d.seq.to_string(),
                Item::Event(e) if e.contains("upstream_gap") => "gap".into(),
                Item::Event(_) => continue,
            });
        }
    }
    assert_eq!(shown, ["1", "2", "3", "4", "gap", "5"]);
}

/// An upstream removed and added again (reload) goes on numbering: a
/// subscriber whose replay ended gets the new seqs.
#[test]
fn re_added_upstream_continues_its_seq() {
    let (hub, p, m) = setup(1000);
    for n in 1..=10 {
        publish(&p, n);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    assert_eq!(drain(&q).0, (1..=10).collect::<Vec<u64>>());
    hub.remove_upstream("a");
    assert!(p.history_is_empty(), "the removed upstream's history is freed");
    let p = hub.publisher("a");
    for n in 1..=3 {
        publish(&p, n);
    }
    assert_eq!(drain(&q).0, [11, 12, 13]);
}

/// A filter that matches little: one take examines a bounded part of the
/// history and comes back (woken) for the rest.
#[test]
fn sparse_replay_takes_in_bounded_steps() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (hub, p, m) = setup(20_000);
    for _ in 0..10_000 {
        sized(&p, "odd", 1);
    }
    sized(&p, "even", 1);
    let q = SubQueue::new(100, Overflow::DropOldest, false, m.subscriber("websocket"));
    let f = Filter::from_lists(&[], &["even".into()], 4).unwrap();
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), f, &since).unwrap();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = std::task::Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    let mut out = Vec::new();
    while out.is_empty() && polls < 10 {
        polls += 1;
        let _ = q.poll_take(&mut cx, 100, usize::MAX, &mut out);
    }
    assert_eq!(polls, 3, "10001 entries at 4096 a take");
    assert_eq!(count.0.load(Ordering::Relaxed), 2, "woken after each empty step");
    assert!(matches!(&out[..], [Item::Message(d)] if d.seq == 10_001));
}

/// With replay off, `since` replays nothing and announces no gap.
#[test]
fn since_without_history_is_ignored() {
    let (hub, p, m) = setup(0);
    for n in 1..=5 {
        publish(&p, n);
    }
    let q = SubQueue::new(100, Overflow::DropOldest, true, m.subscriber("websocket"));
    let since = [Resume { upstream: "a".into(), after: 0, run: None }];
    let _sub = hub.subscribe_from(Arc::clone(&q), all(), &since).unwrap();
    publish(&p, 6);
    let (seqs, events) = drain(&q);
    assert_eq!(seqs, [6]);
    assert!(!events.iter().any(|e| e.contains("gap")), "{events:?}");
}
