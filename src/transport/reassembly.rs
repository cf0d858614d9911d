//! Reassembly of fragmented WebSocket messages, capped at `max_message_size`,
//! with UTF-8 validation of text. Plain code, no actix: unit-tested and fuzzed.
//!
//! Text is checked as each fragment arrives, not only once the message is
//! whole: a fragment that cannot be the start of valid UTF-8, whatever
//! follows, fails the message at once (RFC 6455 §8.1 "fail fast"; Autobahn
//! cases 6.4.x). Only a character split across fragments (at most 3 bytes)
//! waits for the next one.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::model::close;

/// Text or binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message (must be UTF-8).
    Text,
    /// A binary message.
    Binary,
}

/// One data frame as the codec hands it over.
#[derive(Debug, Clone)]
pub enum Fragment {
    /// An unfragmented message.
    Whole(Kind, Bytes),
    /// The first frame of a fragmented message.
    First(Kind, Bytes),
    /// A middle frame.
    Continue(Bytes),
    /// The last frame.
    Last(Bytes),
}

/// Why a message cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Larger than the configured cap (close 1009).
    #[error("message of at least {size} bytes exceeds max_message_size {limit}")]
    Oversize {
        /// Bytes seen so far.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// A continuation without a first frame, or a new message inside one (close 1002).
    #[error("unexpected {0} frame")]
    Sequence(&'static str),
    /// Text that is not UTF-8 (close 1007).
    #[error("text message is not valid UTF-8")]
    Utf8,
}

impl FrameError {
    /// The close code to send for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Oversize { .. } => close::TOO_BIG,
            FrameError::Sequence(_) => close::PROTOCOL,
            FrameError::Utf8 => close::INVALID_DATA,
        }
    }
}

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: Kind,
    /// The payload (UTF-8 checked for text).
    pub data: Bytes,
    /// The same payload as checked text, for a text message: the one UTF-8
    /// pass of a message (decoding reads it as `&str` without another).
    text: Option<ByteString>,
}

impl Message {
    /// A message of `kind`; text is checked for UTF-8 here, once.
    pub fn new(kind: Kind, data: Bytes) -> Result<Self, FrameError> {
        let text = match kind {
            Kind::Text => Some(ByteString::try_from(data.clone()).map_err(|_| FrameError::Utf8)?),
            Kind::Binary => None,
        };
        Ok(Message { kind, data, text })
    }

    /// The payload as text, for a text message.
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// Joins fragments into messages.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    partial: Option<(Kind, BytesMut)>,
    /// Bytes of the partial text message known to be valid UTF-8.
    checked: usize,
}

impl Reassembler {
    /// A reassembler that refuses messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Reassembler { limit, partial: None, checked: 0 }
    }

    /// Feeds one frame; returns a message when one is complete.
    pub fn push(&mut self, frag: Fragment) -> Result<Option<Message>, FrameError> {
        match frag {
            Fragment::Whole(kind, data) => {
                if self.partial.is_some() {
                    return Err(FrameError::Sequence("data frame inside a fragmented message"));
                }
                self.check_size(data.len())?;
                finish(kind, data).map(Some)
            }
            Fragment::First(kind, data) => {
                if self.partial.is_some() {
                    return Err(FrameError::Sequence("first fragment inside a fragmented message"));
                }
                self.check_size(data.len())?;
                let mut buf = BytesMut::with_capacity(data.len() * 2);
                buf.extend_from_slice(&data);
                self.partial = Some((kind, buf));
                self.checked = 0;
                self.check_text()?;
                Ok(None)
            }
            frag @ (Fragment::Continue(_) | Fragment::Last(_)) => {
                let (last, data) = match frag {
                    Fragment::Last(d) => (true, d),
                    Fragment::Continue(d) | Fragment::Whole(_, d) | Fragment::First(_, d) => (false, d),
                };
                let Some((_, buf)) = self.partial.as_mut() else {
                    return Err(FrameError::Sequence("continuation without a first fragment"));
                };
                let size = buf.len().saturating_add(data.len());
                if size > self.limit {
                    self.partial = None;
                    return Err(FrameError::Oversize { size, limit: self.limit });
                }
                buf.extend_from_slice(&data);
                self.check_text()?;
                if !last {
                    return Ok(None);
                }
                let Some((kind, buf)) = self.partial.take() else { return Ok(None) };
                if kind == Kind::Text && self.checked != buf.len() {
                    // The message ends inside a character.
                    return Err(FrameError::Utf8);
                }
                // Checked per fragment above (to fail fast); the whole is
                // checked once more into its `ByteString` (fragmented
                // messages only: the rare case).
                Message::new(kind, buf.freeze()).map(Some)
            }
        }
    }

    /// Checks the partial text message's new bytes: an error as soon as
    /// they cannot be valid UTF-8 whatever comes next; a character cut at
    /// the end waits for the next fragment.
    fn check_text(&mut self) -> Result<(), FrameError> {
        let Some((Kind::Text, buf)) = self.partial.as_ref() else { return Ok(()) };
        match std::str::from_utf8(&buf[self.checked..]) {
            Ok(_) => self.checked = buf.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => {
                self.partial = None;
                return Err(FrameError::Utf8);
            }
        }
        Ok(())
    }

    fn check_size(&self, size: usize) -> Result<(), FrameError> {
        if size > self.limit {
            Err(FrameError::Oversize { size, limit: self.limit })
        } else {
            Ok(())
        }
    }
}

