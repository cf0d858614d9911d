//! Reload by difference (SPEC §9): in-process through `Gateway::reload`, and
//! through SIGHUP on the real binary.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    eventually, eventually_blocking, free_port, http_get, metric, next_json, settings, ticking_feed, ws_connect, Daemon,
};
use wsgate::app::Gateway;
use wsgate::config::{Dur, ReconnectConfig, UpstreamConfig};
use wsgate::model::LinkState;

const LONG: Duration = Duration::from_secs(20);

fn state(gw: &Gateway, name: &str) -> Option<LinkState> {
    gw.board.upstreams().iter().find(|u| u.name == name).map(|u| u.state())
}

/// Added upstreams start, removed ones stop (followers get `stopped`, status
/// and series go), changed ones restart with seq continuing, and the
/// unchanged one keeps its link: no reconnect, no seq reset, no event.
#[actix_rt::test]
async fn reload_applies_the_difference() {
    support::logs();
    let (fa, fb, fc, fd) = (
        ticking_feed(Duration::from_millis(20)),
        ticking_feed(Duration::from_millis(20)),
        ticking_feed(Duration::from_millis(20)),
        ticking_feed(Duration::from_millis(20)),
    );
    let (a, b, c) = (
        UpstreamConfig::new("a", fa.url("/")),
        UpstreamConfig::new("b", fb.url("/")),
        UpstreamConfig::new("c", fc.url("/")),
    );
    let mut gw = Gateway::start(settings(vec![a.clone(), b.clone(), c])).await.unwrap();
    eventually(LONG, "all connected", || gw.board.upstreams().iter().all(|u| u.state() == LinkState::Connected)).await;

    let mut sub = ws_connect(&format!("ws://{}/ws", gw.addr), &[]).await.unwrap();
    let mut last_seq = std::collections::HashMap::new();
    // Read the initial state events and some data.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let v = next_json(&mut sub, LONG).await;
        if let Some(seq) = v["seq"].as_u64() {
            last_seq.insert(v["upstream"].as_str().unwrap().to_string(), seq);
        }
    }

    let mut b2 = b.clone();
    b2.heartbeat.interval = Dur::secs(7);
    let d = UpstreamConfig::new("d", fd.url("/"));
    let report = gw.reload(settings(vec![a, b2, d])).await.unwrap();
    assert_eq!(report.unchanged, ["a"]);
    assert_eq!(report.restarted, ["b"]);
    assert_eq!(report.added, ["d"]);
    assert_eq!(report.removed, ["c"]);

    eventually(LONG, "b and d connected", || {
        state(&gw, "b") == Some(LinkState::Connected) && state(&gw, "d") == Some(LinkState::Connected)
    })
    .await;
    assert_eq!(state(&gw, "c"), None, "c still in /status");
    let text = String::from_utf8(gw.metrics.encode()).unwrap();
    assert!(!text.contains(r#"upstream="c""#), "c's series remain");

    // Follow the stream for a while: a continues without a gap or an event;
    // b's seq continues after its restart; c says stopped once.
    let mut events = Vec::new();
    let mut seen_b_after = false;
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until || !seen_b_after {
        let v = next_json(&mut sub, LONG).await;
        let up = v["upstream"].as_str().unwrap_or("").to_string();
        if v["event"] == "upstream" {
            events.push((up, v["state"].as_str().unwrap().to_string()));
            continue;
        }
        let seq = v["seq"].as_u64().unwrap();
        if let Some(prev) = last_seq.get(&up) {
            if up == "a" {
                assert_eq!(seq, prev + 1, "a's seq jumped: unchanged upstream disturbed");
            } else {
                assert!(seq > *prev, "{up}'s seq went back from {prev} to {seq}");
            }
        }
        if up == "b" {
            seen_b_after = true;
        }
        last_seq.insert(up, seq);
    }
    assert!(!events.iter().any(|(u, _)| u == "a"), "events for the unchanged upstream: {events:?}");
    assert!(events.contains(&("c".into(), "stopped".into())), "{events:?}");
    assert_eq!(fa.log.accepted(), 1, "the unchanged upstream reconnected");
    assert_eq!(fb.log.accepted(), 2, "the changed upstream did not restart");
    let text = String::from_utf8(gw.metrics.encode()).unwrap();
    assert_eq!(metric(&text, r#"wsgate_upstream_disconnects_total{reason="reload",upstream="b"}"#), Some(1.0));
    gw.shutdown().await;
}

/// An upstream that gave up (`stopped` after max_elapsed) comes back on reload.
#[actix_rt::test]
async fn reload_restarts_stopped_upstreams() {
    let mut u = UpstreamConfig::new("gone", format!("ws://127.0.0.1:{}/", free_port()));
    u.reconnect = ReconnectConfig {
        initial: Dur::ms(20),
        max: Dur::ms(20),
        max_elapsed: Dur::ms(100),
        jitter: 0.0,
        ..ReconnectConfig::default()
    };
    let mut gw = Gateway::start(settings(vec![u.clone()])).await.unwrap();
    eventually(LONG, "stopped", || state(&gw, "gone") == Some(LinkState::Stopped)).await;
    let report = gw.reload(settings(vec![u])).await.unwrap();
    assert_eq!(report.restarted, ["gone"]);
    eventually(LONG, "trying again", || state(&gw, "gone") != Some(LinkState::Stopped)).await;
    gw.shutdown().await;
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// SIGHUP on the real binary: an invalid file is rejected and the running
/// config stays (no reconnect); a valid one adds an upstream.
#[test]
fn sighup_reloads_or_keeps_the_running_config() {
    let feed = ticking_feed(Duration::from_millis(50));
    let other = ticking_feed(Duration::from_millis(50));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.toml");
    let base = format!("[server]\nlisten = \"{addr}\"\n[[upstreams]]\nname = \"feed\"\nurl = \"{}\"\n", feed.url("/"));
    std::fs::write(&path, &base).unwrap();
    let log = dir.path().join("stderr.log");
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .args(["run", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let logged = |what: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(what);
    eventually_blocking(LONG, "ready", || http_get(addr, "/readyz").map(|(s, _)| s == 200).unwrap_or(false));

    std::fs::write(&path, format!("{base}[upstreams.heartbeat]\ninterval = \"5 parsecs\"\n")).unwrap();
    signal(&daemon.0, "-HUP");
    eventually_blocking(LONG, "the invalid reload rejected", || logged("Reload rejected"));
    assert!(logged("upstreams[0].heartbeat.interval"), "the rejection does not name the key");
    let status = |a| http_get(a, "/status").map(|(_, b)| b).unwrap_or_default();
    std::fs::write(&path, format!("{base}[[upstreams]]\nname = \"other\"\nurl = \"{}\"\n", other.url("/"))).unwrap();
    signal(&daemon.0, "-HUP");
    eventually_blocking(LONG, "other connected", || {
        let s = status(addr);
        s.contains(r#""name":"other""#) && s.matches(r#""state":"connected""#).count() == 2
    });
    assert_eq!(feed.log.accepted(), 1, "a reload reconnected the unchanged upstream");
    assert_eq!(http_get(addr, "/healthz").unwrap().0, 200);
}
