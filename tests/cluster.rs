//! Cluster leases (SPEC §15 `[cluster]`, the slice that exists so far)
//! against the real NATS JetStream on 127.0.0.1:4222: replicas share the
//! upstreams fairly, each held exactly once, and take over the upstreams
//! of a replica that stops renewing. Skips with one line when NATS is
//! absent. Each test uses its own bucket and deletes it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use wsgate::cluster::Leases;

const NATS: &str = "127.0.0.1:4222";

fn up() -> bool {
    let sock: SocketAddr = NATS.parse().unwrap();
    let ok = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).is_ok();
    if !ok {
        eprintln!("skipped: no NATS on {NATS}");
    }
    ok
}

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{what}{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// One round of every live node; returns what each holds.
async fn round(nodes: &mut [Leases], ups: &[String]) -> Vec<BTreeSet<String>> {
    let mut out = Vec::new();
    for n in nodes.iter_mut() {
        out.push(n.round(ups).await.expect("a lease round"));
    }
    out
}

/// Each upstream held by exactly one node, and the counts per node.
fn balanced(held: &[BTreeSet<String>], ups: &[String], per_node: usize) -> bool {
    let total: usize = held.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<&String> = held.iter().flatten().collect();
    total == ups.len() && union.len() == ups.len() && held.iter().all(|h| h.len() == per_node)
}

/// Rounds every `every` until `held` satisfies `done`, within `deadline`.
async fn converge(
    nodes: &mut [Leases],
    ups: &[String],
    every: Duration,
    deadline: Duration,
    what: &str,
    done: impl Fn(&[BTreeSet<String>]) -> bool,
) -> Vec<BTreeSet<String>> {
    let end = Instant::now() + deadline;
    loop {
        let held = round(nodes, ups).await;
        if done(&held) {
            return held;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}; held {held:?}");
        tokio::time::sleep(every).await;
    }
}

/// 3 replicas x 6 upstreams: 2 each, each upstream exactly once (the bucket
/// agrees); a replica that stops renewing loses its leases after
/// `lease_ttl` and the others take them over (3 each) within
/// `lease_ttl + lease_ttl / 3` and a little; a clean stop hands over at once.
#[actix_rt::test]
async fn replicas_share_upstreams_and_take_over() {
    if !up() {
        return;
    }
    let bucket = unique("wsgate_leases_t");
    let ttl = Duration::from_secs(3);
    let every = ttl / 3;
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
    let ups: Vec<String> = (1..=6).map(|i| format!("u{i}")).collect();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Leases::open(&js, &bucket, name, ttl).await.unwrap());
    }

    let held = converge(&mut nodes, &ups, every, Duration::from_secs(20), "2 each", |h| balanced(h, &ups, 2)).await;
    let view = nodes[0].view().await.unwrap();
    assert_eq!(view.nodes.len(), 3);
    for (i, name) in ["n1", "n2", "n3"].iter().enumerate() {
        let in_bucket: BTreeSet<String> =
            view.owners.iter().filter(|(_, o)| o.as_str() == *name).map(|(u, _)| u.clone()).collect();
        assert_eq!(in_bucket, held[i], "the bucket names {name} as the owner");
    }

    // n3 dies: it stops renewing, without letting anything go.
    let dead = nodes.pop().unwrap();
    drop(dead);
    let died = Instant::now();
    converge(&mut nodes, &ups, every, Duration::from_secs(20), "3 each after n3 died", |h| balanced(h, &ups, 3)).await;
    let took = died.elapsed();
    assert!(took <= ttl + ttl / 3 + Duration::from_millis(1500), "takeover took {took:?}");

    // n2 stops cleanly: n1 holds everything within a round or two.
    let mut n2 = nodes.pop().unwrap();
    n2.release_all().await.unwrap();
    let stopped = Instant::now();
    converge(&mut nodes, &ups, every, Duration::from_secs(10), "n1 holds all", |h| balanced(h, &ups, 6)).await;
    assert!(stopped.elapsed() < ttl, "a clean stop hands over before the TTL: {:?}", stopped.elapsed());

    // Reopened with another TTL, the bucket is updated to it.
    Leases::open(&js, &bucket, "n1", Duration::from_secs(5)).await.unwrap();
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_age, Duration::from_secs(5));
    js.delete_key_value(&bucket).await.unwrap();
}
