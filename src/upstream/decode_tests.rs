//! Unit tests of `decode.rs`.
use bytes::Bytes;

use super::*;

fn cfg(format: DecodeFormat, topic: &str, invalid: InvalidPolicy) -> Decoder {
    Decoder::new(&DecodeConfig { format, topic: topic.into(), invalid })
}

fn text(s: &str) -> Message {
    Message::new(Kind::Text, Bytes::copy_from_slice(s.as_bytes())).unwrap()
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
    let bin = Message::new(Kind::Binary, Bytes::from_static(b"\xff\x00")).unwrap();
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
