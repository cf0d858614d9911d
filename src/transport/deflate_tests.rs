//! Unit tests of `deflate.rs`.
use super::*;
use flate2::{Compress, Compression, FlushCompress};

/// The server's answer: parameters read, anything not offered refused.
#[test]
fn negotiation() {
    assert_eq!(accepted(None), Ok(None));
    assert_eq!(accepted(Some("permessage-deflate")), Ok(Some(DeflateParams::default())));
    let p = accepted(Some(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=\"9\"",
    ))
    .unwrap()
    .unwrap();
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (Some(10), Some(9)));
    assert!(accepted(Some("x-webkit-deflate-frame")).is_err());
    assert!(accepted(Some("permessage-deflate; server_max_window_bits=16")).is_err());
    assert!(accepted(Some("permessage-deflate; server_max_window_bits")).is_err());
    assert!(accepted(Some("permessage-deflate; foo")).is_err());
    assert!(accepted(Some("permessage-deflate; server_no_context_takeover; server_no_context_takeover")).is_err());
    assert!(accepted(Some("permessage-deflate, permessage-deflate")).is_err());
}

fn compress(z: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn decode_all(codec: &mut LinkCodec, bytes: &[u8]) -> Vec<Result<Frame, String>> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => out.push(Ok(f)),
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e.to_string()));
                return out;
            }
        }
    }
}

/// Compressed messages with context takeover (the second message uses
/// the first's window), a fragmented compressed message, an
/// uncompressed one in between, and a ping; wire bytes counted.
#[test]
fn inflates_with_context_takeover_and_fragments() {
    let mut z = Compress::new(Compression::default(), false);
    let a = compress(&mut z, br#"{"type":"trade","px":1}"#);
    let b = compress(&mut z, br#"{"type":"trade","px":1}"#); // refers back to a
    let c = compress(&mut z, &b"book ".repeat(100));
    let (c1, c2) = c.split_at(c.len() / 2);
    let mut wire = Vec::new();
    wire.extend(frame(0xC1, &a)); // FIN, RSV1, text
    wire.extend(frame(0x81, b"plain")); // uncompressed
    wire.extend(frame(0x89, b"pi")); // ping
    wire.extend(frame(0xC1, &b));
    wire.extend(frame(0x42, c1)); // RSV1, binary, no FIN
    wire.extend(frame(0x80, c2)); // FIN continuation
    let mut codec = LinkCodec::new(1 << 20, Some(DeflateParams::default()));
    let got = decode_all(&mut codec, &wire);
    let text = |s: &str| Ok(Frame::Text(Bytes::copy_from_slice(s.as_bytes())));
    assert_eq!(got[0], text(r#"{"type":"trade","px":1}"#));
    assert_eq!(got[1], text("plain"));
    assert_eq!(got[2], Ok(Frame::Ping(Bytes::from_static(b"pi"))));
    assert_eq!(got[3], text(r#"{"type":"trade","px":1}"#));
    let mut joined = Vec::new();
    for f in &got[4..] {
        match f {
            Ok(Frame::Continuation(Item::FirstBinary(d) | Item::Last(d))) => joined.extend_from_slice(d),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joined, b"book ".repeat(100));
    assert_eq!(codec.wire_counter().get(), wire.len() as u64);
}

/// With `server_no_context_takeover` the inflater is reset per message.
#[test]
fn no_context_takeover_resets() {
    let params = DeflateParams { server_no_context_takeover: true, ..DeflateParams::default() };
    let mut wire = Vec::new();
    for _ in 0..3 {
        let mut z = Compress::new(Compression::default(), false);
        wire.extend(frame(0xC1, &compress(&mut z, b"same text again")));
    }
    let mut codec = LinkCodec::new(1 << 20, Some(params));
    let got = decode_all(&mut codec, &wire);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|f| *f == Ok(Frame::Text(Bytes::from_static(b"same text again")))), "{got:?}");
}

/// A bomb (10 MB of zeros in ~10 KB) fails as Overflow once past the
/// limit; garbage and RSV1 without the extension are protocol errors.
#[test]
fn bombs_and_garbage() {
    let mut z = Compress::new(Compression::best(), false);
    let bomb = compress(&mut z, &vec![0u8; 10_000_000]);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let mut codec = LinkCodec::new(64 * 1024, Some(DeflateParams::default()));
    let got = decode_all(&mut codec, &frame(0xC2, &bomb));
    assert_eq!(got, vec![Err(ProtocolError::Overflow.to_string())]);

    let mut codec = LinkCodec::new(1 << 20, Some(DeflateParams::default()));
    let got = decode_all(&mut codec, &frame(0xC1, &[0xff; 40]));
    assert!(matches!(&got[0], Err(e) if e.contains("permessage-deflate") || e.contains("deflate")), "{got:?}");

    let mut plain = LinkCodec::new(1 << 20, None);
    assert!(decode_all(&mut plain, &frame(0xC1, b"x"))[0].is_err());
    let mut codec = LinkCodec::new(1 << 20, Some(DeflateParams::default()));
    assert!(decode_all(&mut codec, &frame(0xE1, b"x"))[0].is_err()); // RSV2
    assert!(decode_all(&mut codec, &frame(0x80, b"x"))[0].is_err()); // continuation first
}
