//! What flows through the hub: a decoded upstream message, numbered once and
//! shared (`Arc`) by every subscriber. The envelope is encoded at most once
//! per message, on first use, whatever the number of subscribers.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::model::{DataKind, LinkState};

/// A decoded message as an upstream hands it to the hub (no `seq` yet).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The upstream's config name.
    pub upstream: Arc<str>,
    /// Routing topic; `""` when absent.
    pub topic: Arc<str>,
    /// The message bytes exactly as reassembled from the upstream frames.
    pub raw: Bytes,
    /// Whether the upstream frame was a text frame (raw subscribers get the same opcode).
    pub raw_is_text: bool,
    /// How `raw` goes into an envelope.
    pub kind: DataKind,
    /// Wall clock at receipt, for `received_at`.
    pub received_at: SystemTime,
    /// Monotonic clock at receipt, for the fan-out latency histogram.
    pub received: Instant,
    /// The number of the link that delivered it (SPEC §13 `conn`), from 1.
    pub conn: u64,
}

/// A numbered message, shared by all subscribers.
#[derive(Debug)]
pub struct Delivery {
    /// The message as received.
    pub msg: Incoming,
    /// Per-upstream sequence number, consecutive from 1 at process start.
    pub seq: u64,
    envelope: OnceLock<ByteString>,
    raw_text: OnceLock<Option<ByteString>>,
}

impl Delivery {
    /// Wraps a message with its number.
    pub fn new(msg: Incoming, seq: u64) -> Arc<Self> {
        Arc::new(Delivery { msg, seq, envelope: OnceLock::new(), raw_text: OnceLock::new() })
    }

    /// The message's bytes as received: what it costs a queue against
    /// `queue_bytes` (the envelope is shared by every subscriber).
    pub fn size(&self) -> usize {
        self.msg.raw.len()
    }

    /// The envelope text frame, encoded on first call and shared after.
    pub fn envelope(&self) -> &ByteString {
        self.envelope.get_or_init(|| {
            // Built from JSON text and UTF-8-checked upstream text only; a
            // failure would be a bug, answered with a valid error object.
            ByteString::try_from(encode_envelope(self))
                .unwrap_or_else(|_| ByteString::from_static(r#"{"event":"error","message":"envelope encoding"}"#))
        })
    }

    /// The raw frame as text, for raw subscribers of a text upstream frame
    /// (validated once per message, shared by all subscribers).
    pub fn raw_text(&self) -> Option<&ByteString> {
        self.raw_text
            .get_or_init(|| self.msg.raw_is_text.then(|| ByteString::try_from(self.msg.raw.clone()).ok()).flatten())
            .as_ref()
    }
}

fn encode_envelope(d: &Delivery) -> Bytes {
    let m = &d.msg;
    let mut out = BytesMut::with_capacity(m.raw.len() + m.upstream.len() + m.topic.len() + 112);
    out.put_slice(b"{\"upstream\":");
    put_json_str(&mut out, &m.upstream);
    out.put_slice(b",\"topic\":");
    put_json_str(&mut out, &m.topic);
    out.put_slice(b",\"seq\":");
    out.put_slice(itoa(d.seq).as_bytes());
    out.put_slice(b",\"conn\":");
    out.put_slice(itoa(m.conn).as_bytes());
    out.put_slice(b",\"received_at\":\"");
    out.put_slice(humantime::format_rfc3339_nanos(m.received_at).to_string().as_bytes());
    out.put_slice(b"\",\"data\":");
    match m.kind {
        DataKind::Json => out.put_slice(&m.raw),
        DataKind::Text => put_json_str(&mut out, &String::from_utf8_lossy(&m.raw)),
        DataKind::Binary => {
            out.put_u8(b'"');
            out.put_slice(base64::engine::general_purpose::STANDARD.encode(&m.raw).as_bytes());
            out.put_u8(b'"');
        }
    }
    out.put_u8(b'}');
    out.freeze()
}

fn itoa(n: u64) -> String {
    n.to_string()
}

fn put_json_str(out: &mut BytesMut, s: &str) {
    // serde_json's escaping is correct for every input; writing into a Vec cannot fail.
    match serde_json::to_vec(s) {
        Ok(v) => out.put_slice(&v),
        Err(_) => out.put_slice(b"\"\""),
    }
}

/// An `upstream` state event (SPEC §5), fields in the SPEC's order.
pub fn state_event(upstream: &str, state: LinkState) -> ByteString {
    ByteString::from(format!(
        r#"{{"event":"upstream","upstream":{},"state":"{}"}}"#,
        json_str(upstream),
        state.as_str()
    ))
}

/// A `gap` event: `missed` messages of `upstream` were dropped for this subscriber.
pub fn gap_event(upstream: &str, missed: u64) -> ByteString {
    ByteString::from(format!(r#"{{"event":"gap","upstream":{},"missed":{missed}}}"#, json_str(upstream)))
}

/// `upstream_gap` (SPEC §13): the feed skipped sequence numbers.
pub fn upstream_gap_event(upstream: &str, key: Option<&str>, expected: u64, got: u64, across: bool) -> ByteString {
    let mut text = format!(r#"{{"event":"upstream_gap","upstream":{}"#, json_str(upstream));
    if let Some(k) = key {
        text.push_str(&format!(r#","key":{}"#, json_str(k)));
    }
    text.push_str(&format!(r#","expected":{expected},"got":{got}"#));
    if across {
        text.push_str(r#","across_reconnect":true"#);
    }
    text.push('}');
    ByteString::from(text)
}

/// `stale` (with the age) or `fresh` (SPEC §13) for a watched topic.
pub fn freshness_event(upstream: &str, topic: &str, stale_age_ms: Option<u128>) -> ByteString {
    ByteString::from(match stale_age_ms {
        Some(age) => format!(
            r#"{{"event":"stale","upstream":{},"topic":{},"age_ms":{age}}}"#,
            json_str(upstream),
            json_str(topic)
        ),
        None => format!(r#"{{"event":"fresh","upstream":{},"topic":{}}}"#, json_str(upstream), json_str(topic)),
    })
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(kind: DataKind, raw: &'static [u8]) -> Incoming {
        Incoming {
            upstream: "btc\"usd".into(),
            topic: "trade".into(),
            raw: Bytes::from_static(raw),
            raw_is_text: kind != DataKind::Binary,
            kind,
            received_at: SystemTime::UNIX_EPOCH,
            received: Instant::now(),
            conn: 1,
        }
    }

    /// Envelopes are valid JSON with the SPEC's fields, for every data kind.
    #[test]
    fn envelope_fields() {
        for (kind, raw, data) in [
            (DataKind::Json, &b"{\"p\": [1, 2]}"[..], serde_json::json!({"p": [1, 2]})),
            (DataKind::Text, &b"he said \"hi\"\n"[..], serde_json::json!("he said \"hi\"\n")),
            (DataKind::Binary, &[0u8, 255, 1][..], serde_json::json!("AP8B")),
        ] {
            let d = Delivery::new(incoming(kind, raw), 42);
            let v: serde_json::Value = serde_json::from_slice(d.envelope().as_bytes()).unwrap();
            assert_eq!(v["upstream"], "btc\"usd");
            assert_eq!(v["topic"], "trade");
            assert_eq!(v["seq"], 42);
            assert_eq!(v["received_at"], "1970-01-01T00:00:00.000000000Z");
            assert_eq!(v["data"], data);
            // Encoded once: the same buffer comes back.
            assert_eq!(d.envelope().as_ptr(), d.envelope().as_ptr());
        }
    }
}
