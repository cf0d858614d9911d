//! SPEC §13 against real WebSocket feeds: handshake steps (and the three
//! venue examples of config/examples/, each feed verifying the signature
//! exactly as the venue documents it), `token_command`, sequence gaps and
//! duplicates, freshness, the reconnect governor, `conn` in envelopes.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::{eventually, next_json, ws_connect, Client, Conn, Feed};
use wsgate::app::Gateway;
use wsgate::config::{self, ConfigSource, Dur, HandshakeStep, Matcher, Secret, SecretSpec, Settings, UpstreamConfig};
use wsgate::model::LinkState;

const LONG: Duration = Duration::from_secs(30);

fn hmac_sha256(key: &str, text: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An example of config/examples/ pointed at `feed_url`, with test secrets.
fn example(file: &str, feed_url: String, secrets: &[(&str, &str)]) -> Settings {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples").join(file);
    let mut s = config::load_with_env(&ConfigSource::File(path), std::iter::empty()).expect("the example loads");
    s.server.listen = "127.0.0.1:0".into();
    let u = &mut s.upstreams[0];
    u.url = feed_url;
    for (name, value) in secrets {
        u.secrets.insert(name.to_string(), SecretSpec { value: Some(Secret::new(*value)), ..Default::default() });
    }
    s
}

async fn start(s: Settings) -> Gateway {
    support::logs();
    Gateway::start(s).await.expect("gateway starts")
}

fn state(gw: &Gateway, name: &str) -> Option<LinkState> {
    gw.board.upstreams().iter().find(|u| u.name == name).map(|u| u.state())
}

fn view(gw: &Gateway, name: &str) -> Value {
    let u = gw.board.upstreams().into_iter().find(|u| u.name == name).expect("upstream");
    serde_json::to_value(u.view()).unwrap()
}

/// Reads from `ws` until a data message (not an event) arrives.
async fn next_data(ws: &mut Client) -> Value {
    loop {
        let v = next_json(ws, LONG).await;
        if v.get("event").is_none() {
            return v;
        }
    }
}

/// The feed side of a venue: reads the login, checks it with `verify`,
/// answers, then answers the subscription and sends one data message.
async fn venue(mut c: Conn, go: Arc<AtomicBool>, verify: fn(&Value) -> bool, replies: [Value; 4]) {
    let [ok, bad, sub_ok, data] = replies;
    let Some(login) = c.recv_text().await else { return };
    // The test's subscriber is connected before anything is delivered.
    while !go.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let login: Value = serde_json::from_str(&login).unwrap_or(Value::Null);
    if !verify(&login) {
        c.send_text(bad.to_string()).await;
        return c.drain().await;
    }
    c.send_text(ok.to_string()).await;
    // A reply that matches no step: data under [[upstreams.handshake]].
    c.send_text(json!({"note": "during handshake"}).to_string()).await;
    if c.recv_text().await.is_none() {
        return;
    }
    c.send_text(sub_ok.to_string()).await;
    c.send_text(data.to_string()).await;
    c.drain().await
}

/// OKX: sign = Base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify")).
fn okx_verify(login: &Value) -> bool {
    let a = &login["args"][0];
    let ts = a["timestamp"].as_str().unwrap_or("");
    let want = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256("okx-secret", &format!("{ts}GET/users/self/verify")));
    login["op"] == "login" && a["apiKey"] == "okx-key" && a["passphrase"] == "okx-pass" && a["sign"] == want
}

/// Deribit: signature = HEX(HMAC-SHA256(secret, timestamp + "\n" + nonce + "\n" + data)).
fn deribit_verify(login: &Value) -> bool {
    let p = &login["params"];
    let text =
        format!("{}\n{}\n{}", p["timestamp"], p["nonce"].as_str().unwrap_or(""), p["data"].as_str().unwrap_or(""));
    login["method"] == "public/auth"
        && p["grant_type"] == "client_signature"
        && p["client_id"] == "deribit-id"
        && p["signature"] == hex(&hmac_sha256("deribit-secret", &text))
}

/// Binance: signature = hex(HMAC-SHA256(secret, "apiKey=...&timestamp=...")), parameters sorted.
fn binance_verify(login: &Value) -> bool {
    let p = &login["params"];
    let text = format!("apiKey={}&timestamp={}", p["apiKey"].as_str().unwrap_or(""), p["timestamp"]);
    login["method"] == "account.status"
        && p["apiKey"] == "binance-key"
        && p["signature"] == hex(&hmac_sha256("binance-secret", &text))
}

