//! One value at a JSON pointer (RFC 6901), read without building the
//! document: keys are compared as they are scanned, other values skipped,
//! the match borrowed as raw text. The per-message lookups of the sequence
//! check and the de-duplicator (SPEC §13, §14) use it: a `serde_json::Value`
//! per message cost more than the rest of the hot path together.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The value at `pointer` in `doc` (`""` = the whole document), as raw
/// JSON text; `None` when `doc` is not JSON or nothing is there.
pub fn find<'a>(doc: &'a [u8], pointer: &str) -> Option<&'a RawValue> {
    let mut tokens = pointer.split('/');
    if tokens.next() != Some("") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(doc);
    let Some(first) = tokens.next() else { return serde_json::from_slice(doc).ok() };
    let mut cur = Step(&unescape(first)).deserialize(&mut de).ok()??;
    de.end().ok()?;
    for token in tokens {
        let mut de = serde_json::Deserializer::from_str(cur.get());
        cur = Step(&unescape(token)).deserialize(&mut de).ok()??;
    }
    Some(cur)
}

/// The value at `pointer` as an unsigned integer.
pub fn find_u64(doc: &[u8], pointer: &str) -> Option<u64> {
    find(doc, pointer).and_then(|v| v.get().parse().ok())
}

/// The value at `pointer` as a key: a string's text, else the JSON text
/// (as `serde_json::Value`'s `to_string` writes a number or a bool).
pub fn find_key(doc: &[u8], pointer: &str) -> Option<String> {
    let raw = find(doc, pointer)?;
    if raw.get().starts_with('"') {
        serde_json::from_str::<String>(raw.get()).ok()
    } else {
        serde_json::from_str::<serde_json::Value>(raw.get()).ok().map(|v| v.to_string())
    }
}

fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~").into()
    } else {
        token.into()
    }
}

/// One level down: the member named, or the element numbered, `.0`.
struct Step<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is) = map.next_key_seed(Named(self.0))? {
            if is && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let want = self.0.parse::<usize>().ok().filter(|_| self.0 == "0" || !self.0.starts_with('0'));
        let (mut i, mut found) = (0, None);
        loop {
            if Some(i) == want {
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

    // Scalars have no members.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether a member's key is `.0`, compared without allocating.
struct Named<'t>(&'t str);

impl<'de> DeserializeSeed<'de> for Named<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Named<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answers as `serde_json::Value::pointer`, for every kind of value.
    #[test]
    fn agrees_with_value_pointer() {
        let docs = [
            r#"{"seq":5,"s":"BTC","n":{"a":[10,{"b":7}],"x~y":1,"p/q":2},"f":1.5,"t":true,"z":null}"#,
            r#"[1,{"seq":3}]"#,
            r#"{"seq":"5"}"#,
            r#"{"seq":-1,"dup":1,"dup":2}"#,
        ];
        let pointers = [
            "", "/seq", "/s", "/n/a/0", "/n/a/1/b", "/n/a/2", "/n/x~0y", "/n/p~1q", "/f", "/t", "/z", "/1/seq", "/0",
            "/missing", "/seq/x", "/n/a/01",
        ];
        for doc in docs {
            let value: serde_json::Value = serde_json::from_str(doc).unwrap();
            for p in pointers {
                let want = value.pointer(p).map(ToString::to_string);
                let got = find(doc.as_bytes(), p)
                    .map(|r| serde_json::from_str::<serde_json::Value>(r.get()).unwrap().to_string());
                if doc.contains("\"dup\"") && p.is_empty() {
                    continue; // Value keeps the last duplicate key; not a pointer question
                }
                assert_eq!(got, want, "{doc} at {p:?}");
            }
        }
    }

    /// Numbers, keys, and documents that are not JSON.
    #[test]
    fn numbers_keys_and_garbage() {
        assert_eq!(find_u64(br#"{"seq":42}"#, "/seq"), Some(42));
        assert_eq!(find_u64(br#"{"seq":"42"}"#, "/seq"), None);
        assert_eq!(find_u64(br#"{"seq":-4}"#, "/seq"), None);
        assert_eq!(find_u64(br#"{"seq":4.5}"#, "/seq"), None);
        assert_eq!(find_key(br#"{"k":"BTC\u002dUSD"}"#, "/k").as_deref(), Some("BTC-USD"));
        assert_eq!(find_key(br#"{"k":7}"#, "/k").as_deref(), Some("7"));
        assert_eq!(find_u64(b"not json", "/seq"), None);
        assert_eq!(find_u64(br#"{"seq":1} trailing"#, "/seq"), None);
        assert_eq!(find_u64(br#"{"seq":1,"#, "/seq"), None);
        assert_eq!(find_u64(br#"{"seq":1}"#, "seq"), None, "a pointer starts with /");
    }
}
