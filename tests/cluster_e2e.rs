//! The cluster end to end (SPEC §15 `[cluster]`): real binaries sharing
//! real WebSocket feeds through the real NATS JetStream on 127.0.0.1:4222.
//! Skips with one line when NATS is absent. Each test has its own bucket,
//! stream and subject prefix, deleted at the end.

#[path = "support/replicas.rs"]
mod replicas;
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use replicas::{balanced, nats_up, owners, CountingFeed, Names, Replica, Seen, INITIAL, NATS, REDIS, TTL};
use support::{eventually, http_get, metric};

/// 3 replicas x 6 upstreams: each feed connected exactly once, 2 per
/// replica, every replica ready and its `/ws` subscribers getting all 6;
/// after `kill -9` of an owner its upstreams are back within lease_ttl +
/// lease_ttl/3 + backoff initial (+ slack for a loaded machine), and a
/// subscriber on a survivor sees every upstream's seq continue with no gap
/// and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_upstreams_once_and_survive_a_kill() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..6).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["n1", "n2", "n3"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds)).collect();
    for r in &mut replicas {
        r.start();
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    let took = balanced(&feeds, &all, 2.0, Duration::from_secs(30), "6 feeds connected once, 2 per replica").await;
    eprintln!("balanced after {took:?}");
    for (i, f) in feeds.iter().enumerate() {
        // Never two replicas on one feed. (A replica that starts late on a
        // loaded machine joins after the others took its share: they hand
        // those over, so a feed may see a second connection, never at once.)
        assert_eq!(f.max_open(), 1, "u{i} was connected by one replica at a time");
        assert!(f.feed.log.accepted() <= 2, "u{i}: {} connections", f.feed.log.accepted());
    }
    eventually(Duration::from_secs(10), "every replica ready", || replicas.iter().all(Replica::ready)).await;
    let by_owner = owners(&replicas[2]);
    assert_eq!(by_owner, owners(&replicas[0]), "replicas agree on the owners");
    assert!(by_owner.values().all(|o| ["n1", "n2", "n3"].contains(&o.as_str())), "{by_owner:?}");
    // A replica shows the owner's state for upstreams it does not hold.
    let status = replicas[2].status().unwrap();
    assert_eq!(status["cluster"]["node"], "n3");
    for u in status["upstreams"].as_array().unwrap() {
        assert_eq!(u["state"], "connected", "{u}");
    }
    let (_, text) = http_get(replicas[2].addr, "/metrics").unwrap();
    let changes: f64 = (0..6)
        .filter_map(|i| metric(&text, &format!("wsgate_cluster_lease_changes_total{{upstream=\"u{i}\"}} ")))
        .sum();
    assert_eq!(changes, 2.0, "n3 took two leases:\n{text}");

    let seen = Seen::follow(replicas[2].addr).await;
    eventually(Duration::from_secs(10), "the survivor's subscriber gets all 6", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > 20)
    })
    .await;

    let victims: Vec<usize> =
        by_owner.iter().filter(|(_, o)| *o == "n1").map(|(u, _)| u[1..].parse().unwrap()).collect();
    assert_eq!(victims.len(), 2, "{by_owner:?}");
    let accepted: Vec<usize> = victims.iter().map(|&i| feeds[i].feed.log.accepted()).collect();
    replicas[0].kill();
    let killed = Instant::now();
    eventually(Duration::from_secs(15), "the victim's upstreams connected again", || {
        victims.iter().zip(&accepted).all(|(&i, &a)| feeds[i].open() == 1 && feeds[i].feed.log.accepted() == a + 1)
    })
    .await;
    let back = killed.elapsed();
    let bound = TTL + TTL / 3 + INITIAL;
    eprintln!("kill -9: upstreams back after {back:?} (SPEC bound {bound:?})");
    assert!(back <= bound + Duration::from_millis(2500), "back after {back:?}, bound {bound:?}");
    let survivors: Vec<&Replica> = replicas[1..].iter().collect();
    balanced(&feeds, &survivors, 3.0, Duration::from_secs(10), "3 per survivor").await;
    let before: Vec<usize> = victims.iter().map(|i| seen.count(&format!("u{i}"))).collect();
    eventually(Duration::from_secs(10), "the subscriber gets the new owner's messages", || {
        victims.iter().zip(&before).all(|(i, b)| seen.count(&format!("u{i}")) > b + 20)
    })
    .await;
    let checked = seen.assert_consecutive();
    eprintln!("{checked} messages on the survivor, seq consecutive");
    for f in &feeds {
        assert!(f.open() <= 1, "never two links to one feed at the end");
    }
    // The cluster's run id lives in the bucket, and every stored message
    // carries it in its Nats-Msg-Id.
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let run = js.get_key_value(&names.bucket).await.unwrap().get("run").await.unwrap().expect("a run key");
    let run = String::from_utf8(run.to_vec()).unwrap();
    let stream = js.get_stream(&names.stream).await.unwrap();
    let last = stream.get_last_raw_message_by_subject(&format!("{}.u0.>", names.prefix)).await.unwrap();
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| panic!("{:?}", last.headers));
    let seq = last.headers.get("wsgate-seq").unwrap().as_str().to_string();
    assert_eq!(id, format!("u0:{run}:{seq}"));
    for r in &mut replicas {
        r.terminate();
    }
}

