//! From a complete upstream message to what the hub routes: the topic and
//! how the data is embedded. Plain code, no actix: unit-tested and fuzzed.
//!
//! JSON is validated in full, but never re-serialized: the envelope embeds
//! the upstream's bytes verbatim. The topic is found in the same pass that
//! validates, by a visitor that skips every member off the pointer's path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::frames::{Kind, Message};
use crate::config::{DecodeConfig, DecodeFormat, InvalidPolicy};
use crate::fanout::DataKind;

/// The decode result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Route it with this topic.
    Ok {
        /// The routing topic (`""` when absent), borrowed from the message
        /// when it has no escapes.
        topic: Cow<'a, str>,
        /// How to embed the data.
        kind: DataKind,
    },
    /// Invalid: count it; deliver as text with topic `""` when `pass`.
    Invalid {
        /// What was wrong (no payload content in it).
        error: String,
        /// Whether to pass it on as text anyway.
        pass: bool,
    },
}

/// Decodes messages of one upstream.
#[derive(Debug, Clone)]
pub struct Decoder {
    format: DecodeFormat,
    pointer: Vec<String>,
    has_pointer: bool,
    invalid: InvalidPolicy,
}

impl Decoder {
    /// A decoder for `cfg`.
    pub fn new(cfg: &DecodeConfig) -> Self {
        let pointer = cfg.topic.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
        Decoder { format: cfg.format, pointer, has_pointer: !cfg.topic.is_empty(), invalid: cfg.invalid }
    }

    /// Decodes one message.
    pub fn decode<'a>(&self, msg: &'a Message) -> Decoded<'a> {
        match self.format {
            DecodeFormat::Binary => Decoded::Ok { topic: Cow::Borrowed(""), kind: DataKind::Binary },
            DecodeFormat::Text => match std::str::from_utf8(&msg.data) {
                Ok(_) => Decoded::Ok { topic: Cow::Borrowed(""), kind: DataKind::Text },
                Err(_) => self.invalid("binary message is not UTF-8 text".into(), false),
            },
            DecodeFormat::Json => {
                if msg.kind == Kind::Binary {
                    return self.invalid("binary frame on a json upstream".into(), false);
                }
                let Ok(text) = std::str::from_utf8(&msg.data) else {
                    return self.invalid("text message is not UTF-8".into(), false);
                };
                match self.topic_of(text) {
                    Ok(topic) => Decoded::Ok { topic, kind: DataKind::Json },
                    Err(e) => self.invalid(format!("invalid JSON at line {} column {}", e.line(), e.column()), true),
                }
            }
        }
    }

    fn invalid(&self, error: String, passable: bool) -> Decoded<'static> {
        Decoded::Invalid { error, pass: passable && self.invalid == InvalidPolicy::Pass }
    }

    /// Validates `text` and returns the topic at the pointer (`""` if absent).
    ///
    /// One pass over the document validates it and finds the first pointer
    /// token; other members are skipped (`IgnoredAny`) without allocating.
    /// Deeper tokens re-read only the value found. (The profile showed a
    /// full `RawValue` parse plus a `HashMap` of members costing ~60 % of
    /// all instructions with one subscriber.)
    fn topic_of<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, serde_json::Error> {
        if !self.has_pointer {
            serde_json::from_str::<IgnoredAny>(text)?;
            return Ok(Cow::Borrowed(""));
        }
        let mut json = text;
        for token in &self.pointer {
            match find(json, token)? {
                Some(v) => json = v.get(),
                None => return Ok(Cow::Borrowed("")),
            }
        }
        let t = json.trim();
        if t.starts_with('"') {
            return serde_json::from_str::<Key<'a>>(t).map(|k| k.0);
        }
        // Numbers, booleans, null, objects, arrays: their compact JSON text.
        // The text is valid JSON (checked above); serde_json's Value refuses
        // only numbers it cannot hold (`1e400`): those keep the text as sent,
        // rather than turning a valid message invalid because of its topic.
        match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => Ok(Cow::Owned(v.to_string())),
            Err(_) => Ok(Cow::Borrowed(t)),
        }
    }
}

