//! `wsgate tail URL --echo`: every text or binary message received is sent
//! back unchanged (a debugging aid, like websocat's echo modes, and the
//! testee of the Autobahn fuzzing server: `scripts/conformance.sh`).
//!
//! It runs the daemon's client frame layer end to end: the link comes from
//! [`crate::upstream::connect_once`] (dialer, proxy, TLS, upgrade,
//! permessage-deflate negotiation), frames are decoded by
//! [`LinkCodec`] (actix's codec, or ours with RFC 7692 inflation), messages
//! are joined and their UTF-8 checked by [`Reassembler`]. What it adds is
//! the protocol's failure rules (RFC 6455 §7.1.7): a frame or message it
//! refuses is answered with a close frame carrying the reason's code, and
//! the server's close is echoed; then it waits (at most [`CLOSE_WAIT`]) for
//! the server to close the TCP connection, as a client should (§7.1.1).

use std::time::Duration;

use actix_codec::Framed;
use actix_http::ws::{CloseCode, CloseReason, Frame, Item, Message, ProtocolError};
use awc::BoxedSocket;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};

use super::tail::{End, Out};
use crate::model::close;
use crate::transport::deflate::LinkCodec;
use crate::transport::reassembly::{Fragment, Kind, Reassembler};

/// How long we wait for the server to end the connection after the close
/// handshake (or after our close when we failed the connection).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The close code for a frame the codec refused (RFC 6455 §7.4.1).
pub fn refusal_code(e: &ProtocolError) -> u16 {
    match e {
        ProtocolError::Overflow => close::TOO_BIG,
        _ => close::PROTOCOL,
    }
}

/// What one received frame asks of the echo loop.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing to send (a pong, or a fragment of an unfinished message).
    Nothing,
    /// Send this back (a whole message, or the pong to a ping).
    Send(Message),
    /// The server closed: echo its close (or fail with this code) and end.
    Closed(Option<CloseReason>),
    /// We fail the connection with this code.
    Fail(u16, String),
}

/// Decides what to do with one frame (pure: unit-tested).
pub fn step(reasm: &mut Reassembler, frame: Frame) -> Step {
    let frag = match frame {
        Frame::Ping(p) => return Step::Send(Message::Pong(p)),
        Frame::Pong(_) => return Step::Nothing,
        Frame::Close(reason) => return Step::Closed(reason),
        Frame::Text(b) => Fragment::Whole(Kind::Text, b),
        Frame::Binary(b) => Fragment::Whole(Kind::Binary, b),
        Frame::Continuation(Item::FirstText(b)) => Fragment::First(Kind::Text, b),
        Frame::Continuation(Item::FirstBinary(b)) => Fragment::First(Kind::Binary, b),
        Frame::Continuation(Item::Continue(b)) => Fragment::Continue(b),
        Frame::Continuation(Item::Last(b)) => Fragment::Last(b),
    };
    match reasm.push(frag) {
        Ok(None) => Step::Nothing,
        Ok(Some(msg)) => match msg.kind {
            Kind::Binary => Step::Send(Message::Binary(msg.data)),
            // Checked UTF-8 by the reassembler; checked again here rather
            // than trusted.
            Kind::Text => match ByteString::try_from(msg.data) {
                Ok(text) => Step::Send(Message::Text(text)),
                Err(_) => Step::Fail(close::INVALID_DATA, "text message is not valid UTF-8".into()),
            },
        },
        Err(e) => Step::Fail(e.close_code(), e.to_string()),
    }
}

/// Echoes until the session ends; `deadline` bounds the whole session.
pub async fn run(
    framed: &mut Framed<BoxedSocket, LinkCodec>,
    max_message_size: usize,
    out: &Out,
    count: Option<u64>,
    deadline: Option<tokio::time::Instant>,
) -> End {
    let mut reasm = Reassembler::new(max_message_size);
    let mut echoed = 0u64;
    let work = async {
        loop {
            let frame = match framed.next().await {
                None => return End::Failed("tcp: connection closed by the server without a close frame".into()),
                Some(Err(e)) => {
                    let code = refusal_code(&e);
                    return fail(framed, out, code, format!("protocol: {e}")).await;
                }
                Some(Ok(f)) => f,
            };
            match step(&mut reasm, frame) {
                Step::Nothing => {}
                Step::Send(msg) => {
                    let is_data = matches!(msg, Message::Text(_) | Message::Binary(_));
                    if let Message::Pong(p) = &msg {
                        out.control("<", "ping", &super::tail::hex(p), None);
                    }
                    if let Err(e) = framed.send(msg).await {
                        return End::Failed(format!("tcp: sending failed: {e}"));
                    }
                    if is_data {
                        echoed += 1;
                        if count.is_some_and(|n| echoed >= n) {
                            return super::tail::goodbye(framed, out).await;
                        }
                    }
                }
                Step::Closed(reason) => return closed(framed, out, reason).await,
                Step::Fail(code, why) => return fail(framed, out, code, format!("protocol: {why}")).await,
            }
        }
    };
    match deadline {
        Some(d) => match tokio::time::timeout_at(d, work).await {
            Ok(end) => end,
            Err(_) => End::Failed("timeout: the session did not end within --timeout".into()),
        },
        None => work.await,
    }
}

