//! Frame-header scanning on a raw WebSocket byte stream.
//!
//! actix-http's codec (3.20) checks a frame's size against its limit only
//! after the whole frame is buffered, so a peer declaring a 1 GiB frame
//! would be buffered in full. Both directions put this scanner in front of
//! the codec: the first header over the limit fails the stream at once
//! (SPEC §10: no input may grow memory without bound).

/// The error a read returns when the peer declares a frame over the limit.
#[derive(Debug, thiserror::Error)]
#[error("peer declared a {declared}-byte frame, over the limit of {limit}")]
pub struct FrameTooLarge {
    /// The length in the frame header.
    pub declared: u64,
    /// The configured limit.
    pub limit: u64,
}

/// Follows frame boundaries in a WebSocket byte stream (RFC 6455 §5.2)
/// without buffering payloads: only a header (at most 14 bytes) is kept.
#[derive(Debug, Default)]
pub struct FrameScan {
    /// The current frame header, as far as it has arrived.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl FrameScan {
    /// Feeds bytes; `Err(declared length)` at the first frame over `limit`.
    pub fn feed(&mut self, mut data: &[u8], limit: u64) -> Result<(), u64> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64);
                self.payload_left -= n;
                data = &data[n as usize..];
                continue;
            }
            self.head.push(data[0]);
            data = &data[1..];
            let h = &self.head;
            if h.len() < 2 {
                continue;
            }
            let ext = match h[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
            if h.len() < 2 + ext + mask {
                continue;
            }
            let len = match ext {
                2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                8 => h[2..10].iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)),
                _ => u64::from(h[1] & 0x7f),
            };
            self.head.clear();
            if len > limit {
                return Err(len);
            }
            self.payload_left = len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths in all three encodings, masked or not, split anywhere.
    #[test]
    fn scans_headers_across_chunks() {
        let mut s = FrameScan::default();
        // 5-byte masked text frame, then a 200-byte unmasked binary frame (16-bit length).
        let mut bytes = vec![0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o', 0x82, 126, 0, 200];
        bytes.extend(std::iter::repeat_n(0u8, 200));
        for chunk in bytes.chunks(3) {
            assert_eq!(s.feed(chunk, 1000), Ok(()));
        }
        // A 64-bit length over the limit fails at the header.
        let huge = [0x81, 127, 0, 0, 0, 0, 0x40, 0, 0, 0];
        assert_eq!(s.feed(&huge, 1 << 20), Err(1 << 30));
    }
}
