//! CPU per upstream message with and without permessage-deflate (issue 12):
//! decodes the same 200-byte JSON messages from plain frames and from
//! compressed frames (context takeover, as a server sends them) through the
//! upstream link codec, and reports CPU nanoseconds per message (this
//! thread's CPU time, so other load on the machine does not count) and the
//! bytes on the wire.
//!
//!     cargo run --release --example deflate_cost [messages]

use actix_codec::Decoder;
use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use wsgate::transport::deflate::{DeflateParams, LinkCodec};

/// CPU time of this thread in nanoseconds (Linux schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// An unmasked server frame: FIN, RSV1 when compressed, opcode text.
fn frame(payload: &[u8], compressed: bool) -> Vec<u8> {
    let mut f = vec![if compressed { 0xC1 } else { 0x81 }];
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

fn message(i: usize) -> String {
    let sym = ["BTCUSD", "ETHUSD", "SOLUSD"][i % 3];
    let side = if i % 2 == 0 { "buy" } else { "sell" };
    let mut m = format!(
        r#"{{"type":"trade","symbol":"{sym}","price":{:.2},"size":{:.4},"side":"{side}","ts":{},"id":{i}"#,
        97000.0 + (i % 997) as f64 * 0.37,
        0.001 + (i % 113) as f64 * 0.013,
        1_795_437_169_986u64 + i as u64
    );
    while m.len() < 199 {
        m.push(' ');
    }
    m.push('}');
    m
}

fn decode_all(codec: &mut LinkCodec, wire: &[u8], n: usize) -> u64 {
    let mut buf = BytesMut::from(wire);
    let start = thread_cpu_ns();
    let mut got = 0;
    while let Ok(Some(_)) = codec.decode(&mut buf) {
        got += 1;
    }
    let spent = thread_cpu_ns() - start;
    assert_eq!(got, n, "every message decoded");
    spent
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let messages: Vec<String> = (0..n).map(message).collect();
    let plain: Vec<u8> = messages.iter().flat_map(|m| frame(m.as_bytes(), false)).collect();
    let mut z = Compress::new(Compression::default(), false);
    let mut compressed = Vec::new();
    for m in &messages {
        let mut out = Vec::with_capacity(m.len() + 64);
        z.compress_vec(m.as_bytes(), &mut out, FlushCompress::Sync).expect("compress");
        out.truncate(out.len() - 4); // RFC 7692: strip 00 00 ff ff
        compressed.extend(frame(&out, true));
    }
    let size = 1 << 20;
    let mut best = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        let p = decode_all(&mut LinkCodec::new(size, None), &plain, n);
        let d = decode_all(&mut LinkCodec::new(size, Some(DeflateParams::default())), &compressed, n);
        best = (best.0.min(p), best.1.min(d));
    }
    println!("messages: {n} x 200-byte JSON");
    println!(
        "plain:   {:>7.0} ns CPU per message, {:>6.1} wire bytes per message",
        best.0 as f64 / n as f64,
        plain.len() as f64 / n as f64
    );
    println!(
        "deflate: {:>7.0} ns CPU per message, {:>6.1} wire bytes per message (context takeover)",
        best.1 as f64 / n as f64,
        compressed.len() as f64 / n as f64
    );
}
