//! Shared pieces: the feed message format, clocks, a tiny HTTP GET, RSS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Wall-clock nanoseconds since the Unix epoch. Every process of a run is on
/// the same machine, so the feed's send stamp and a subscriber's receive
/// stamp come from the same clock (vDSO `clock_gettime(CLOCK_REALTIME)`).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Target size of one feed message, bytes.
pub const MSG_SIZE: usize = 200;

/// Builds one feed message (~200 bytes of JSON) into `out`.
///
/// The numbers a subscriber needs are the LAST fields, so they can be read
/// backwards from the end of the frame without parsing JSON, in raw frames
/// (`...,"fts":T}`) and in envelopes, where the message is `data` and the
/// frame ends in `}}`:
/// `{"type":"trade","symbol":...,"pad":"...","run":R,"fseq":S,"fts":T}`
pub fn build_message(out: &mut String, pad: &str, run: u64, seq: u64, ts: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        r#"{{"type":"trade","symbol":"BTC-USD","side":"buy","price":"43123.45","qty":"0.01500000","trade_id":{seq},"pad":"{pad}","run":{run},"fseq":{seq},"fts":{ts}}}"#
    );
}

/// Padding that brings a message with typical field widths to [`MSG_SIZE`].
pub fn padding() -> String {
    let mut probe = String::new();
    build_message(&mut probe, "", 1, 100_000, now_ns());
    "x".repeat(MSG_SIZE.saturating_sub(probe.len()))
}

/// What a subscriber reads from the end of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u64,
    pub seq: u64,
    pub ts: u64,
}

/// Reads the decimal number that ends right before `end` (exclusive).
fn number_before(b: &[u8], end: usize) -> Option<(u64, usize)> {
    let mut i = end;
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i == end || end - i > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[i..end] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((v, i))
}

fn strip_suffix_at(b: &[u8], end: usize, key: &[u8]) -> Option<usize> {
    let start = end.checked_sub(key.len())?;
    (&b[start..end] == key).then_some(start)
}

/// Parses `..."run":R,"fseq":S,"fts":T}` (+ any closing braces) from the end
/// of a raw frame or an envelope. `None` for anything else (events).
pub fn parse_stamp(b: &[u8]) -> Option<Stamp> {
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'}' || b[end - 1].is_ascii_whitespace()) {
        end -= 1;
    }
    let (ts, i) = number_before(b, end)?;
    let i = strip_suffix_at(b, i, br#","fts":"#)?;
    let (seq, i) = number_before(b, i)?;
    let i = strip_suffix_at(b, i, br#","fseq":"#)?;
    let (run, i) = number_before(b, i)?;
    strip_suffix_at(b, i, br#""run":"#)?;
    Some(Stamp { run, seq, ts })
}

/// `GET path` on 127.0.0.1:port; returns (status, body). Bounded by `timeout`.
pub async fn http_get(port: u16, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let work = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| anyhow::anyhow!("GET {path}: timeout"))?
}

/// Sum of every sample of a Prometheus metric whose line starts with
/// `name` and contains every `label` (e.g. `reason="overflow"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_raw_and_envelope() {
        let pad = padding();
        let mut m = String::new();
        build_message(&mut m, &pad, 3, 12345, 1_700_000_000_123_456_789);
        assert!((MSG_SIZE - 10..MSG_SIZE + 10).contains(&m.len()), "{}", m.len());
        let want = Stamp { run: 3, seq: 12345, ts: 1_700_000_000_123_456_789 };
        assert_eq!(parse_stamp(m.as_bytes()), Some(want));
        let env = format!(r#"{{"upstream":"feed","topic":"trade","seq":9,"received_at":"x","data":{m}}}"#);
        assert_eq!(parse_stamp(env.as_bytes()), Some(want));
        assert_eq!(parse_stamp(br#"{"event":"upstream","upstream":"feed","state":"connected"}"#), None);
        let v: serde_json::Value = serde_json::from_str(&env).unwrap();
        assert_eq!(v["data"]["fseq"], 12345);
    }

    #[test]
    fn metric_parsing() {
        let t = "# HELP x\nwsgate_subscriber_dropped_total{kind=\"websocket\",reason=\"overflow\"} 12\nwsgate_subscriber_dropped_total{kind=\"file\",reason=\"overflow\"} 3\nwsgate_subscriber_dropped_total_x 5\n";
        assert_eq!(metric_sum(t, "wsgate_subscriber_dropped_total", &["reason=\"overflow\""]), 15.0);
        assert_eq!(metric_sum(t, "wsgate_subscriber_dropped_total", &["kind=\"websocket\""]), 12.0);
    }
}
