//! WebSocket frames as the server writes them (RFC 6455 §5.2).
//!
//! A server-to-client frame is final and unmasked (§5.1), so the frame of a
//! message is byte-identical for every subscriber that gets it: it is built
//! once per message (in [`super::Delivery`]) and shared as `Bytes`. Plain
//! byte work, no codec: this module knows no actix.

use bytes::{BufMut, Bytes, BytesMut};

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const PONG: u8 = 0xA;

/// The longest header of an unmasked frame: 2 bytes + a 64-bit length.
pub const MAX_HEADER: usize = 10;

/// A close frame's reason text is at most this long (125 - 2 for the code).
const MAX_CLOSE_REASON: usize = 123;

/// The header of a final, unmasked frame with `len` payload bytes: the
/// bytes, and how many of them are used.
pub fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | (opcode & 0x0f);
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// A whole frame: header and a copy of `payload`, in one buffer.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (h, used) = header(opcode, payload.len());
    let mut out = BytesMut::with_capacity(used + payload.len());
    out.put_slice(&h[..used]);
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with `code` and `reason` (cut to 123 bytes at a character
/// boundary, as RFC 6455 §5.5 allows no more).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 2 + MAX_CLOSE_REASON];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    frame(CLOSE, &payload[..2 + end])
}

/// A close frame without a code (the answer to a close frame without one).
pub fn close_empty() -> Bytes {
    Bytes::from_static(&[0x80 | CLOSE, 0])
}

/// A payload written in place after room for the longest header, so that
/// the finished frame needs no copy: [`FrameBuf::finish`] writes the header
/// just in front of the payload and slices the buffer there.
pub struct FrameBuf {
    buf: BytesMut,
}

impl FrameBuf {
    /// Room for a payload of about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(MAX_HEADER + capacity);
        buf.put_bytes(0, MAX_HEADER);
        FrameBuf { buf }
    }

    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        &self.buf[MAX_HEADER..]
    }

    /// The frame: header and payload, one buffer, no copy.
    pub fn finish(mut self, opcode: u8) -> Bytes {
        let (h, used) = header(opcode, self.buf.len() - MAX_HEADER);
        let start = MAX_HEADER - used;
        self.buf[start..MAX_HEADER].copy_from_slice(&h[..used]);
        self.buf.freeze().slice(start..)
    }
}

impl std::ops::Deref for FrameBuf {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl std::ops::DerefMut for FrameBuf {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

/// Where a frame's payload starts (after its header).
pub fn payload_offset(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length encoding, checked against actix-http's own parser.
    #[test]
    fn frames_parse_back() {
        use actix_codec::Decoder;
        use actix_http::ws::{Codec, Frame};
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 200_000] {
            let payload = vec![b'a'; len];
            for built in [frame(TEXT, &payload), {
                let mut b = FrameBuf::with_capacity(len);
                b.put_slice(&payload);
                b.finish(TEXT)
            }] {
                assert_eq!(payload_offset(&built), built.len() - len, "{len}");
                let mut codec = Codec::new().client_mode().max_size(1 << 20);
                let mut buf = BytesMut::from(&built[..]);
                match codec.decode(&mut buf) {
                    Ok(Some(Frame::Text(t))) => assert_eq!(t.len(), len),
                    other => panic!("{len}: {other:?}"),
                }
                assert!(buf.is_empty());
            }
        }
    }

    /// Close reasons are cut at a character boundary within 123 bytes.
    #[test]
    fn close_reason_is_bounded() {
        let long = "é".repeat(100);
        let f = close(1008, &long);
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert_eq!(&close(1001, "")[..], &[0x88, 2, 0x03, 0xe9]);
    }
}
