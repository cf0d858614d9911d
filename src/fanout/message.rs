//! What flows through the hub: a decoded upstream message, numbered once and
//! shared (`Arc`) by every subscriber. Its frames (raw, envelope) are built
//! at most once per message, on first use, whatever the number of subscribers.

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::frame::{self, FrameBuf};

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
///
/// What a subscriber writes is built at most once per message, on first use,
/// and shared after: the WebSocket frames (raw and envelope; a server frame
/// is unmasked, so byte-identical for every subscriber) and the envelope
/// text of the sinks.
#[derive(Debug)]
pub struct Delivery {
    /// The message as received.
    pub msg: Incoming,
    /// Per-upstream sequence number, consecutive from 1 at process start.
    pub seq: u64,
    /// Header + envelope JSON, one buffer.
    envelope_frame: OnceLock<Bytes>,
    /// The JSON part of `envelope_frame` as text, for the sinks.
    envelope: OnceLock<ByteString>,
    /// Header + the upstream's bytes, with the upstream's opcode.
    raw_frame: OnceLock<Bytes>,
    raw_text: OnceLock<Option<ByteString>>,
    /// The conflation key at the first non-empty `conflate_key` pointer
    /// asked for (pointer, key): computed once per message.
    conflate: OnceLock<(Box<str>, Option<Arc<str>>)>,
}

impl Delivery {
    /// A JSON text message of `upstream` and `topic` received now on link
    /// 1, numbered `seq`: the unit tests' message.
    #[cfg(test)]
    pub(crate) fn json_for_test(upstream: &str, topic: &str, raw: impl Into<Bytes>, seq: u64) -> Arc<Self> {
        Delivery::new(
            Incoming {
                upstream: upstream.into(),
                topic: topic.into(),
                raw: raw.into(),
                raw_is_text: true,
                kind: DataKind::Json,
                received_at: SystemTime::now(),
                received: Instant::now(),
                conn: 1,
            },
            seq,
        )
    }

    /// Wraps a message with its number.
    pub fn new(msg: Incoming, seq: u64) -> Arc<Self> {
        Arc::new(Delivery {
            msg,
            seq,
            envelope_frame: OnceLock::new(),
            envelope: OnceLock::new(),
            raw_frame: OnceLock::new(),
            raw_text: OnceLock::new(),
            conflate: OnceLock::new(),
        })
    }

    /// The key `overflow = "conflate"` groups this message by (SPEC §14):
    /// the topic for the pointer `""`, else the value at the JSON pointer
    /// (a string as is, anything else as its JSON text); `None` when the
    /// message is no JSON or has no value there (never conflated).
    /// Computed once per message for the first pointer asked.
    pub fn conflate_key(&self, pointer: &str) -> Option<Arc<str>> {
        if pointer.is_empty() {
            return Some(Arc::clone(&self.msg.topic));
        }
        let compute = || {
            if self.msg.kind != DataKind::Json {
                return None;
            }
            let doc: serde_json::Value = serde_json::from_slice(&self.msg.raw).ok()?;
            Some(match doc.pointer(pointer)? {
                serde_json::Value::String(s) => Arc::from(s.as_str()),
                other => Arc::from(other.to_string()),
            })
        };
        let (p, key) = self.conflate.get_or_init(|| (Box::from(pointer), compute()));
        if &**p == pointer {
            key.clone()
        } else {
            compute()
        }
    }

    /// The message's bytes as received: what it costs a queue against
    /// `queue_bytes` (the envelope is shared by every subscriber).
    pub fn size(&self) -> usize {
        self.msg.raw.len()
    }

    /// The WebSocket frame of this message in `raw` or envelope format,
    /// built on first call and shared by every subscriber after.
    pub fn frame(&self, raw: bool) -> &Bytes {
        if raw {
            self.raw_frame.get_or_init(|| {
                frame::frame(if self.msg.raw_is_text { frame::TEXT } else { frame::BINARY }, &self.msg.raw)
            })
        } else {
            self.envelope_frame.get_or_init(|| encode_envelope(self))
        }
    }

