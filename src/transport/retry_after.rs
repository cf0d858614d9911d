//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date, as a
//! delay from now, for a refused upgrade (read from the raw response head,
//! which awc does not keep) and for a webhook answer alike.

use std::time::{Duration, SystemTime};

/// The longest delay taken from the response head of a refused upgrade.
pub const HEAD_CAP: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` in seconds or as an HTTP date, as a delay from `now`, at
/// most `cap`; a date in the past is no delay; anything else is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(cap));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(cap))
}

/// Finds `Retry-After` in a raw response head (status line, then header
/// lines), as a delay from `now` of at most [`HEAD_CAP`].
pub fn retry_after_in_head(head: &[u8], now: SystemTime) -> Option<Duration> {
    let text = String::from_utf8_lossy(head);
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("retry-after").then_some(value)
    })?;
    parse_retry_after(value, now, HEAD_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry-After in a response head, in seconds and as an HTTP date; absent otherwise.
    #[test]
    fn in_head() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let head = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\n\r\n";
        assert_eq!(retry_after_in_head(head, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let head = format!("HTTP/1.1 503 x\r\nRetry-After: {date}\r\n\r\n");
        assert_eq!(retry_after_in_head(head.as_bytes(), now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after_in_head(b"HTTP/1.1 503 x\r\nX: 1\r\n\r\n", now), None);
        assert_eq!(retry_after_in_head(b"HTTP/1.1 503 x\r\nRetry-After: soon\r\n\r\n", now), None);
        assert_eq!(retry_after_in_head(b"HTTP/1.1 503 x\r\nRetry-After: 999999\r\n\r\n", now), Some(HEAD_CAP));
    }

    /// A header value in seconds or as a date; capped; garbage ignored.
    #[test]
    fn value() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let cap = Duration::from_secs(300);
        assert_eq!(parse_retry_after(" 7 ", now, cap), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("99999", now, cap), Some(cap));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now, cap), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now, cap), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now, cap), None);
    }
}
