//! From a complete upstream message to what the hub routes: the topic and
//! how the data is embedded. Plain code, no actix: unit-tested and fuzzed.
//!
//! JSON is validated in full, but never re-serialized: the envelope embeds
//! the upstream's bytes verbatim. The topic is found in the same pass that
//! validates, by a visitor that skips every member off the pointer's path.
//!
//! RFC 8259's grammar allows a `\u` escape of a lone UTF-16 surrogate
//! (`"\ud800"`); serde_json refuses one in a Rust string. Such a message is
//! still JSON (relayed byte for byte): when the fast pass stops on one, a
//! second, lenient pass finds the topic, with U+FFFD for each lone
//! surrogate in it (SPEC §11).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{DecodeConfig, DecodeFormat, InvalidPolicy};
use crate::model::DataKind;
use crate::transport::reassembly::{Kind, Message};

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
            DecodeFormat::Text => match msg.kind {
                // Text frames were checked once, in reassembly.
                Kind::Text => Decoded::Ok { topic: Cow::Borrowed(""), kind: DataKind::Text },
                Kind::Binary => match std::str::from_utf8(&msg.data) {
                    Ok(_) => Decoded::Ok { topic: Cow::Borrowed(""), kind: DataKind::Text },
                    Err(_) => self.invalid("binary message is not UTF-8 text".into(), false),
                },
            },
            DecodeFormat::Json => {
                if msg.kind == Kind::Binary {
                    return self.invalid("binary frame on a json upstream".into(), false);
                }
                // Checked once, in reassembly (`Message::new`).
                let Some(text) = msg.text() else {
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
        match self.walk(text, Strings::Strict) {
            Err(e) if is_lone_surrogate(&e) => {
                // Rare: re-validate by the grammar (serde_json skips `\u`
                // escapes without judging surrogates), then walk again.
                serde_json::from_str::<IgnoredAny>(text)?;
                self.walk(text, Strings::Lenient)
            }
            other => other,
        }
    }

    /// One walk of `text` down the pointer; see [`Decoder::topic_of`].
    fn walk<'a>(&self, text: &'a str, strings: Strings) -> Result<Cow<'a, str>, serde_json::Error> {
        if !self.has_pointer {
            serde_json::from_str::<IgnoredAny>(text)?;
            return Ok(Cow::Borrowed(""));
        }
        let mut json = text;
        for token in &self.pointer {
            match find(json, token, strings)? {
                Some(v) => json = v.get(),
                None => return Ok(Cow::Borrowed("")),
            }
        }
        let t = json.trim();
        if t.starts_with('"') {
            return match strings {
                Strings::Strict => serde_json::from_str::<Key<'a>>(t).map(|k| k.0),
                Strings::Lenient => serde_json::from_str::<LenientKey<'a>>(t).map(|k| k.0),
            };
        }
        // Numbers, booleans, null, objects, arrays: their compact JSON text.
        // The text is valid JSON (checked above); serde_json's Value refuses
        // only numbers it cannot hold (`1e400`) and lone surrogates: those
        // keep the text as sent, rather than turning a valid message invalid
        // because of its topic.
        match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => Ok(Cow::Owned(v.to_string())),
            Err(_) => Ok(Cow::Borrowed(t)),
        }
    }
}

/// How a walk reads the strings it keeps (keys, the topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// As Rust strings: fast, and validates the document in the same pass,
    /// but refuses a lone surrogate escape.
    Strict,
    /// As bytes (serde_json then writes a lone surrogate as WTF-8), turned
    /// into text with U+FFFD for each lone surrogate. serde_json does not
    /// check control characters this way: the document must have been
    /// validated already.
    Lenient,
}

/// True for the errors serde_json gives for a lone surrogate escape in a
/// string read as a Rust string. (Its error kinds are not public; the
/// decode table tests pin these messages.)
fn is_lone_surrogate(e: &serde_json::Error) -> bool {
    let text = e.to_string();
    text.starts_with("lone leading surrogate in hex escape") || text.starts_with("unexpected end of hex escape")
}

/// Validates all of `json` and returns the value at one pointer token of
/// its top level, if it is an object or array that has it.
fn find<'a>(json: &'a str, token: &str, strings: Strings) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let t = json.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) {
        // Scalars have no members; IgnoredAny also accepts any number text.
        serde_json::from_str::<IgnoredAny>(json)?;
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let found = Find { token, strings }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Looks for one member while skipping the others.
struct Find<'t> {
    /// The member name or array index looked for.
    token: &'t str,
    /// How keys are read.
    strings: Strings,
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
        loop {
            let key = match self.strings {
                Strings::Strict => map.next_key::<Key<'de>>()?.map(|k| k.0),
                Strings::Lenient => map.next_key::<LenientKey<'de>>()?.map(|k| k.0),
            };
            let Some(key) = key else { break };
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

/// A string read leniently: a lone surrogate escape becomes U+FFFD.
struct LenientKey<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for LenientKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<LenientKey<'de>, E> {
                Ok(LenientKey(wtf8_lossy(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<LenientKey<'de>, E> {
                Ok(LenientKey(Cow::Owned(wtf8_lossy(v).into_owned())))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Text from WTF-8 (UTF-8 that may hold surrogates, as serde_json writes a
/// lone surrogate escape into bytes): each surrogate becomes U+FFFD.
fn wtf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return Cow::Owned(out);
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                out.push(char::REPLACEMENT_CHARACTER);
                // A surrogate is three bytes: ED A0..BF 80..BF. Anything
                // else (not expected from a &str input) skips as UTF-8 would.
                let surrogate = bad.len() >= 3 && bad[0] == 0xED && (0xA0..=0xBF).contains(&bad[1]);
                let skip = if surrogate { 3 } else { e.error_len().unwrap_or(bad.len()) };
                rest = &bad[skip.min(bad.len())..];
            }
        }
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
#[path = "decode_tests.rs"]
mod tests;
