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

    /// Lone surrogate escapes are JSON (RFC 8259's grammar): valid anywhere,
    /// U+FFFD in a topic; real errors stay errors.
    #[test]
    fn lone_surrogates() {
        let fffd = "\u{FFFD}";
        let cases: Vec<(&str, &str, Option<String>)> = vec![
            ("/type", r#"{"type":"\ud800"}"#, Some(fffd.into())),
            ("/type", r#"{"type":"\udc00"}"#, Some(fffd.into())),
            ("/type", r#"{"x":"\udc00","type":"a"}"#, Some("a".into())),
            ("/type", r#"{"\ud800":1,"type":"a"}"#, Some("a".into())),
            ("/type", r#"{"type":"a","\ud800":1}"#, Some("a".into())),
            ("/type", r#"{"type":"\ud83d\ude00"}"#, Some("\u{1F600}".into())),
            ("/type", r#"{"type":"\ud800\u0041"}"#, Some(format!("{fffd}A"))),
            ("/type", r#"{"type":"x\ud800\ud800y\udc00"}"#, Some(format!("x{fffd}{fffd}y{fffd}"))),
            ("/type", r#"{"type":"\ud800\n"}"#, Some(format!("{fffd}\n"))),
            ("/type", r#"{"type":"\ud800é"}"#, Some(format!("{fffd}é"))),
            ("/a/0", r#"{"\udfff":[],"a":["\udbff!"]}"#, Some(format!("{fffd}!"))),
            ("/\u{FFFD}", r#"{"\ud800":"k"}"#, Some("k".into())),
            ("/type", r#"{"type":{"k":"\ud800"}}"#, Some(r#"{"k":"\ud800"}"#.into())),
            ("", r#"["\ud800"]"#, Some(String::new())),
            ("/type", r#""\ud800""#, Some(String::new())),
            // Still invalid, before or after a lone surrogate.
            ("/type", r#"{"type":"#, None),
            ("/type", r#"{"a":"\x"}"#, None),
            ("/type", r#"{"a":"\ud800","b":"\x"}"#, None),
            ("/type", "{\"\\ud800\":\"a\u{1}\"}", None),
            ("/type", "{\"type\":\"\\ud800\u{1}\"}", None),
            ("/type", r#"{"type":"\ud800"}x"#, None),
            ("/type", r#"{"type":"\ud8"}"#, None),
        ];
        for (pointer, doc, want) in cases {
            let d = cfg(DecodeFormat::Json, pointer, InvalidPolicy::Drop);
            let m = text(doc);
            match (d.decode(&m), want) {
                (Decoded::Ok { topic, kind }, Some(want)) => {
                    assert_eq!((topic.as_ref(), kind), (want.as_str(), DataKind::Json), "{doc}");
                }
                (Decoded::Invalid { .. }, None) => {}
                (got, want) => panic!("{doc} at {pointer:?}: got {got:?}, want {want:?}"),
            }
            // The grammar is the judge, as in fuzz/frames_decode.
            let grammar = serde_json::from_str::<IgnoredAny>(doc).is_ok();
            assert_eq!(grammar, matches!(d.decode(&m), Decoded::Ok { .. }), "{doc}");
        }
    }

    /// The fallback keys on serde_json's exact messages: pin them.
    #[test]
    fn surrogate_errors_are_recognised() {
        for doc in [r#""\ud800""#, r#""\udc00""#, r#""\ud800\u0041""#, r#""\ud800x""#] {
            let e = serde_json::from_str::<String>(doc).unwrap_err();
            assert!(is_lone_surrogate(&e), "{doc}: {e}");
        }
        let e = serde_json::from_str::<String>(r#""\x""#).unwrap_err();
        assert!(!is_lone_surrogate(&e), "{e}");
    }

    /// WTF-8 to text: surrogates become U+FFFD, the rest is kept.
    #[test]
    fn wtf8_table() {
        assert_eq!(wtf8_lossy(b"abc"), "abc");
        assert!(matches!(wtf8_lossy(b"abc"), Cow::Borrowed(_)));
        assert_eq!(wtf8_lossy(b"\xed\xa0\x80"), "\u{FFFD}");
        assert_eq!(wtf8_lossy(b"a\xed\xbf\xbfb\xed\xa0\x80"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(wtf8_lossy(b"\xed\xa0"), "\u{FFFD}\u{FFFD}");
        assert_eq!(wtf8_lossy(b"\xff"), "\u{FFFD}");
    }
}
