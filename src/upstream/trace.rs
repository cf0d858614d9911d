//! `trace = true` (SPEC §12): every frame of that upstream at debug level
//! (direction, opcode, length, the first [`PREVIEW`] bytes) and the
//! handshake's request and answer headers. Secrets never show: header
//! values that carry credentials are `***`, and every known secret (the
//! token, URL secrets) is scrubbed from frame text (`config::scrub`).

use actix_http::ws::Item;
use awc::ws::{CloseReason, Frame, Message};
use tracing::debug;

use crate::config::{scrub, Redactor, REDACTED};

/// How many bytes of a frame's payload a trace line shows.
pub const PREVIEW: usize = 200;

/// The way a frame went.
#[derive(Debug, Clone, Copy)]
pub enum Dir {
    /// From the feed.
    Recv,
    /// To the feed.
    Send,
}

impl Dir {
    fn as_str(self) -> &'static str {
        match self {
            Dir::Recv => "recv",
            Dir::Send => "send",
        }
    }
}

/// The first [`PREVIEW`] bytes of `data`: as text when they are UTF-8 (a
/// character cut at the end is dropped), else as hex.
pub fn preview(data: &[u8], text: bool) -> String {
    let head = &data[..data.len().min(PREVIEW)];
    if text {
        match std::str::from_utf8(head) {
            Ok(s) => return s.to_string(),
            Err(e) if e.error_len().is_none() => return String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned(),
            Err(_) => {}
        }
    }
    head.iter().map(|b| format!("{b:02x}")).collect()
}

/// Logs one frame at debug, `secrets` scrubbed from its preview.
pub fn frame(upstream: &str, dir: Dir, opcode: &str, data: &[u8], text: bool, secrets: &[String]) {
    let shown = scrub(&preview(data, text), secrets);
    debug!(upstream = %upstream, dir = dir.as_str(), opcode, len = data.len(), data = %shown, "Frame.");
}

/// The opcode name and payload of a frame we send, for [`frame`].
pub fn sent(msg: &Message) -> (&'static str, Vec<u8>, bool) {
    match msg {
        Message::Text(t) => ("text", t.as_bytes().to_vec(), true),
        Message::Binary(b) => ("binary", b.to_vec(), false),
        Message::Ping(b) => ("ping", b.to_vec(), false),
        Message::Pong(b) => ("pong", b.to_vec(), false),
        Message::Close(r) => ("close", close_payload(r.as_ref()), true),
        Message::Continuation(_) => ("continuation", Vec::new(), false),
        Message::Nop => ("nop", Vec::new(), false),
    }
}

/// The opcode name and payload of a frame we received, for [`frame`].
pub fn received(f: &Frame) -> (&'static str, &[u8], bool) {
    match f {
        Frame::Text(b) => ("text", b, true),
        Frame::Binary(b) => ("binary", b, false),
        Frame::Continuation(Item::FirstText(b)) => ("continuation(first text)", b, true),
        Frame::Continuation(Item::FirstBinary(b)) => ("continuation(first binary)", b, false),
        Frame::Continuation(Item::Continue(b)) => ("continuation", b, false),
        Frame::Continuation(Item::Last(b)) => ("continuation(last)", b, false),
        Frame::Ping(b) => ("ping", b, false),
        Frame::Pong(b) => ("pong", b, false),
        Frame::Close(_) => ("close", &[], true),
    }
}

/// A close frame's payload as text: `code reason`.
pub fn close_payload(r: Option<&CloseReason>) -> Vec<u8> {
    r.map(|r| format!("{} {}", u16::from(r.code), r.description.as_deref().unwrap_or_default()).into_bytes())
        .unwrap_or_default()
}

/// Logs handshake headers at debug, one line for the lot, credential
/// values as `***` and `secrets` scrubbed from the rest.
pub fn headers<'a>(
    upstream: &str,
    what: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    redactor: &Redactor,
    also_secret: &[&str],
    secrets: &[String],
) {
    let shown: Vec<String> = headers
        .map(|(name, value)| {
            let secret = redactor.is_secret_header(name) || also_secret.iter().any(|s| s.eq_ignore_ascii_case(name));
            let value = if secret { REDACTED.to_string() } else { scrub(&String::from_utf8_lossy(value), secrets) };
            format!("{name}: {value}")
        })
        .collect();
    debug!(upstream = %upstream, headers = %shown.join(" | "), "Handshake {what}.");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text stays text up to 200 bytes (no half characters), binary is hex.
    #[test]
    fn previews() {
        assert_eq!(preview(b"hello", true), "hello");
        assert_eq!(preview(&[0, 255], false), "00ff");
        assert_eq!(preview(&[0xff, 0xfe], true), "fffe");
        let long = "é".repeat(150); // 300 bytes
        let p = preview(long.as_bytes(), true);
        assert_eq!(p.len(), 200);
        assert_eq!(preview(&[7u8; 500], false).len(), 400);
    }
}
