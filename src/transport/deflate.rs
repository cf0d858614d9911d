//! permessage-deflate (RFC 7692) on upstream links, and the frame codec of
//! every upstream link ([`LinkCodec`]).
//!
//! actix-http's frame parser rejects any RSV bit (ws/frame.rs), so a
//! compressed message (RSV1 on its first frame) cannot pass awc's codec.
//! After awc's upgrade the link's `Framed` is taken apart and rebuilt with
//! [`LinkCodec`]: without the extension it is awc's own codec (byte
//! counting aside); with it, frames are parsed here and compressed
//! messages inflated with flate2's raw DEFLATE (the `00 00 ff ff` tail put
//! back at the end of each message). We offer `client_max_window_bits`
//! and never compress what we send (RFC 7692 lets each message choose),
//! so every client-side parameter the server picks holds trivially; an
//! inflater with a 15-bit window reads any `server_max_window_bits`, and
//! `server_no_context_takeover` resets it after each message. A message's
//! inflated size is checked while it is inflated, in steps of
//! [`INFLATE_STEP`], so a decompression bomb ends as `Overflow` (close
//! 1009) holding at most `max_message_size` + one step.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::rc::Rc;

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame, Item, Message, Parser, ProtocolError};
use bytes::{Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress};

/// What we offer in `Sec-WebSocket-Extensions`.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// How much inflated output is produced between two size checks.
pub const INFLATE_STEP: usize = 16 * 1024;

/// The parameters the server accepted (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server starts each message with an empty window.
    pub server_no_context_takeover: bool,
    /// We must start each message with an empty window (we never compress).
    pub client_no_context_takeover: bool,
    /// The server's window is at most 2^n bytes.
    pub server_max_window_bits: Option<u8>,
    /// Our window must be at most 2^n bytes (we never compress).
    pub client_max_window_bits: Option<u8>,
}

/// Reads the server's `Sec-WebSocket-Extensions` answer: `Ok(None)` when
/// it accepted no extension; an error for anything we did not offer or a
/// malformed parameter (the link fails with reason `protocol`).
pub fn accepted(header: Option<&str>) -> Result<Option<DeflateParams>, String> {
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else { return Ok(None) };
    let mut found = None;
    for ext in header.split(',') {
        let mut parts = ext.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            return Err(format!("the server accepted an extension we did not offer: {name:?}"));
        }
        if found.is_some() {
            return Err("the server accepted permessage-deflate twice".into());
        }
        let mut p = DeflateParams::default();
        for param in parts.filter(|p| !p.is_empty()) {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let bits = |v: Option<&str>| -> Result<u8, String> {
                v.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("permessage-deflate: {key} needs a value from 8 to 15"))
            };
            let dup = || format!("permessage-deflate: {key} given twice");
            match (key.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) if !p.server_no_context_takeover => {
                    p.server_no_context_takeover = true
                }
                ("client_no_context_takeover", None) if !p.client_no_context_takeover => {
                    p.client_no_context_takeover = true
                }
                ("server_max_window_bits", v) if p.server_max_window_bits.is_none() => {
                    p.server_max_window_bits = Some(bits(v)?)
                }
                ("client_max_window_bits", v) if p.client_max_window_bits.is_none() => {
                    p.client_max_window_bits = Some(bits(v)?)
                }
                ("server_no_context_takeover" | "client_no_context_takeover", None)
                | ("server_max_window_bits" | "client_max_window_bits", _) => return Err(dup()),
                _ => return Err(format!("permessage-deflate: unknown parameter {param:?}")),
            }
        }
        found = Some(p);
    }
    Ok(found)
}

/// A compressed message that cannot be inflated (close 1002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateError(pub String);

impl fmt::Display for DeflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "permessage-deflate: {}", self.0)
    }
}

impl std::error::Error for DeflateError {}

fn bad(text: impl Into<String>) -> ProtocolError {
    ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, DeflateError(text.into())))
}

/// The state of the message being received.
#[derive(Debug, Default)]
struct Partial {
    /// A data message is open (its first frame had no FIN).
    open: bool,
    /// It is compressed (RSV1 on its first frame).
    compressed: bool,
    /// Bytes inflated so far.
    inflated: usize,
}

/// The inflating side of a negotiated permessage-deflate.
struct Inflate {
    params: DeflateParams,
    z: Decompress,
}

/// The codec of an upstream link: awc's, or ours when permessage-deflate
/// was negotiated. Counts the bytes of every frame it decodes into
/// `wire` (`wsgate_upstream_wire_bytes_total`).
pub struct LinkCodec {
    /// awc's client codec: encodes every frame we send; decodes when no
    /// extension was negotiated.
    plain: Codec,
    /// Set when permessage-deflate was negotiated.
    inflate: Option<Inflate>,
    /// Largest frame payload, and largest inflated message.
    max_size: usize,
    partial: Partial,
    /// Bytes of frames decoded, as they came off the socket.
    wire: Rc<Cell<u64>>,
}

