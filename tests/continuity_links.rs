//! SPEC §14 upstream side end to end: rotation at `max_connection_age`
//! (make-before-break and break-before-make) and redundant links (`urls`
//! with `redundancy = "all"` and `"failover"`), against real WebSocket
//! servers that stream one numbered feed to every connection, counted at
//! real `/ws` subscribers of the gateway in-process.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use support::venue::{subscribers, Seen, Venue};
use support::{eventually, metric, settings, Feed};
use tokio_tungstenite::tungstenite::Message;
use wsgate::app::Gateway;
use wsgate::config::{Dur, Redundancy, Rotate, UpstreamConfig};
use wsgate::model::LinkState;

const LONG: Duration = Duration::from_secs(30);

fn upstream(url: String) -> UpstreamConfig {
    let mut u = UpstreamConfig::new("a", url);
    u.reconnect.initial = Dur::ms(100);
    u.reconnect.max = Dur::ms(400);
    u.reconnect.jitter = 0.0;
    u.connect_timeout = Dur::secs(5);
    u
}

fn several(urls: Vec<String>, redundancy: Redundancy) -> UpstreamConfig {
    let mut u = upstream(String::new());
    u.urls = urls;
    u.redundancy = redundancy;
    u
}

async fn start(u: UpstreamConfig) -> Gateway {
    support::logs();
    let mut s = settings(vec![u]);
    s.subscribers.queue_capacity = 50_000;
    Gateway::start(s).await.expect("gateway starts")
}

fn state(gw: &Gateway) -> LinkState {
    gw.board.upstreams()[0].state()
}

fn count(gw: &Gateway, series: &str) -> f64 {
    metric(&String::from_utf8(gw.metrics.encode()).unwrap(), series).unwrap_or(0.0)
}

async fn connected(gw: &Gateway) {
    eventually(LONG, "upstream connected", || state(gw) == LinkState::Connected).await;
}

