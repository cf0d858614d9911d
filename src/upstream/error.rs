//! Why a link failed, as one enum with a bounded [`Reason`], and the one
//! function that decides whether to try again.

use std::time::Duration;

use crate::model::Reason;
use crate::transport::TransportError;

/// A failure of one upstream link. The text never holds a secret: errors
/// are built from our own words, and outside text is scrubbed before it is
/// recorded (see `Upstream::fail`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Name resolution failed.
    #[error("cannot resolve {host}: {detail}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's words.
        detail: String,
    },
    /// TCP connect failed, or the stream was reset or hit EOF.
    #[error("connection failed: {0}")]
    Tcp(String),
    /// TLS setup, handshake or certificate failure.
    #[error("tls: {0}")]
    Tls(String),
    /// The proxy could not be reached or refused (SPEC §12).
    #[error("proxy: {0}")]
    Proxy(String),
    /// `connect_timeout` passed during TCP, TLS or the upgrade.
    #[error("no upgrade within {0:?}")]
    Timeout(Duration),
    /// The upgrade got a non-101 status.
    #[error("upgrade answered HTTP {status}")]
    Http {
        /// The status code.
        status: u16,
        /// A `Retry-After` on 429/503, honoured as a lower bound on the delay.
        retry_after: Option<Duration>,
    },
    /// Message auth failed or timed out; or the token could not be read.
    #[error("auth: {0}")]
    Auth(String),
    /// A handshake step that is not an auth step failed or timed out.
    #[error("handshake: {0}")]
    Handshake(String),
    /// A sequence gap, with `on_gap = "reconnect"`.
    #[error("sequence: {0}")]
    Sequence(String),
    /// A stale topic, with `on_stale = "reconnect"`.
    #[error("stale: {0}")]
    Stale(String),
    /// The server sent a close frame.
    #[error("server closed the link {}{}", .code.map_or_else(|| "without a close code".to_string(), |c| format!("with code {c}")), if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Closed {
        /// The close code, if any.
        code: Option<u16>,
        /// The close reason text.
        reason: String,
    },
    /// No frame of any kind within `heartbeat.timeout`.
    #[error("dead link: no frame within {0:?}")]
    DeadLink(Duration),
    /// No data message within `heartbeat.idle_timeout`.
    #[error("idle: no data message within {0:?}")]
    Idle(Duration),
    /// A message over `max_message_size` (closed with 1009).
    #[error("{0}")]
    Oversize(String),
    /// Bad frames, an unexpected upgrade answer or subprotocol (close 1002).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A text message that is not UTF-8 (close 1007; reason `protocol`).
    #[error("protocol: {0}")]
    InvalidText(String),
    /// Handling this upstream's data panicked.
    #[error("panic while handling upstream data")]
    Panic,
    /// Shutting down.
    #[error("shutting down")]
    Shutdown,
    /// Removed or changed by a reload.
    #[error("reloaded")]
    Reload,
    /// Replaced by a newer link at `max_connection_age` (SPEC §14).
    #[error("rotated")]
    Rotate,
}

impl LinkError {
    /// The bounded label of this error (SPEC §10a).
    pub fn reason(&self) -> Reason {
        match self {
            LinkError::Dns { .. } => Reason::Dns,
            LinkError::Tcp(_) => Reason::Tcp,
            LinkError::Tls(_) => Reason::Tls,
            LinkError::Proxy(_) => Reason::Proxy,
            LinkError::Timeout(_) => Reason::Timeout,
            LinkError::Http { status: 401 | 403, .. } => Reason::Auth,
            LinkError::Http { status: 400..=499, .. } => Reason::Http4xx,
            LinkError::Http { status: 500..=599, .. } => Reason::Http5xx,
            LinkError::Http { .. } => Reason::Protocol,
            LinkError::Auth(_) => Reason::Auth,
            LinkError::Handshake(_) => Reason::Handshake,
            LinkError::Sequence(_) => Reason::Sequence,
            LinkError::Stale(_) => Reason::Stale,
            LinkError::Closed { .. } => Reason::Closed,
            LinkError::DeadLink(_) => Reason::DeadLink,
            LinkError::Idle(_) => Reason::Idle,
            LinkError::Oversize(_) => Reason::Oversize,
            LinkError::Protocol(_) | LinkError::InvalidText(_) => Reason::Protocol,
            LinkError::Panic => Reason::Panic,
            LinkError::Shutdown => Reason::Shutdown,
            LinkError::Reload => Reason::Reload,
            LinkError::Rotate => Reason::Rotate,
        }
    }

    /// Whether to schedule another attempt. Every network or server failure
    /// is retried (401/403 too, with backoff); only our own stops are not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, LinkError::Shutdown | LinkError::Reload | LinkError::Rotate)
    }

    /// The least delay the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LinkError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<TransportError> for LinkError {
    /// A dial failure keeps its class and its words.
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Dns { host, detail } => LinkError::Dns { host, detail },
            TransportError::Tcp(detail) => LinkError::Tcp(detail),
            TransportError::Tls(detail) => LinkError::Tls(detail),
            TransportError::Proxy(detail) => LinkError::Proxy(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status codes map onto the SPEC's reasons.
    #[test]
    fn http_reasons() {
        let r = |status| LinkError::Http { status, retry_after: None }.reason();
        assert_eq!(r(401), Reason::Auth);
        assert_eq!(r(403), Reason::Auth);
        assert_eq!(r(404), Reason::Http4xx);
        assert_eq!(r(429), Reason::Http4xx);
        assert_eq!(r(503), Reason::Http5xx);
        assert_eq!(r(200), Reason::Protocol);
        assert_eq!(r(302), Reason::Protocol);
        assert!(!LinkError::Shutdown.is_retryable());
        assert!(LinkError::Http { status: 401, retry_after: None }.is_retryable());
    }

    /// A transport failure keeps its reason and its text as a link failure.
    #[test]
    fn from_transport() {
        for t in [
            TransportError::Dns { host: "feed.example".into(), detail: "no such host".into() },
            TransportError::Tcp("127.0.0.1:1: refused".into()),
            TransportError::Tls("bad certificate".into()),
            TransportError::Proxy("the proxy wants authentication (HTTP 407)".into()),
        ] {
            let l = LinkError::from(t.clone());
            assert_eq!((l.reason(), l.to_string()), (t.reason(), t.to_string()));
        }
    }
}