impl LinkCodec {
    /// The codec for a link whose server accepted `params` (or nothing).
    pub fn new(max_size: usize, params: Option<DeflateParams>) -> Self {
        LinkCodec {
            plain: Codec::new().max_size(max_size).client_mode(),
            inflate: params.map(|params| Inflate { params, z: Decompress::new(false) }),
            max_size,
            partial: Partial::default(),
            wire: Rc::default(),
        }
    }

    /// Whether permessage-deflate is on.
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.inflate.as_ref().map(|i| i.params)
    }

    /// The counter of bytes received on the socket.
    pub fn wire_counter(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.wire)
    }

    /// Inflates one frame's payload of a compressed message; at the end of
    /// the message the `00 00 ff ff` tail is fed too.
    fn inflate(&mut self, payload: &[u8], fin: bool) -> Result<Bytes, ProtocolError> {
        let limit = self.max_size;
        let Some(inf) = self.inflate.as_mut() else { return Err(bad("RSV1 set but the extension is off")) };
        let mut out = Vec::new();
        let mut total = self.partial.inflated;
        feed(&mut inf.z, payload, &mut out, &mut total, limit)?;
        if fin {
            feed(&mut inf.z, &[0x00, 0x00, 0xff, 0xff], &mut out, &mut total, limit)?;
            if inf.params.server_no_context_takeover {
                inf.z.reset(false);
            }
        }
        self.partial.inflated = total;
        Ok(Bytes::from(out))
    }

    fn decode_own(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if src.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (src[0], src[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 {
            return Err(bad("RSV2 or RSV3 set"));
        }
        let opcode = b0 & 0x0f;
        if b1 & 0x80 != 0 {
            return Err(ProtocolError::MaskedFrame);
        }
        let (len, head) = match b1 & 0x7f {
            126 => {
                if src.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([src[2], src[3]])), 4)
            }
            127 => {
                if src.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&src[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        if len > self.max_size as u64 {
            return Err(ProtocolError::Overflow);
        }
        let total = head + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let frame = src.split_to(total).freeze();
        self.wire.set(self.wire.get() + total as u64);
        let payload = frame.slice(head..);
        let control = opcode & 0x08 != 0;
        if control && (!fin || payload.len() > 125 || rsv1) {
            return Err(bad("a control frame must be whole, at most 125 bytes, without RSV1"));
        }
        let frame = match opcode {
            0x8 => Frame::Close(Parser::try_parse_close_payload(&payload)?),
            0x9 => Frame::Ping(payload),
            0xA => Frame::Pong(payload),
            0x1 | 0x2 => {
                if self.partial.open {
                    return Err(ProtocolError::ContinuationStarted);
                }
                self.partial = Partial { open: !fin, compressed: rsv1, inflated: 0 };
                let data = if rsv1 { self.inflate(&payload, fin)? } else { payload };
                match (opcode, fin) {
                    (0x1, true) => Frame::Text(data),
                    (_, true) => Frame::Binary(data),
                    (0x1, false) => Frame::Continuation(Item::FirstText(data)),
                    (_, false) => Frame::Continuation(Item::FirstBinary(data)),
                }
            }
            0x0 => {
                if !self.partial.open {
                    return Err(ProtocolError::ContinuationNotStarted);
                }
                if rsv1 {
                    return Err(bad("RSV1 on a continuation frame"));
                }
                let data = if self.partial.compressed { self.inflate(&payload, fin)? } else { payload };
                if fin {
                    self.partial.open = false;
                    Frame::Continuation(Item::Last(data))
                } else {
                    Frame::Continuation(Item::Continue(data))
                }
            }
            other => return Err(ProtocolError::InvalidOpcode(other)),
        };
        Ok(Some(frame))
    }
}

/// Inflates `input` into `out` in steps of [`INFLATE_STEP`], failing with
/// `Overflow` as soon as the message's `total` passes `limit`.
fn feed(
    z: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    total: &mut usize,
    limit: usize,
) -> Result<(), ProtocolError> {
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < INFLATE_STEP {
            out.reserve(INFLATE_STEP);
        }
        let (in_before, out_before) = (z.total_in(), out.len());
        z.decompress_vec(&input[pos..], out, FlushDecompress::Sync).map_err(|e| bad(e.to_string()))?;
        let consumed = (z.total_in() - in_before) as usize;
        let produced = out.len() - out_before;
        pos += consumed;
        *total += produced;
        if *total > limit {
            return Err(ProtocolError::Overflow);
        }
        let room_left = out.len() < out.capacity();
        if pos >= input.len() && room_left {
            return Ok(());
        }
        if consumed == 0 && produced == 0 {
            return Err(bad("the compressed data does not progress"));
        }
    }
}

impl Decoder for LinkCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if self.inflate.is_some() {
            return self.decode_own(src);
        }
        let before = src.len();
        let res = self.plain.decode(src);
        self.wire.set(self.wire.get() + (before - src.len()) as u64);
        res
    }
}

impl Encoder<Message> for LinkCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.plain.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
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
}