    /// The envelope (SPEC §5) as text, for the sinks: the payload of the
    /// envelope frame, shared with it.
    pub fn envelope(&self) -> &ByteString {
        self.envelope.get_or_init(|| {
            let f = self.frame(false);
            // Built from JSON text and UTF-8-checked upstream text only; a
            // failure would be a bug, answered with a valid error object.
            ByteString::try_from(f.slice(frame::payload_offset(f)..))
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

/// The envelope as a text frame, written in one pass into one buffer: no
/// UTF-8 check (every part is JSON text or upstream text the decoder has
/// checked), no allocation besides the frame itself.
fn encode_envelope(d: &Delivery) -> Bytes {
    let m = &d.msg;
    let data_len = match m.kind {
        DataKind::Binary => base64::encoded_len(m.raw.len(), true).unwrap_or(0),
        _ => m.raw.len() + 2,
    };
    let mut out = FrameBuf::with_capacity(data_len + m.upstream.len() + m.topic.len() + 96);
    out.put_slice(b"{\"upstream\":");
    put_json_str(&mut out, m.upstream.as_bytes());
    out.put_slice(b",\"topic\":");
    put_json_str(&mut out, m.topic.as_bytes());
    out.put_slice(b",\"seq\":");
    // Writing into a BytesMut cannot fail.
    let _ = write!(&mut *out, "{}", d.seq);
    out.put_slice(b",\"conn\":");
    let _ = write!(&mut *out, "{}", m.conn);
    out.put_slice(b",\"received_at\":\"");
    let _ = write!(&mut *out, "{}", humantime::format_rfc3339_nanos(m.received_at));
    out.put_slice(b"\",\"data\":");
    match m.kind {
        DataKind::Json => out.put_slice(&m.raw),
        DataKind::Text => put_json_str(&mut out, &m.raw),
        DataKind::Binary => {
            out.put_u8(b'"');
            let start = out.len();
            out.resize(start + data_len, 0);
            let n = base64::engine::general_purpose::STANDARD.encode_slice(&m.raw, &mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
            out.put_u8(b'"');
        }
    }
    out.put_u8(b'}');
    out.finish(frame::TEXT)
}

/// A JSON string of `text` (UTF-8), escaped as serde_json escapes it:
/// `"` and `\\`, the short forms of \b \t \n \f \r, `\u00XX` for the other
/// control characters; everything else, multi-byte sequences included, as is.
fn put_json_str(out: &mut BytesMut, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.put_u8(b'"');
    let mut plain = 0;
    for (i, &b) in text.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.put_slice(&text[plain..i]);
        plain = i + 1;
        out.put_u8(b'\\');
        out.put_u8(short);
        if short == b'u' {
            out.put_slice(&[b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
    out.put_slice(&text[plain..]);
    out.put_u8(b'"');
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

/// A `gap` event for what the replay history no longer holds (SPEC §14).
pub fn history_gap_event(upstream: &str, missed: u64) -> ByteString {
    ByteString::from(format!(
        r#"{{"event":"gap","upstream":{},"missed":{missed},"reason":"history"}}"#,
        json_str(upstream)
    ))
}

/// `hello` (SPEC §14): the first event of every envelope subscriber while
/// replay is on, with the process's run id.
pub fn hello_event(run: &str) -> ByteString {
    ByteString::from(format!(r#"{{"event":"hello","run":{}}}"#, json_str(run)))
}

/// `reset` (SPEC §14): a replay asked for another run; live follows.
pub fn reset_event(upstream: &str) -> ByteString {
    ByteString::from(format!(r#"{{"event":"reset","upstream":{}}}"#, json_str(upstream)))
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

    /// The conflation key: the topic for "", the value at a pointer (text
    /// as is, other values as JSON), none without a value or without JSON.
    #[test]
    fn conflate_keys() {
        let d = Delivery::new(incoming(DataKind::Json, br#"{"s":"BTC","n":{"id":7},"x":null}"#), 1);
        assert_eq!(d.conflate_key("").as_deref(), Some("trade"));
        assert_eq!(d.conflate_key("/s").as_deref(), Some("BTC"));
        assert_eq!(d.conflate_key("/s").as_deref(), Some("BTC"), "cached");
        assert_eq!(d.conflate_key("/n").as_deref(), Some(r#"{"id":7}"#), "another pointer, computed");
        assert_eq!(d.conflate_key("/x").as_deref(), Some("null"));
        assert_eq!(d.conflate_key("/missing"), None);
        let t = Delivery::new(incoming(DataKind::Text, b"s"), 2);
        assert_eq!(t.conflate_key("/s"), None);
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

    /// The escaper writes what serde_json writes, for every ASCII byte and
    /// multi-byte text.
    #[test]
    fn json_strings_match_serde() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀 \u{7f} end");
        for s in [all.as_str(), "", "plain", "\"", "\\\\"] {
            let mut out = BytesMut::new();
            put_json_str(&mut out, s.as_bytes());
            assert_eq!(std::str::from_utf8(&out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    /// The frames are a header and the bytes subscribers get: the upstream's
    /// bytes with its opcode, or the envelope as text; built once.
    #[test]
    fn frames_are_built_once() {
        let d = Delivery::new(incoming(DataKind::Binary, &[0, 255, 1]), 7);
        assert_eq!(&d.frame(true)[..], &[0x82, 3, 0, 255, 1]);
        let f = d.frame(false);
        assert_eq!(f[0], 0x81);
        assert_eq!(&f[frame::payload_offset(f)..], d.envelope().as_bytes());
        assert_eq!(d.frame(false).as_ptr(), f.as_ptr());
        let big = Delivery::new(Incoming { raw: Bytes::from(vec![b'1'; 70_000]), ..incoming(DataKind::Json, b"") }, 8);
        let f = big.frame(false);
        assert_eq!((f[0], f[1]), (0x81, 127));
        assert_eq!(&f[10..], big.envelope().as_bytes());
        assert_eq!(&big.frame(true)[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