/// Each shipped venue example logs in (the feed verifies the signature as
/// the venue documents it), subscribes, and delivers data; the step replies
/// are not delivered, another reply during the handshake is. A wrong
/// secret fails the login step: reason `auth`, and `last_error` names the step.
#[actix_rt::test]
async fn venue_examples_log_in_and_subscribe() {
    /// File, test secrets, the venue's check, its replies (ok, bad, subscribed, data).
    type Case = (&'static str, Vec<(&'static str, &'static str)>, fn(&Value) -> bool, Value, Value, Value, Value);
    let cases: Vec<Case> = vec![
        (
            "okx.toml",
            vec![("api_key", "okx-key"), ("api_secret", "okx-secret"), ("passphrase", "okx-pass")],
            okx_verify,
            json!({"event":"login","code":"0","msg":""}),
            json!({"event":"error","code":"60009","msg":"Login failed."}),
            json!({"event":"subscribe","arg":{"channel":"orders","instType":"ANY"}}),
            json!({"arg":{"channel":"orders"},"data":[{"ordId":"1"}]}),
        ),
        (
            "deribit.toml",
            vec![("client_id", "deribit-id"), ("client_secret", "deribit-secret")],
            deribit_verify,
            json!({"jsonrpc":"2.0","id":1,"result":{"access_token":"x","token_type":"bearer"}}),
            json!({"jsonrpc":"2.0","id":1,"error":{"code":13004,"message":"invalid_credentials"}}),
            json!({"jsonrpc":"2.0","id":2,"result":["user.orders.any.any.raw"]}),
            json!({"jsonrpc":"2.0","method":"subscription","params":{"channel":"user.orders.any.any.raw","data":{}}}),
        ),
        (
            "binance.toml",
            vec![("api_key", "binance-key"), ("api_secret", "binance-secret")],
            binance_verify,
            json!({"id":"wsgate-login","status":200,"result":{"balances":[]}}),
            json!({"id":"wsgate-login","status":400,"error":{"code":-1022,"msg":"Signature for this request is not valid."}}),
            json!({"id":"wsgate-subscribe","status":200,"result":{}}),
            json!({"event":{"e":"executionReport","s":"BTCUSDT"}}),
        ),
    ];
    for (file, secrets, verify, ok, bad, sub_ok, data) in cases {
        let replies = [ok.clone(), bad.clone(), sub_ok.clone(), data.clone()];
        let go = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&go);
        let feed = Feed::start(move |c| venue(c, Arc::clone(&flag), verify, replies.clone()));
        let settings = example(file, feed.url("/"), &secrets);
        let name = settings.upstreams[0].name.clone();
        let gw = start(settings).await;
        let mut ws = ws_connect(&format!("ws://{}/ws", gw.addr), &[]).await.unwrap();
        go.store(true, Ordering::SeqCst);
        let first = next_data(&mut ws).await;
        assert_eq!(first["data"], json!({"note": "during handshake"}), "{file}: an unmatched reply is data");
        let got = next_data(&mut ws).await;
        assert_eq!(got["data"], data, "{file}: the feed's data, not a step reply");
        eventually(LONG, "connected", || state(&gw, &name) == Some(LinkState::Connected)).await;
        assert_eq!(view(&gw, &name)["handshake_step"], Value::Null);
        gw.shutdown().await;

        // The wrong secret: the feed refuses the login.
        let replies = [ok.clone(), bad.clone(), sub_ok.clone(), data.clone()];
        let go = Arc::new(AtomicBool::new(true));
        let feed = Feed::start(move |c| venue(c, Arc::clone(&go), verify, replies.clone()));
        let mut wrong = secrets.clone();
        for (k, v) in wrong.iter_mut() {
            if k.contains("secret") {
                *v = "not-the-secret";
            }
        }
        let gw = start(example(file, feed.url("/"), &wrong)).await;
        let counter = format!(r#"wsgate_upstream_connect_failures_total{{reason="auth",upstream="{name}"}}"#);
        eventually(LONG, "an auth failure", || {
            support::metric(&String::from_utf8(gw.metrics.encode()).unwrap(), &counter).unwrap_or(0.0) >= 1.0
        })
        .await;
        let err = view(&gw, &name)["last_error"].as_str().unwrap_or("").to_string();
        assert!(err.starts_with("auth: ") && err.contains("step \""), "{file}: names the step: {err}");
        gw.shutdown().await;
    }
}

/// A step without `expect` is followed at once; a non-auth step that times
/// out is reason `handshake` and names the step; while it waits, `/status`
/// shows `handshake_step`.
#[actix_rt::test]
async fn step_timeout_is_handshake_and_shown_in_status() {
    let feed = Feed::start(|mut c| async move { c.drain().await });
    let mut u = UpstreamConfig::new("quiet", feed.url("/"));
    let step = |name: &str, expect: bool, timeout: Dur| HandshakeStep {
        name: Some(name.into()),
        send: format!(r#"{{"op":"{name}","id":"{{{{uuid}}}}"}}"#),
        expect: expect.then(|| Matcher { pointer: "/ok".into(), equals: true.into() }),
        fail: None,
        timeout,
        auth: false,
    };
    u.handshake = vec![step("hello", false, Dur::secs(5)), step("wait-forever", true, Dur::ms(1500))];
    let gw = start(support::settings(vec![u])).await;
    eventually(LONG, "waiting on the second step", || view(&gw, "quiet")["handshake_step"] == "wait-forever").await;
    assert_eq!(state(&gw, "quiet"), Some(LinkState::Authenticating));
    let counter = r#"wsgate_upstream_connect_failures_total{reason="handshake",upstream="quiet"}"#;
    eventually(LONG, "a handshake failure", || {
        support::metric(&String::from_utf8(gw.metrics.encode()).unwrap(), counter).unwrap_or(0.0) >= 1.0
    })
    .await;
    let err = view(&gw, "quiet")["last_error"].as_str().unwrap_or("").to_string();
    assert!(err.contains("\"wait-forever\"") && err.contains("no reply within"), "{err}");
    let sent: Vec<String> = feed.log.received().into_iter().map(|(_, t)| t).collect();
    assert!(sent.iter().any(|t| t.contains("\"op\":\"hello\"")), "{sent:?}");
    gw.shutdown().await;
}

/// `token_command`: its output is the token ({{token}} here), never logged.
#[actix_rt::test]
async fn token_command_output_is_the_token() {
    let feed = Feed::start(|mut c| async move {
        if let Some(login) = c.recv_text().await {
            let ok = login.contains("\"cmd-token-42\"");
            c.send_text(json!({"ok": ok}).to_string()).await;
            c.send_text(json!({"type": "data"}).to_string()).await;
        }
        c.drain().await
    });
    let mut u = UpstreamConfig::new("cmd", feed.url("/"));
    u.token_command = Some(config::TokenCommand {
        command: vec!["sh".into(), "-c".into(), "echo cmd-token-42".into()],
        timeout: Dur::secs(5),
        refresh: Dur::secs(0),
    });
    u.handshake = vec![HandshakeStep {
        name: Some("login".into()),
        send: r#"{"token":"{{token}}"}"#.into(),
        expect: Some(Matcher { pointer: "/ok".into(), equals: true.into() }),
        fail: Some(Matcher { pointer: "/ok".into(), equals: false.into() }),
        timeout: Dur::secs(5),
        auth: true,
    }];
    let gw = start(support::settings(vec![u])).await;
    eventually(LONG, "connected with the command's token", || state(&gw, "cmd") == Some(LinkState::Connected)).await;
    gw.shutdown().await;
}

/// Sequence per SPEC §13: a gap is announced (`upstream_gap`) before the
/// message that reveals it, a duplicate is dropped for every subscriber, a
/// gap across a reconnect says so; gaps, missed and duplicates are counted;
/// `conn` numbers the links in every envelope.
#[actix_rt::test]
async fn sequence_gaps_duplicates_and_conn() {
    let go = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&go);
    let feed = Feed::start(move |mut c| {
        let go = Arc::clone(&flag);
        async move {
            while !go.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let seqs: &[u64] = if c.index == 0 { &[1, 2, 5, 5, 6] } else { &[9] };
            for s in seqs {
                c.send_text(json!({"type": "t", "s": s}).to_string()).await;
            }
            if c.index == 0 {
                let _ = futures_util::SinkExt::close(&mut c.ws).await;
                return;
            }
            c.drain().await
        }
    });
    let mut u = UpstreamConfig::new("seq", feed.url("/"));
    u.sequence = Some(config::SequenceConfig {
        pointer: "/s".into(),
        key: String::new(),
        on_gap: config::OnProblem::Event,
        max_keys: 10,
        reset_on_reconnect: false,
    });
    u.reconnect.initial = Dur::ms(50);
    let gw = start(support::settings(vec![u])).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", gw.addr), &[]).await.unwrap();
    go.store(true, Ordering::SeqCst);
    let mut got = Vec::new();
    while got.len() < 7 {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "upstream" {
            continue;
        }
        got.push(v);
    }
    let brief: Vec<String> = got
        .iter()
        .map(|v| match v["event"].as_str() {
            Some(e) => format!(
                "{e}:{}->{}{}",
                v["expected"],
                v["got"],
                if v["across_reconnect"] == true { ":across" } else { "" }
            ),
            None => format!("{}@{}", v["data"]["s"], v["conn"]),
        })
        .collect();
    assert_eq!(brief, ["1@1", "2@1", "upstream_gap:3->5", "5@1", "6@1", "upstream_gap:7->9:across", "9@2"]);
    let text = String::from_utf8(gw.metrics.encode()).unwrap();
    for (series, want) in [
        (r#"wsgate_upstream_sequence_gaps_total{upstream="seq"}"#, 2.0),
        (r#"wsgate_upstream_sequence_missed_total{upstream="seq"}"#, 4.0),
        (r#"wsgate_upstream_duplicates_total{upstream="seq"}"#, 1.0),
    ] {
        assert_eq!(support::metric(&text, series), Some(want), "{series}");
    }
    assert_eq!(view(&gw, "seq")["conn"], 2);
    gw.shutdown().await;
}

/// `on_gap = "reconnect"`: the gap replaces the link (reason `sequence`)
/// and the new link's first number sets the expectation (no gap event for
/// the snapshot that jumps ahead).
#[actix_rt::test]
async fn gap_resync_reconnects() {
    let feed = Feed::start(|mut c| async move {
        let seqs: &[u64] = if c.index == 0 { &[1, 3] } else { &[100, 101] };
        for s in seqs {
            c.send_text(json!({"type": "t", "s": s}).to_string()).await;
        }
        c.drain().await
    });
    let mut u = UpstreamConfig::new("rs", feed.url("/"));
    u.sequence = Some(config::SequenceConfig {
        pointer: "/s".into(),
        key: String::new(),
        on_gap: config::OnProblem::Reconnect,
        max_keys: 10,
        reset_on_reconnect: false,
    });
    u.reconnect.initial = Dur::ms(50);
    let gw = start(support::settings(vec![u])).await;
    let series = r#"wsgate_upstream_disconnects_total{reason="sequence",upstream="rs"}"#;
    eventually(LONG, "a resync", || {
        support::metric(&String::from_utf8(gw.metrics.encode()).unwrap(), series) == Some(1.0)
    })
    .await;
    eventually(LONG, "the second link's messages", || gw.board.upstreams()[0].messages() == 4).await;
    let text = String::from_utf8(gw.metrics.encode()).unwrap();
    assert_eq!(support::metric(&text, r#"wsgate_upstream_sequence_gaps_total{upstream="rs"}"#), Some(1.0));
    gw.shutdown().await;
}

/// Freshness: a watched topic with no message is `stale` after max_age
/// (event with its age, gauge 1), `fresh` when messages return.
#[actix_rt::test]
async fn stale_and_fresh_topics() {
    let go = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&go);
    let feed = Feed::start(move |mut c| {
        let go = Arc::clone(&flag);
        async move {
            while !go.load(Ordering::SeqCst) {
                if !c.send_text(json!({"type": "book"}).to_string()).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.send_text(json!({"type": "trade"}).to_string()).await;
            c.drain().await
        }
    });
    let mut u = UpstreamConfig::new("fr", feed.url("/"));
    u.freshness = config::FreshnessConfig {
        max_age: Dur::ms(300),
        topics: vec!["trade".into()],
        on_stale: config::OnProblem::Event,
        max_topics: 10,
    };
    let gw = start(support::settings(vec![u])).await;
    let mut ws = ws_connect(&format!("ws://{}/ws?topic=trade", gw.addr), &[]).await.unwrap();
    let stale = loop {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "stale" {
            break v;
        }
    };
    assert_eq!((stale["upstream"].as_str(), stale["topic"].as_str()), (Some("fr"), Some("trade")));
    assert!(stale["age_ms"].as_u64().unwrap_or(0) >= 300, "{stale}");
    let gauge = r#"wsgate_topic_stale{topic="trade",upstream="fr"}"#;
    eventually(LONG, "the gauge", || {
        support::metric(&String::from_utf8(gw.metrics.encode()).unwrap(), gauge) == Some(1.0)
    })
    .await;
    go.store(true, Ordering::SeqCst);
    let fresh = loop {
        let v = next_json(&mut ws, LONG).await;
        if v["event"] == "fresh" {
            break v;
        }
    };
    assert_eq!(fresh["topic"], "trade");
    assert_eq!(next_data(&mut ws).await["topic"], "trade", "the fresh event comes before the message");
    gw.shutdown().await;
}

/// The governor: 50 upstreams of one host connect, are all dropped at once,
/// and reconnect at `per_host_rate` (burst = rate), never more than
/// `max_in_flight` handshakes at once (measured at the feed, which holds
/// each handshake 100 ms); every connect is observed in
/// `wsgate_connect_wait_seconds`.
#[test]
fn governor_rations_reconnects() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::time::Instant;

    struct Seen {
        in_flight: AtomicUsize,
        most: AtomicUsize,
        accepted: Mutex<Vec<Instant>>,
        /// Links of an older generation are dropped (a blip).
        generation: AtomicUsize,
    }
    let seen = Arc::new(Seen {
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        accepted: Mutex::new(Vec::new()),
        generation: AtomicUsize::new(0),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let server_seen = Arc::clone(&seen);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let seen = Arc::clone(&server_seen);
                tokio::spawn(async move {
                    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most.fetch_max(now, Ordering::SeqCst);
                    seen.accepted.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let ws = tokio_tungstenite::accept_async(tcp).await;
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let Ok(mut ws) = ws else { return };
                    let generation = seen.generation.load(Ordering::SeqCst);
                    use futures_util::StreamExt;
                    loop {
                        if seen.generation.load(Ordering::SeqCst) != generation {
                            return; // dropped without a close frame: a blip
                        }
                        tokio::select! {
                            m = ws.next() => if m.is_none() { return },
                            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        }
                    }
                });
            }
        });
    });
    let addr: std::net::SocketAddr = rx.recv().unwrap();
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let ups: Vec<UpstreamConfig> = (0..50)
            .map(|i| {
                let mut u = UpstreamConfig::new(format!("u{i}"), format!("ws://{addr}/"));
                u.reconnect.initial = Dur::ms(10);
                u.reconnect.max = Dur::ms(20);
                u
            })
            .collect();
        let mut s = support::settings(ups);
        s.reconnect_governor = config::GovernorConfig { max_in_flight: 4, per_host_rate: "10/s".into() };
        let gw = start(s).await;
        eventually(Duration::from_secs(60), "all 50 connected", || gw.board.readiness().is_ok()).await;
        let first_round = seen.accepted.lock().unwrap().len();
        assert_eq!(first_round, 50);
        // Drop every link at once; count the reconnects' accept times.
        let dropped_at = Instant::now();
        seen.generation.store(1, Ordering::SeqCst);
        eventually(Duration::from_secs(60), "all 50 back", || seen.accepted.lock().unwrap().len() >= 100).await;
        let times: Vec<Duration> = seen.accepted.lock().unwrap()[first_round..]
            .iter()
            .map(|t| t.saturating_duration_since(dropped_at))
            .collect();
        let within_first_second = times.iter().filter(|t| **t < Duration::from_millis(900)).count();
        assert!(within_first_second <= 19, "burst 10 + 10/s: {within_first_second} reconnects in the first 0.9 s");
        let last = times.iter().max().copied().unwrap_or_default();
        assert!(last >= Duration::from_millis(3800), "50 reconnects at 10/s (burst 10) take 4 s, took {last:?}");
        let most = seen.most.load(Ordering::SeqCst);
        assert!(most <= 4, "{most} handshakes in flight at once, over max_in_flight 4");
        let text = String::from_utf8(gw.metrics.encode()).unwrap();
        let waits = support::metric(&text, "wsgate_connect_wait_seconds_count").unwrap_or(0.0);
        assert!(waits >= 100.0, "every connect observed: {waits}");
        gw.shutdown().await;
    });
}
