//! Unit tests of `overflow = "conflate"` and `"block"` on a `SubQueue`.
use std::sync::Arc;

use futures_util::StreamExt;

use crate::config::Overflow;
use crate::fanout::message::{Delivery, Incoming};
use crate::fanout::{Gate, Item, Next, SubQueue};
use crate::telemetry::Metrics;

fn msg(upstream: &str, seq: u64, sym: &str) -> Arc<Delivery> {
    Delivery::json_for_test(upstream, "t", format!(r#"{{"sym":"{sym}","n":{seq}}}"#), seq)
}

fn shown(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Message(d) => format!("{}{}", d.conflate_key("/sym").as_deref().unwrap_or("-"), d.seq),
            Item::Event(e) => e.to_string(),
        })
        .collect()
}

async fn take_all(q: &Arc<SubQueue>) -> Vec<Item> {
    match q.stream().next().await {
        Some(Next::Items(v)) => v,
        other => panic!("expected items, got {other:?}"),
    }
}

/// A full conflating queue keeps the latest message per key, in seq order;
/// a key with nothing queued drops the oldest; every removal is counted.
#[actix_rt::test]
async fn conflate_keeps_the_latest_per_key() {
    let m = Metrics::new();
    let q = SubQueue::keyed(3, usize::MAX, Overflow::Conflate, "/sym", true, m.subscriber("websocket"));
    let syms = ["A", "B", "C", "A", "A", "B", "C", "C"];
    for (i, s) in syms.iter().enumerate() {
        q.push(&msg("u", i as u64 + 1, s));
    }
    assert_eq!(q.len(), 3);
    let got = shown(&take_all(&q).await);
    assert_eq!(got, [r#"{"event":"gap","upstream":"u","missed":5}"#, "A5", "B6", "C8"]);
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains(r#"wsgate_subscriber_dropped_total{kind="websocket",reason="overflow"} 5"#), "{text}");
    // A new key in a full queue: the oldest goes.
    for (i, s) in ["A", "B", "C", "D"].iter().enumerate() {
        q.push(&msg("u", 10 + i as u64, s));
    }
    assert_eq!(shown(&take_all(&q).await)[1..], ["B11", "C12", "D13"]);
}

/// Many updates of few keys into a paused queue: tombstones are compacted,
/// the queue holds one message per key, and the index follows the takes.
#[actix_rt::test]
async fn conflate_stays_bounded() {
    let m = Metrics::new();
    let q = SubQueue::keyed(4, usize::MAX, Overflow::Conflate, "", false, m.subscriber("websocket"));
    let topic = |seq: u64, t: &str| {
        let d = msg("u", seq, "x");
        Delivery::new(Incoming { topic: t.into(), ..d.msg.clone() }, seq)
    };
    for seq in 1..=10_000u64 {
        q.push(&topic(seq, ["p", "q", "r", "s"][(seq % 4) as usize]));
    }
    assert!(q.lock().items.len() <= 4 + 64 + 1, "tombstones compacted: {}", q.lock().items.len());
    let seqs: Vec<u64> = take_all(&q)
        .await
        .iter()
        .filter_map(|i| match i {
            Item::Message(d) => Some(d.seq),
            Item::Event(_) => None,
        })
        .collect();
    assert_eq!(seqs, [9997, 9998, 9999, 10000]);
    // Keys from other upstreams are other keys.
    q.push(&topic(1, "p"));
    let other = Delivery::new(Incoming { upstream: "v".into(), ..topic(2, "p").msg.clone() }, 1);
    q.push(&other);
    assert_eq!(q.len(), 2);
}

/// A blocking queue never drops while a gate is given: it holds the gate
/// shut once full and releases it when drained below its bounds, or closed.
#[actix_rt::test]
async fn block_holds_the_gate() {
    let m = Metrics::new();
    let q = SubQueue::new(2, Overflow::Block, false, m.subscriber("file"));
    let gate = Gate::default();
    q.push_from(&msg("u", 1, "A"), Some(&gate));
    assert!(!gate.is_closed());
    q.push_from(&msg("u", 2, "A"), Some(&gate));
    assert!(gate.is_closed(), "full: the upstream must stop reading");
    q.push_from(&msg("u", 3, "A"), Some(&gate));
    assert_eq!(q.len(), 3, "one over, nothing dropped");
    assert_eq!(take_all(&q).await.len(), 3);
    assert!(!gate.is_closed(), "drained: open again");
    q.push_from(&msg("u", 4, "A"), Some(&gate));
    q.push_from(&msg("u", 5, "A"), Some(&gate));
    assert!(gate.is_closed());
    q.close(crate::fanout::Closed::Shutdown);
    assert!(!gate.is_closed(), "a closed queue holds nobody back");
    let text = String::from_utf8(m.encode()).unwrap();
    assert!(text.contains(r#"wsgate_subscriber_dropped_total{kind="file",reason="overflow"} 0"#), "{text}");
    // Dropping a queue that holds a gate releases it too.
    let q = SubQueue::new(1, Overflow::Block, false, m.subscriber("file"));
    q.push_from(&msg("u", 6, "A"), Some(&gate));
    assert!(gate.is_closed());
    drop(q);
    assert!(!gate.is_closed());
}
