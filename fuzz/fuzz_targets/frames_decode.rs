//! Upstream frames -> reassembly -> decode -> envelope, as the upstream
//! actor runs them on outside data (SPEC §4, §10).
//!
//! Input layout: byte 0 picks the cap, byte 1 the decode config (bits 0-1
//! format, bit 2 the `invalid` policy, bits 3-7 the topic pointer); the
//! rest is a sequence of fragments, each `tag, len, payload[len]`. Every
//! completed message is decoded; every message that would be published
//! gets an envelope.
//!
//! Checked, beyond "no panic":
//! - a completed message is never over the cap and text is UTF-8; an
//!   oversize error only when the bytes really exceed the cap;
//! - JSON is judged by the grammar: valid JSON is never called invalid;
//! - the topic is what `serde_json::Value::pointer` finds (a string as is,
//!   another value as its compact JSON, absent -> "");
//! - the envelope is valid JSON whose `data` is the message (json: the
//!   same value; text: the same string; binary: its base64).

#![no_main]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wsgate::config::{DecodeConfig, DecodeFormat, InvalidPolicy};
use wsgate::fanout::{DataKind, Delivery, Incoming};
use wsgate::transport::reassembly::{Fragment, FrameError, Kind, Reassembler};
use wsgate::upstream::decode::{Decoded, Decoder};

/// Pointers worth walking: the default, nested, arrays, escapes, odd ones.
const POINTERS: &[&str] =
    &["/type", "", "/", "/a/b", "/a/0", "/0", "/a~1b", "/m~0n", "/a/01", "/a/-", "/a/ 1", "/ü", "/a//b", "/type/x"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limit = match data[0] >> 6 {
        0 => 1 + (data[0] & 0x3f) as usize,
        1 => 64 + 16 * (data[0] & 0x3f) as usize,
        _ => 16 * 1024 * 1024,
    };
    let format = match data[1] & 3 {
        0 | 3 => DecodeFormat::Json,
        1 => DecodeFormat::Text,
        _ => DecodeFormat::Binary,
    };
    let invalid = if data[1] & 0x04 == 0 { InvalidPolicy::Drop } else { InvalidPolicy::Pass };
    let pointer = POINTERS[(data[1] >> 3) as usize % POINTERS.len()];
    let cfg = DecodeConfig { format, topic: pointer.to_string(), invalid };
    let decoder = Decoder::new(&cfg);

    let mut reasm = Reassembler::new(limit);
    let mut rest = &data[2..];
    // What the reassembler holds, tracked independently.
    let mut pending: Option<usize> = None;
    while rest.len() >= 2 {
        let (tag, len) = (rest[0], rest[1] as usize);
        let len = len.min(rest.len() - 2);
        let payload = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        let kind = if tag & 0x10 == 0 { Kind::Text } else { Kind::Binary };
        let frag = match tag % 4 {
            0 => Fragment::Whole(kind, payload),
            1 => Fragment::First(kind, payload),
            2 => Fragment::Continue(payload),
            _ => Fragment::Last(payload),
        };
        let (is_start, is_end) = match &frag {
            Fragment::Whole(..) => (true, true),
            Fragment::First(..) => (true, false),
            Fragment::Continue(_) => (false, false),
            Fragment::Last(_) => (false, true),
        };
        let size = pending.unwrap_or(0) + len;
        match reasm.push(frag) {
            Ok(None) => {
                assert!(!is_end || !is_start, "a whole frame must complete or fail");
                assert!(size <= limit);
                pending = Some(size);
            }
            Ok(Some(msg)) => {
                assert!(is_end);
                assert_eq!(msg.data.len(), size);
                assert!(msg.data.len() <= limit, "message over the cap");
                if msg.kind == Kind::Text {
                    assert!(std::str::from_utf8(&msg.data).is_ok(), "text message that is not UTF-8");
                }
                pending = None;
                check_decode(&decoder, &cfg, msg.kind, msg.data);
            }
            Err(e) => {
                if let FrameError::Oversize { .. } = e {
                    assert!(size > limit, "oversize at {size} <= {limit}");
                }
                assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                // The actor closes the link; the next connection starts afresh.
                reasm = Reassembler::new(limit);
                pending = None;
            }
        }
    }
});

fn check_decode(decoder: &Decoder, cfg: &DecodeConfig, kind: Kind, data: Bytes) {
    let Ok(msg) = wsgate::transport::reassembly::Message::new(kind, data.clone()) else {
        // Only text that is not UTF-8 is refused (the reassembler's 1007).
        assert!(kind == Kind::Text && std::str::from_utf8(&data).is_err());
        return;
    };
    let (topic, data_kind) = match decoder.decode(&msg) {
        Decoded::Ok { topic, kind } => (topic.into_owned(), kind),
        Decoded::Invalid { error, pass } => {
            assert!(!error.is_empty());
            if cfg.format == DecodeFormat::Json && kind == Kind::Text {
                assert!(!is_json(&data), "valid JSON called invalid: {error}");
            }
            if !pass {
                return;
            }
            // As the actor passes it on: text, topic "".
            (String::new(), DataKind::Text)
        }
    };
    // serde_json's Value refuses numbers it cannot hold (1e400), which are
    // valid JSON all the same: compare values only where it can.
    let doc = serde_json::from_slice::<serde_json::Value>(&data).ok();
    if data_kind == DataKind::Json {
        assert!(is_json(&data), "decoded as JSON but it is not");
    }
    if let (DecodeFormat::Json, DataKind::Json, Some(doc)) = (cfg.format, data_kind, &doc) {
        let want = if cfg.topic.is_empty() {
            String::new()
        } else {
            match doc.pointer(&cfg.topic) {
                None => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            }
        };
        assert_eq!(topic, want, "topic at {:?}", cfg.topic);
    }
    let delivery = Delivery::new(
        Incoming {
            upstream: Arc::from("fuzz"),
            topic: Arc::from(topic.as_str()),
            raw: data.clone(),
            raw_is_text: kind == Kind::Text,
            kind: data_kind,
            received_at: SystemTime::now(),
            received: Instant::now(),
            conn: 1,
        },
        1,
    );
    assert!(is_json(delivery.envelope().as_bytes()), "envelope is not JSON");
    if data_kind == DataKind::Json && doc.is_none() {
        return;
    }
    let env: serde_json::Value = serde_json::from_str(delivery.envelope()).expect("envelope is not JSON");
    assert_eq!(env["upstream"], "fuzz");
    assert_eq!(env["topic"], topic.as_str());
    assert_eq!(env["seq"], 1);
    match data_kind {
        DataKind::Json => assert_eq!(Some(&env["data"]), doc.as_ref()),
        DataKind::Text => assert_eq!(env["data"], String::from_utf8_lossy(&data).as_ref()),
        DataKind::Binary => assert!(env["data"].is_string()),
    }
    if kind == Kind::Text {
        assert_eq!(delivery.raw_text().map(|t| t.as_bytes().clone()), Some(data));
    }
}

/// JSON by the grammar (RFC 8259), whatever the size of its numbers.
fn is_json(b: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}