/// A rolling restart (n1 stopped and started again, then n2) loses
/// nothing for a subscriber of n3, which stays: every upstream's seq is
/// consecutive throughout, and the cluster is balanced again after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_nothing() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..6).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["r1", "r2", "r3"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds)).collect();
    for r in &mut replicas {
        r.start();
    }
    {
        let all: Vec<&Replica> = replicas.iter().collect();
        balanced(&feeds, &all, 2.0, Duration::from_secs(30), "balanced at start").await;
    }
    let seen = Seen::follow(replicas[2].addr).await;
    eventually(Duration::from_secs(10), "the subscriber gets all 6", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > 10)
    })
    .await;
    for step in 0..2 {
        let stopped = Instant::now();
        replicas[step].terminate();
        {
            let rest: Vec<&Replica> = replicas.iter().filter(|r| r.daemon.is_some()).collect();
            let took = balanced(&feeds, &rest, 3.0, Duration::from_secs(15), "the others hold all").await;
            eprintln!("{} stopped: the others hold all after {:?}", replicas[step].node, stopped.elapsed().max(took));
        }
        replicas[step].start();
        let all: Vec<&Replica> = replicas.iter().collect();
        let took = balanced(&feeds, &all, 2.0, Duration::from_secs(20), "balanced again").await;
        eprintln!("{} started: balanced again after {took:?}", replicas[step].node);
    }
    let counts: Vec<usize> = (0..6).map(|i| seen.count(&format!("u{i}"))).collect();
    eventually(Duration::from_secs(10), "messages keep coming", || {
        (0..6).all(|i| seen.count(&format!("u{i}")) > counts[i] + 10)
    })
    .await;
    let checked = seen.assert_consecutive();
    eprintln!("{checked} messages on the staying replica across the rolling restart, seq consecutive");
    assert_eq!(seen.stopped(), 0, "an upstream that moved between replicas was announced `stopped`");
    for r in &mut replicas {
        r.terminate();
    }
}