fn finish(kind: Kind, data: Bytes) -> Result<Message, FrameError> {
    Message::new(kind, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// Fragments join; limits, sequence and UTF-8 are enforced.
    #[test]
    fn reassembly_table() {
        use Fragment::*;
        type Case = (Vec<Fragment>, Result<Option<&'static [u8]>, FrameError>);
        let cases: Vec<Case> = vec![
            (vec![Whole(Kind::Text, b(b"hello"))], Ok(Some(b"hello"))),
            (vec![First(Kind::Text, b(b"he")), Continue(b(b"ll")), Last(b(b"o"))], Ok(Some(b"hello"))),
            (vec![First(Kind::Binary, b(b"\xff")), Last(b(b"\x00"))], Ok(Some(b"\xff\x00"))),
            (vec![Whole(Kind::Text, b(b"0123456789a"))], Err(FrameError::Oversize { size: 11, limit: 10 })),
            (
                vec![First(Kind::Text, b(b"012345")), Last(b(b"6789ab"))],
                Err(FrameError::Oversize { size: 12, limit: 10 }),
            ),
            (vec![Last(b(b"x"))], Err(FrameError::Sequence("continuation without a first fragment"))),
            (
                vec![First(Kind::Text, b(b"a")), Whole(Kind::Text, b(b"b"))],
                Err(FrameError::Sequence("data frame inside a fragmented message")),
            ),
            (vec![Whole(Kind::Text, b(b"\xc3\x28"))], Err(FrameError::Utf8)),
            // A UTF-8 character split across fragments is fine once joined.
            (vec![First(Kind::Text, b(b"\xc3")), Last(b(b"\xa9"))], Ok(Some("é".as_bytes()))),
            (vec![First(Kind::Text, b(b"\xe2")), Continue(b(b"\x82")), Last(b(b"\xac"))], Ok(Some("€".as_bytes()))),
            // A message that ends inside a character.
            (vec![First(Kind::Text, b(b"a")), Last(b(b"\xc3"))], Err(FrameError::Utf8)),
            // Binary is never checked.
            (vec![First(Kind::Binary, b(b"\xc3")), Last(b(b"\x28"))], Ok(Some(b"\xc3\x28"))),
        ];
        for (frags, want) in cases {
            let mut r = Reassembler::new(10);
            let mut got = Ok(None);
            for f in frags.clone() {
                got = r.push(f);
                if got.is_err() {
                    break;
                }
            }
            let got = got.map(|m| m.map(|m| m.data.to_vec()));
            assert_eq!(got, want.map(|o| o.map(<[u8]>::to_vec)), "{frags:?}");
        }
    }

    /// Invalid UTF-8 fails at the fragment that carries it, before the
    /// message ends (fail fast, RFC 6455 §8.1), also inside a fragment
    /// that starts with the tail of a split character.
    #[test]
    fn invalid_text_fails_fast() {
        use Fragment::*;
        let cases: Vec<Vec<Fragment>> = vec![
            vec![First(Kind::Text, b(b"\xff"))],
            vec![First(Kind::Text, b(b"ok")), Continue(b(b"\xed\xa0\x80"))],
            vec![
                First(Kind::Text, b(b"\xce")),
                Continue(b(b"\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80")),
            ],
            vec![First(Kind::Text, b(b"\xc3")), Continue(b(b"\x28"))],
        ];
        for frags in cases {
            let mut r = Reassembler::new(100);
            let n = frags.len();
            for (i, f) in frags.clone().into_iter().enumerate() {
                let got = r.push(f);
                if i + 1 < n {
                    assert_eq!(got, Ok(None), "{frags:?}");
                } else {
                    assert_eq!(got, Err(FrameError::Utf8), "{frags:?}");
                }
            }
            // The failed message is gone: a new one may start.
            assert_eq!(r.push(Whole(Kind::Text, b(b"x"))).map(|m| m.map(|m| m.data)), Ok(Some(b(b"x"))));
        }
    }
}