/// Validates all of `json` and returns the value at one pointer token of
/// its top level, if it is an object or array that has it.
fn find<'a>(json: &'a str, token: &str) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let t = json.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        // Scalars have no members; IgnoredAny also accepts any number text.
        serde_json::from_str::<IgnoredAny>(json)?;
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let found = Find { token }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Looks for one member while skipping the others.
struct Find<'t> {
    token: &'t str,
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if found.is_none() && key == self.token {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let want = array_index(self.token);
        let mut found = None;
        let mut i = 0usize;
        loop {
            if want == Some(i) {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An array index token (RFC 6901): `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let leading_zero = token.len() > 1 && token.starts_with('0');
    if leading_zero || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn cfg(format: DecodeFormat, topic: &str, invalid: InvalidPolicy) -> Decoder {
        Decoder::new(&DecodeConfig { format, topic: topic.into(), invalid })
    }

    fn text(s: &str) -> Message {
        Message { kind: Kind::Text, data: Bytes::copy_from_slice(s.as_bytes()) }
    }

    fn ok(topic: &str, kind: DataKind) -> Decoded<'static> {
        Decoded::Ok { topic: Cow::Owned(topic.to_string()), kind }
    }

    /// Topics by pointer, absent pointers, non-string values, invalid input.
    #[test]
    fn decode_table() {
        use DataKind::*;
        use DecodeFormat as F;
        use InvalidPolicy::*;
        let bin = Message { kind: Kind::Binary, data: Bytes::from_static(b"\xff\x00") };
        let cases: Vec<(Decoder, Message, Decoded)> = vec![
            (cfg(F::Json, "/type", Drop), text(r#"{"type":"trade","p":1}"#), ok("trade", Json)),
            (cfg(F::Json, "/type", Drop), text(r#"{"p":1}"#), ok("", Json)),
            (cfg(F::Json, "/type", Drop), text(r#"[1,2]"#), ok("", Json)),
            (cfg(F::Json, "/a/b", Drop), text(r#"{"a":{"b":"x/y"}}"#), ok("x/y", Json)),
            (cfg(F::Json, "/a/1", Drop), text(r#"{"a":["p","q"]}"#), ok("q", Json)),
            (cfg(F::Json, "/a~1b", Drop), text(r#"{"a/b":"s"}"#), ok("s", Json)),
            (cfg(F::Json, "/n", Drop), text(r#"{"n": 42}"#), ok("42", Json)),
            (cfg(F::Json, "/n", Drop), text(r#"{"n": null}"#), ok("null", Json)),
            (cfg(F::Json, "/n", Drop), text(r#"{"n": { "k" : [1, 2] }}"#), ok(r#"{"k":[1,2]}"#, Json)),
            (cfg(F::Json, "/type", Drop), text(r#"{"type":"esc\"aped"}"#), ok("esc\"aped", Json)),
            // Found by fuzz/frames_decode: RFC 6901 indexes have no leading
            // zero or sign, and a number serde_json cannot hold keeps a valid
            // message valid (its text is the topic).
            (cfg(F::Json, "/a/01", Drop), text(r#"{"a":["p","q"]}"#), ok("", Json)),
            (cfg(F::Json, "/a/+1", Drop), text(r#"{"a":["p","q"]}"#), ok("", Json)),
            (cfg(F::Json, "/a/0", Drop), text(r#"{"a":["p","q"]}"#), ok("p", Json)),
            (cfg(F::Json, "/type", Drop), text(r#"{"type": 1e400 }"#), ok("1e400", Json)),
            (cfg(F::Json, "", Drop), text(r#"{"type":1e400}"#), ok("", Json)),
            (cfg(F::Json, "", Drop), text(r#"{"type":"x"}"#), ok("", Json)),
            (
                cfg(F::Json, "/type", Drop),
                text(r#"{"type":"x""#),
                Decoded::Invalid { error: "invalid JSON at line 1 column 11".into(), pass: false },
            ),
            (
                cfg(F::Json, "/type", Pass),
                text("not json"),
                Decoded::Invalid { error: "invalid JSON at line 1 column 2".into(), pass: true },
            ),
            (
                cfg(F::Json, "/type", Pass),
                bin.clone(),
                Decoded::Invalid { error: "binary frame on a json upstream".into(), pass: false },
            ),
            (cfg(F::Text, "/type", Drop), text(r#"{"type":"x"}"#), ok("", Text)),
            (
                cfg(F::Text, "/type", Drop),
                bin.clone(),
                Decoded::Invalid { error: "binary message is not UTF-8 text".into(), pass: false },
            ),
            (cfg(F::Binary, "/type", Drop), bin, ok("", Binary)),
        ];
        for (d, m, want) in cases {
            assert_eq!(d.decode(&m), want, "{:?}", m.data);
        }
    }
}
