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
#[path = "deflate_tests.rs"]
mod tests;
