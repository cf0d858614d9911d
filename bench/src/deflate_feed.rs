//! The feed with permessage-deflate (RFC 7692), for the scale run with
//! compressed upstreams. tungstenite 0.28 has no permessage-deflate, so
//! this connection is written by hand: the handshake (the accept key from
//! tungstenite), compressed text frames with RSV1 (one compressor per
//! connection with context takeover, as most venues run it: each message
//! is a sync flush with its `00 00 ff ff` tail removed), and the client's
//! frames read just enough to answer pings and see a close.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use flate2::{Compress, Compression, FlushCompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::common::{build_message, now_ns, padding};
use crate::feed::FeedArgs;

/// Reads the upgrade request, answers 101 with permessage-deflate when the
/// client offers it. Returns whether it is on.
async fn handshake(sock: &mut TcpStream) -> anyhow::Result<bool> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || req.len() > 16 * 1024 {
            bail!("no upgrade request");
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let key = header("sec-websocket-key").context("no Sec-WebSocket-Key")?;
    let deflate = header("sec-websocket-extensions").is_some_and(|e| e.contains("permessage-deflate"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if deflate {
        resp += "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    }
    resp += "\r\n";
    sock.write_all(resp.as_bytes()).await?;
    Ok(deflate)
}

/// Appends one unmasked server frame (FIN set).
fn put_frame(out: &mut Vec<u8>, opcode: u8, rsv1: bool, payload: &[u8]) {
    out.push(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Compresses one message with the connection's compressor (context
/// takeover), without the `00 00 ff ff` tail.
fn deflate(c: &mut Compress, msg: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    out.clear();
    out.reserve(msg.len() + 64);
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        c.compress_vec(&msg[consumed..], out, FlushCompress::Sync)?;
        if (c.total_in() - start) as usize == msg.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out.truncate(out.len() - 4);
    Ok(())
}

/// Client frames: answers pings (pong with the same payload); `Err` on
/// close or EOF. Keeps what is incomplete in `buf`.
fn client_frames(buf: &mut Vec<u8>, out: &mut Vec<u8>) -> anyhow::Result<()> {
    loop {
        if buf.len() < 2 {
            return Ok(());
        }
        let opcode = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        let (len, mut at) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
            126 | 127 => return Ok(()),
            n => (n as usize, 2),
        };
        let mask = if masked {
            if buf.len() < at + 4 {
                return Ok(());
            }
            at += 4;
            Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
        } else {
            None
        };
        if buf.len() < at + len {
            return Ok(());
        }
        let mut payload = buf[at..at + len].to_vec();
        if let Some(m) = mask {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
        }
        buf.drain(..at + len);
        match opcode {
            0x9 => put_frame(out, 0xA, false, &payload),
            0x8 => bail!("client closed"),
            _ => {}
        }
    }
}

/// One connection of `feed --deflate`: like the plain feed (rate, count,
/// `run`), compressed.
pub async fn serve(
    mut sock: TcpStream,
    args: &FeedArgs,
    run: u64,
    deadline: Instant,
    go: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let on = handshake(&mut sock).await?;
    let mut comp = Compress::new(Compression::fast(), false);
    let pad = padding();
    let (mut text, mut packed, mut out) = (String::with_capacity(256), Vec::new(), Vec::with_capacity(64 * 1024));
    let mut inbuf = Vec::with_capacity(4096);
    let mut rd = [0u8; 4096];
    tokio::select! {
        _ = go.wait_for(|g| *g) => {}
        _ = tokio::time::sleep_until(deadline.into()) => return Ok(()),
    }
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {}
            r = sock.read(&mut rd) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                inbuf.extend_from_slice(&rd[..n]);
                out.clear();
                if client_frames(&mut inbuf, &mut out).is_err() {
                    return Ok(());
                }
                sock.write_all(&out).await?;
                continue;
            }
        }
        if args.idle || sent >= args.count {
            continue;
        }
        let due = if args.rate == 0 { sent + 64 } else { (started.elapsed().as_secs_f64() * args.rate as f64) as u64 };
        let batch = due.saturating_sub(sent).min(args.rate / 10 + 64).min(args.count - sent);
        out.clear();
        for _ in 0..batch {
            sent += 1;
            build_message(&mut text, &pad, run, sent, now_ns());
            if on {
                deflate(&mut comp, text.as_bytes(), &mut packed)?;
                put_frame(&mut out, 0x1, true, &packed);
            } else {
                put_frame(&mut out, 0x1, false, text.as_bytes());
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    /// Two messages compressed with context takeover inflate back, each
    /// with the tail put back (what a client does, RFC 7692 §7.2.2).
    #[test]
    fn messages_inflate_back() {
        let mut c = Compress::new(Compression::fast(), false);
        let mut d = Decompress::new(false);
        for msg in [&b"{\"type\":\"trade\",\"x\":1}"[..], b"{\"type\":\"trade\",\"x\":2}"] {
            let mut packed = Vec::new();
            deflate(&mut c, msg, &mut packed).unwrap();
            packed.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = Vec::with_capacity(256);
            d.decompress_vec(&packed, &mut out, FlushDecompress::Sync).unwrap();
            assert_eq!(out, msg);
        }
    }

    /// A masked ping gets a pong with its payload; a close ends.
    #[test]
    fn ping_and_close() {
        let mut buf = vec![0x89, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let mut out = Vec::new();
        client_frames(&mut buf, &mut out).unwrap();
        assert_eq!(out, vec![0x8A, 2, b'h', b'i']);
        let mut close = vec![0x88, 0x80, 0, 0, 0, 0];
        assert!(client_frames(&mut close, &mut out).is_err());
    }
}
