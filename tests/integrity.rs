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