/// Runs `n` envelope subscribers for `run`, calling `during` while they read;
/// returns what each one saw.
async fn watch(gw: &Gateway, n: usize, run: Duration) -> Vec<Seen> {
    let url = format!("ws://{}/ws?upstream=a", gw.addr);
    let subs = subscribers(n, url, run);
    eventually(LONG, "subscribers connected", || count(gw, r#"wsgate_subscribers{kind="websocket"}"#) >= n as f64)
        .await;
    eventually(run + LONG, "subscribers done", || subs.is_finished()).await;
    subs.join().expect("subscriber thread").into_iter().map(|r| r.expect("subscriber ran")).collect()
}

/// Every subscriber saw a long stream with no gap, no duplicate, and only
/// the initial `connected` state event.
fn assert_lossless(seen: &[Seen], at_least: usize) {
    for (i, s) in seen.iter().enumerate() {
        assert!(s.seqs.len() >= at_least, "subscriber {i} saw only {} messages", s.seqs.len());
        assert_eq!((s.missing(), s.duplicates()), (0, 0), "subscriber {i}: (missing, duplicates)");
        assert_eq!(s.states(), vec!["connected".to_string()], "subscriber {i}: state events");
    }
}

/// Make-before-break every 2 s over a 20 s stream: 50 subscribers see no
/// gap, no duplicate and no state change; at least 5 rotations, each old
/// link closed 1000.
#[actix_rt::test]
async fn make_before_break_rotation_loses_nothing() {
    let venue = Venue::start(1, Duration::from_millis(10));
    let mut u = upstream(venue.url(0));
    u.max_connection_age = Dur::secs(2);
    u.rotate = Rotate::MakeBeforeBreak;
    u.on_connect = vec![r#"{"op":"subscribe"}"#.into()];
    let gw = start(u).await;
    connected(&gw).await;
    let seen = watch(&gw, 50, Duration::from_secs(20)).await;
    assert_lossless(&seen, 500);
    let rotations = count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#);
    assert!(rotations >= 5.0, "rotations: {rotations}");
    let closes = venue.log(0).closes();
    assert!(closes.iter().filter(|c| **c == 1000).count() >= 5, "closes seen by the feed: {closes:?}");
    assert!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="rotate",upstream="a"}"#) >= 5.0);
    assert!(gw.board.upstreams()[0].view().conn >= 6, "conn counts every link");
    let subscribed: std::collections::BTreeSet<usize> =
        venue.log(0).received().into_iter().filter(|(_, t)| t.contains("subscribe")).map(|(i, _)| i).collect();
    assert!(subscribed.len() >= 6, "every new link is handshaken: {subscribed:?}");
    assert_eq!(gw.board.upstreams()[0].view().handshake_step, None);
}

/// With `[upstreams.sequence]`, copies are told by the sequence number:
/// rotations lose nothing, and the removed copies are not counted as
/// sequence duplicates or gaps (SPEC §14a).
#[actix_rt::test]
async fn rotation_by_sequence_counts_no_duplicates() {
    let venue = Venue::start(1, Duration::from_millis(10));
    let mut u = upstream(venue.url(0));
    u.max_connection_age = Dur::secs(1);
    u.sequence = Some(toml::from_str("pointer = \"/seq\"").unwrap());
    let gw = start(u).await;
    connected(&gw).await;
    let seen = watch(&gw, 5, Duration::from_secs(6)).await;
    assert_lossless(&seen, 200);
    assert!(count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#) >= 2.0);
    assert_eq!(count(&gw, r#"wsgate_upstream_duplicates_total{upstream="a"}"#), 0.0, "no sequence duplicate");
    assert_eq!(count(&gw, r#"wsgate_upstream_sequence_gaps_total{upstream="a"}"#), 0.0, "no gap");
}

/// A new link that cannot be opened keeps the old one: still connected,
/// still delivering; the rotation is retried and succeeds later.
#[actix_rt::test]
async fn failing_new_link_keeps_the_old() {
    let venue = Venue::start(1, Duration::from_millis(10));
    let mut u = upstream(venue.url(0));
    u.max_connection_age = Dur::ms(800);
    let gw = start(u).await;
    connected(&gw).await;
    venue.refuse(0, true);
    let mut left = false;
    eventually(LONG, "rotation attempts refused", || {
        left |= state(&gw) != LinkState::Connected;
        count(&gw, r#"wsgate_upstream_connect_failures_total{reason="http_5xx",upstream="a"}"#) >= 3.0
    })
    .await;
    assert!(!left, "the upstream left connected while its rotation failed");
    assert_eq!(venue.log(0).accepted(), 1, "the old link stays");
    let before = gw.board.upstreams()[0].messages();
    eventually(LONG, "messages still flow", || gw.board.upstreams()[0].messages() > before + 20).await;
    venue.refuse(0, false);
    eventually(LONG, "the rotation succeeds", || {
        count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#) >= 1.0 && venue.log(0).closes().contains(&1000)
    })
    .await;
    assert_eq!(state(&gw), LinkState::Connected);
}

/// A quiet feed: the new link is live but brings no data when the venue
/// cuts the old one; the new link takes over, with no redial and no state
/// change.
#[actix_rt::test]
async fn quiet_feed_rotation_takes_over_when_the_old_link_is_cut() {
    let cut = Arc::new(AtomicBool::new(false));
    let cut2 = Arc::clone(&cut);
    let feed = Feed::start(move |mut c| {
        let cut = Arc::clone(&cut2);
        async move {
            if c.index == 0 {
                c.send_text(r#"{"type":"hello"}"#).await;
            }
            loop {
                if c.index == 0 && cut.load(Ordering::SeqCst) {
                    return; // the venue drops the old link without a close frame
                }
                match tokio::time::timeout(Duration::from_millis(20), c.recv_text()).await {
                    Ok(None) => return,
                    _ => continue,
                }
            }
        }
    });
    let mut u = upstream(feed.url("/"));
    u.max_connection_age = Dur::secs(1);
    let gw = start(u).await;
    connected(&gw).await;
    let mut left = false;
    eventually(LONG, "the new link is live", || {
        left |= state(&gw) != LinkState::Connected;
        count(&gw, r#"wsgate_upstream_connects_total{upstream="a"}"#) >= 2.0
    })
    .await;
    cut.store(true, Ordering::SeqCst);
    eventually(LONG, "the new link took over", || {
        left |= state(&gw) != LinkState::Connected;
        count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#) >= 1.0
    })
    .await;
    assert!(!left, "the upstream left connected");
    assert_eq!(feed.log.accepted(), 2, "no redial of the old link");
    assert_eq!(count(&gw, r#"wsgate_upstream_disconnects_total{reason="tcp",upstream="a"}"#), 0.0);
}

/// Break-before-make closes the old link 1000 and opens a new one; the
/// subscriber sees no state event beyond the initial one.
#[actix_rt::test]
async fn break_before_make_closes_then_reopens() {
    let venue = Venue::start(1, Duration::from_millis(10));
    let mut u = upstream(venue.url(0));
    u.max_connection_age = Dur::secs(1);
    u.rotate = Rotate::BreakBeforeMake;
    let gw = start(u).await;
    connected(&gw).await;
    let seen = watch(&gw, 1, Duration::from_secs(4)).await;
    assert_eq!(seen[0].states(), vec!["connected".to_string()], "state events");
    assert!(seen[0].duplicates() == 0, "no duplicate");
    assert!(venue.log(0).accepted() >= 3, "reopened: {}", venue.log(0).accepted());
    assert!(venue.log(0).closes().iter().filter(|c| **c == 1000).count() >= 2);
    assert!(count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#) >= 2.0);
}

/// Two redundant links (`redundancy = "all"`) to one stream; one endpoint
/// is killed and restarted mid-stream: subscribers lose nothing and get
/// nothing twice; the upstream stays connected; `/status` lists the links.
#[actix_rt::test]
async fn redundant_links_survive_a_killed_endpoint() {
    let venue = Venue::start(2, Duration::from_millis(10));
    let gw = start(several(vec![venue.url(0), venue.url(1)], Redundancy::All)).await;
    connected(&gw).await;
    eventually(LONG, "both links up", || {
        count(&gw, r#"wsgate_upstream_link_up{link="0",upstream="a"}"#) == 1.0
            && count(&gw, r#"wsgate_upstream_link_up{link="1",upstream="a"}"#) == 1.0
    })
    .await;
    let url = format!("ws://{}/ws?upstream=a", gw.addr);
    let subs = subscribers(5, url, Duration::from_secs(8));
    eventually(LONG, "subscribers connected", || count(&gw, r#"wsgate_subscribers{kind="websocket"}"#) >= 5.0).await;
    let at = venue.sent.load(std::sync::atomic::Ordering::SeqCst);
    eventually(LONG, "stream runs", || venue.sent.load(std::sync::atomic::Ordering::SeqCst) > at + 100).await;
    venue.set_down(0, true);
    eventually(LONG, "link 0 down", || count(&gw, r#"wsgate_upstream_link_up{link="0",upstream="a"}"#) == 0.0).await;
    let view = gw.board.upstreams()[0].view();
    assert_eq!(view.state, LinkState::Connected, "connected while any link is");
    let links = view.links.expect("links listed");
    assert_eq!((links.len(), links[1].state, links[1].index), (2, "connected", 1));
    assert!(links[0].url.starts_with("ws://127.0.0.1:"), "{links:?}");
    venue.set_down(0, false);
    eventually(LONG, "link 0 back", || count(&gw, r#"wsgate_upstream_link_up{link="0",upstream="a"}"#) == 1.0).await;
    eventually(LONG, "subscribers done", || subs.is_finished()).await;
    let seen: Vec<Seen> = subs.join().unwrap().into_iter().map(|r| r.expect("subscriber ran")).collect();
    assert_lossless(&seen, 300);
    assert!(gw.board.upstreams()[0].view().conn >= 3, "links share the conn counter");
    let firsts: f64 =
        (0..2).map(|l| count(&gw, &format!(r#"wsgate_upstream_link_first_total{{link="{l}",upstream="a"}}"#))).sum();
    assert!(firsts > 0.0, "first copies counted");
}

/// `redundancy = "failover"`: the first URL refuses, the upstream moves to
/// the second and shows which one is in use.
#[actix_rt::test]
async fn failover_moves_to_the_next_url() {
    let venue = Venue::start(2, Duration::from_millis(10));
    venue.set_down(0, true);
    let gw = start(several(vec![venue.url(0), venue.url(1)], Redundancy::Failover)).await;
    connected(&gw).await;
    let links = gw.board.upstreams()[0].view().links.expect("links listed");
    assert_eq!((links[0].state, links[1].state), ("standby", "connected"), "{links:?}");
    assert_eq!(venue.log(1).accepted(), 1);
    assert!(!venue.log(0).attempts().is_empty(), "the first URL was tried first");
}

/// A feed whose every new connection starts `ahead` numbers beyond the
/// newest number sent, while the older connections go on with their
/// backlog slowly (every 30 ms; the newest sends every 10 ms): at every
/// rotation the new link is ahead of the old one, and the old one still
/// has `ahead` numbers to bring before the streams meet. A negative
/// `ahead` starts the new connection behind (a replay on connect), and it
/// catches up.
fn head_start_feed(ahead: i64) -> Feed {
    let head = Arc::new(AtomicU64::new(0));
    let newest = Arc::new(AtomicUsize::new(0));
    Feed::start(move |mut c| {
        let (head, newest) = (Arc::clone(&head), Arc::clone(&newest));
        async move {
            let start = head.load(Ordering::SeqCst) as i64 + ahead + 1;
            let mut next = if c.index == 0 { 1 } else { start.max(1) as u64 };
            newest.fetch_max(c.index, Ordering::SeqCst);
            loop {
                let every = if newest.load(Ordering::SeqCst) == c.index { 10 } else { 30 };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(every)) => {
                        if !c.send_text(format!(r#"{{"type":"tick","seq":{next}}}"#)).await {
                            return;
                        }
                        head.fetch_max(next, Ordering::SeqCst);
                        next += 1;
                    }
                    frame = c.ws.next() => match frame {
                        Some(Ok(Message::Close(cf))) => {
                            if let Some(cf) = cf {
                                c.log.closes.lock().unwrap().push(u16::from(cf.code));
                            }
                            return;
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        }
    })
}

/// Rotations where the new link starts ahead of an old link with a
/// backlog: every subscriber sees every number once and in order, with no
/// `upstream_gap` event; each old link is closed 1000 once the streams met.
async fn head_start_rotation(ahead: i64, sequence: bool) {
    let feed = head_start_feed(ahead);
    let mut u = upstream(feed.url("/"));
    u.max_connection_age = Dur::secs(1);
    if sequence {
        u.sequence = Some(toml::from_str("pointer = \"/seq\"").unwrap());
    }
    let gw = start(u).await;
    connected(&gw).await;
    let seen = watch(&gw, 3, Duration::from_secs(6)).await;
    assert_lossless(&seen, 300);
    for (i, s) in seen.iter().enumerate() {
        assert!(s.seqs.windows(2).all(|w| w[0] < w[1]), "subscriber {i}: out of order: {:?}", s.seqs);
        assert!(s.events.iter().all(|e| e["event"] != "upstream_gap"), "subscriber {i}: {:?}", s.events);
    }
    let rotations = count(&gw, r#"wsgate_upstream_rotations_total{upstream="a"}"#);
    assert!(rotations >= 3.0, "rotations: {rotations}");
    assert_eq!(count(&gw, r#"wsgate_upstream_sequence_gaps_total{upstream="a"}"#), 0.0, "no gap");
    assert_eq!(count(&gw, r#"wsgate_upstream_duplicates_total{upstream="a"}"#), 0.0, "no sequence duplicate");
    let closes = feed.log.closes();
    assert!(closes.iter().filter(|c| **c == 1000).count() >= 3, "closes seen by the feed: {closes:?}");
}

/// With `[upstreams.sequence]`: the switch waits for the streams to meet
/// (by sequence number).
#[actix_rt::test]
async fn new_link_ahead_switches_in_order_by_sequence() {
    head_start_rotation(20, true).await;
}

/// Without a sequence: the streams meet by payload hash.
#[actix_rt::test]
async fn new_link_ahead_switches_in_order_by_payload() {
    head_start_rotation(20, false).await;
}

/// A new link that starts behind (it replays the last 20 numbers) and
/// catches up: the old link is read until then, so none of the replayed
/// numbers is delivered twice.
#[actix_rt::test]
async fn new_link_behind_catches_up_without_duplicates() {
    head_start_rotation(-20, false).await;
}