/// SIGHUP in cluster mode: an added upstream is shared out and connected
/// once; a removed one is closed and gone from every replica's /status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_upstreams_across_the_cluster() {
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..3).map(|_| CountingFeed::start()).collect();
    let mut replicas: Vec<Replica> =
        ["h1", "h2"].iter().map(|n| Replica::new(dir.path(), n, &names, &feeds[..2])).collect();
    // With Redis, each replica also has a redis sink: it stores only what
    // that replica owns, so each message is stored once across the cluster.
    let redis_up = TcpStream::connect_timeout(&REDIS.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if redis_up {
        for r in &mut replicas {
            r.extra = format!(
                "[[sinks]]\nkind = \"redis\"\nurl = \"redis://{REDIS}\"\nstream = \"{}:{{upstream}}\"\n",
                names.prefix
            );
            r.write(&names, &feeds[..2].iter().enumerate().collect::<Vec<_>>());
        }
    } else {
        eprintln!("skipped (the redis sink part): no Redis on {REDIS}");
    }
    for r in &mut replicas {
        r.start();
    }
    {
        let all: Vec<&Replica> = replicas.iter().collect();
        balanced(&feeds[..2], &all, 1.0, Duration::from_secs(30), "1 each").await;
    }
    let three: Vec<(usize, &CountingFeed)> = feeds.iter().enumerate().collect();
    for r in &replicas {
        r.write(&names, &three);
        r.reload();
    }
    eventually(Duration::from_secs(15), "the added upstream connected once", || {
        feeds.iter().all(|f| f.open() == 1) && replicas.iter().map(|r| r.owned().unwrap_or(0.0)).sum::<f64>() == 3.0
    })
    .await;
    assert_eq!(feeds[2].feed.log.accepted(), 1);
    let two: Vec<(usize, &CountingFeed)> = feeds.iter().enumerate().skip(1).collect();
    for r in &replicas {
        r.write(&names, &two);
        r.reload();
    }
    eventually(Duration::from_secs(15), "u0 closed and gone everywhere", || {
        feeds[0].open() == 0
            && feeds[1..].iter().all(|f| f.open() == 1)
            && replicas.iter().all(|r| r.upstream_names() == ["u1", "u2"])
    })
    .await;
    eventually(Duration::from_secs(10), "ready everywhere", || replicas.iter().all(Replica::ready)).await;
    for r in &mut replicas {
        r.terminate();
    }
    if redis_up {
        let mut conn = redis::Client::open(format!("redis://{REDIS}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis reachable");
        for u in ["u0", "u1", "u2"] {
            let key = format!("{}:{u}", names.prefix);
            type Entry = (String, Vec<(String, String)>);
            let entries: Vec<Entry> =
                redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
            let mut seqs: Vec<u64> = entries
                .iter()
                .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "seq").and_then(|(_, v)| v.parse().ok()))
                .collect();
            let stored = seqs.len();
            seqs.sort_unstable();
            seqs.dedup();
            assert_eq!(seqs.len(), stored, "{u}: every message stored once across the replicas");
            assert!(stored > 10, "{u}: {stored} stored");
            let _: Result<(), _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
        }
    }
}

/// NATS unreachable from a replica (a blackholing proxy between them):
/// past `lease_ttl` it closes the upstreams it holds (another replica may
/// have taken them) and tells its own subscribers they are not connected,
/// never silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_closes_the_upstreams_and_says_so() {
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex};
    if !nats_up() {
        return;
    }
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let feeds: Vec<CountingFeed> = (0..2).map(|_| CountingFeed::start()).collect();
    let proxy = support::FaultProxy::start(NATS.parse().unwrap());
    let mut r = Replica::new(dir.path(), "o1", &names, &feeds);
    let cfg = std::fs::read_to_string(&r.config).unwrap();
    std::fs::write(&r.config, cfg.replace(&format!("nats://{NATS}"), &format!("nats://{}", proxy.addr))).unwrap();
    r.start();
    balanced(&feeds, &[&r], 2.0, Duration::from_secs(30), "both upstreams held").await;

    let mut ws = support::ws_connect(&format!("ws://{}/ws", r.addr), &[]).await.expect("a subscriber");
    let states = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let into = Arc::clone(&states);
    tokio::spawn(async move {
        while let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = ws.next().await {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else { continue };
            if v["event"] == "upstream" {
                let (u, s) = (v["upstream"].as_str().unwrap_or(""), v["state"].as_str().unwrap_or(""));
                into.lock().unwrap().push((u.to_string(), s.to_string()));
            }
        }
    });
    eventually(Duration::from_secs(10), "the initial states", || states.lock().unwrap().len() >= 2).await;
    let cut = Instant::now();
    proxy.blackhole(true);
    eventually(TTL * 6 + Duration::from_secs(10), "the upstreams closed after lease_ttl", || {
        feeds.iter().all(|f| f.open() == 0)
    })
    .await;
    eprintln!("upstreams closed {:?} after NATS was cut (lease_ttl {TTL:?})", cut.elapsed());
    eventually(Duration::from_secs(5), "subscribers told: not connected", || {
        let s = states.lock().unwrap();
        ["u0", "u1"].iter().all(|u| s.iter().rev().find(|(n, _)| n == u).is_some_and(|(_, st)| st != "connected"))
    })
    .await;
    r.kill();
}
