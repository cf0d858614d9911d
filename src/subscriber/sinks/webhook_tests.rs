//! Unit tests of `webhook.rs`.
use std::collections::BTreeMap;
use std::time::SystemTime;

use super::*;
use crate::config::Dur;
use crate::fanout::{DataKind, Incoming};

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        queue_bytes: crate::config::Size::mib(64),
        overflow: crate::config::Overflow::DropOldest,
        url: url.into(),
        batch_size: 100,
        batch_timeout: Dur::secs(1),
        queue_capacity: 10_000,
        headers: BTreeMap::new(),
        auth_token: None,
        auth_token_env: None,
        auth_token_file: None,
        upstreams: Vec::new(),
        topics: Vec::new(),
    }
}

fn status(code: u16) -> Answer {
    Answer::Status { status: code, retry_after: None, detail: String::new() }
}

/// 2xx delivers; network errors, 429 and 5xx retry; everything else drops.
#[test]
fn verdicts() {
    let table = [
        (status(200), Verdict::Delivered),
        (status(204), Verdict::Delivered),
        (status(429), Verdict::Retry),
        (status(500), Verdict::Retry),
        (status(503), Verdict::Retry),
        (Answer::Failed("connection refused".into()), Verdict::Retry),
        (status(400), Verdict::Reject),
        (status(401), Verdict::Reject),
        (status(404), Verdict::Reject),
        (status(413), Verdict::Reject),
        (status(301), Verdict::Reject),
    ];
    for (answer, want) in table {
        assert_eq!(verdict(&answer), want, "{answer:?}");
    }
}

/// The body is a JSON array of the envelopes, in order.
#[test]
fn body_is_a_json_array() {
    let msg = |seq: u64| {
        Delivery::new(
            Incoming {
                upstream: "a".into(),
                topic: "t".into(),
                raw: Bytes::from(format!("{{\"n\":{seq}}}")),
                raw_is_text: true,
                kind: DataKind::Json,
                received_at: SystemTime::UNIX_EPOCH,
                received: Instant::now(),
                conn: 1,
            },
            seq,
        )
    };
    let v: serde_json::Value = serde_json::from_slice(&json_array(&[msg(1), msg(2)])).unwrap();
    assert_eq!(v[0]["seq"], 1);
    assert_eq!(v[1]["data"]["n"], 2);
    assert_eq!(json_array(&[]).as_ref(), b"[]");
}

/// URLs become `http://host:port/path` for awc, with the real Host and
/// userinfo as Basic auth; other schemes and bad headers are refused.
#[test]
fn endpoints() {
    let e = Endpoint::new(&config("http://u:p@hook.example:8080/in?x=1")).unwrap();
    assert_eq!(e.url, "http://hook.example:8080/in?x=1");
    assert_eq!(e.host, "hook.example:8080");
    assert_eq!(e.basic.as_ref().unwrap(), "Basic dTpw");
    assert_eq!(e.shown, "http://hook.example:8080/***", "no userinfo, path or query in logs");
    assert_eq!(e.scrub("POST http://u:p@hook.example:8080/in?x=1: /in"), "POST http://***@hook.example:8080***: ***");

    let e = Endpoint::new(&config("https://hook.example")).unwrap();
    assert_eq!(e.url, "http://hook.example:443/");
    assert_eq!(e.host, "hook.example");
    assert!(e.basic.is_none());

    assert!(Endpoint::new(&config("ftp://hook.example/")).is_err());
    let mut c = config("http://hook.example/");
    c.headers.insert("bad header".into(), "v".into());
    assert!(Endpoint::new(&c).is_err());
}