/// The server closed: echo its code (RFC 6455 §5.5.1) and wait for the
/// server to end the TCP connection.
async fn closed(framed: &mut Framed<BoxedSocket, LinkCodec>, out: &Out, reason: Option<CloseReason>) -> End {
    let code = reason.as_ref().map(|r| u16::from(r.code));
    let text = reason.as_ref().and_then(|r| r.description.clone()).unwrap_or_default();
    out.control("<", "close", &text, code);
    // The echo carries the code only: the reason is the server's text.
    let echo = reason.map(|r| CloseReason { code: r.code, description: None });
    out.control(">", "close", "", code);
    let _ = framed.send(Message::Close(echo)).await;
    drain(framed).await;
    match code {
        Some(1000) => End::Done,
        Some(c) => End::Failed(format!("closed: the server closed with code {c} {text}")),
        None => End::Failed("closed: the server closed without a code".into()),
    }
}

/// We fail the connection (RFC 6455 §7.1.7): a close frame with `code`,
/// then wait for the server to end the connection.
async fn fail(framed: &mut Framed<BoxedSocket, LinkCodec>, out: &Out, code: u16, why: String) -> End {
    out.control(">", "close", "", Some(code));
    let reason = CloseReason { code: CloseCode::from(code), description: None };
    if framed.send(Message::Close(Some(reason))).await.is_ok() {
        drain(framed).await;
    }
    End::Failed(why)
}

/// Reads (and drops) whatever comes until the server ends the connection,
/// for at most [`CLOSE_WAIT`]; a decode error ends it too.
async fn drain(framed: &mut Framed<BoxedSocket, LinkCodec>) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = framed.next().await {} }).await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Messages come back whole and unchanged (fragments joined); pings are
    /// answered; the server's close ends the loop; bad input picks the code.
    #[test]
    fn echo_steps() {
        let mut r = Reassembler::new(16);
        let b = Bytes::from_static;
        assert_eq!(step(&mut r, Frame::Text(b(b"hi"))), Step::Send(Message::Text("hi".into())));
        assert_eq!(step(&mut r, Frame::Binary(b(b"\xff"))), Step::Send(Message::Binary(b(b"\xff"))));
        assert_eq!(step(&mut r, Frame::Ping(b(b"p"))), Step::Send(Message::Pong(b(b"p"))));
        assert_eq!(step(&mut r, Frame::Pong(b(b"p"))), Step::Nothing);
        assert_eq!(step(&mut r, Frame::Continuation(Item::FirstText(b(b"\xc3")))), Step::Nothing);
        // A ping between fragments is answered; the message goes on.
        assert_eq!(step(&mut r, Frame::Ping(b(b""))), Step::Send(Message::Pong(b(b""))));
        assert_eq!(step(&mut r, Frame::Continuation(Item::Last(b(b"\xa9")))), Step::Send(Message::Text("é".into())));
        assert!(matches!(step(&mut r, Frame::Text(b(b"\xc3\x28"))), Step::Fail(1007, _)));
        let mut r = Reassembler::new(16);
        assert!(matches!(step(&mut r, Frame::Continuation(Item::Last(b(b"x")))), Step::Fail(1002, _)));
        assert!(matches!(step(&mut r, Frame::Binary(Bytes::from(vec![0; 17]))), Step::Fail(1009, _)));
        assert_eq!(step(&mut r, Frame::Close(None)), Step::Closed(None));
        assert_eq!(refusal_code(&ProtocolError::Overflow), 1009);
        assert_eq!(refusal_code(&ProtocolError::BadOpCode), 1002);
    }
}
