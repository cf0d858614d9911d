//! Why a dial failed, by class: the transport's half of the bounded
//! [`Reason`] set. Callers above fold it into their own error type.

use crate::model::Reason;

/// A failure below the WebSocket or HTTP layer: name resolution, TCP or
/// TLS, or the proxy on the way (SPEC §12). The
/// text is built from our own words and the resolver's, socket's or
/// rustls's; it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Name resolution failed.
    #[error("cannot resolve {host}: {detail}")]
    Dns {
        /// The host name.
        host: String,
        /// The resolver's words.
        detail: String,
    },
    /// TCP connect failed on every address.
    #[error("connection failed: {0}")]
    Tcp(String),
    /// TLS setup, handshake or certificate failure.
    #[error("tls: {0}")]
    Tls(String),
    /// The proxy could not be reached or refused (407, a refused CONNECT,
    /// a SOCKS error; SPEC §12). Never holds the proxy password.
    #[error("proxy: {0}")]
    Proxy(String),
}

impl TransportError {
    /// The bounded label of this error (SPEC §10a).
    pub fn reason(&self) -> Reason {
        match self {
            TransportError::Dns { .. } => Reason::Dns,
            TransportError::Tcp(_) => Reason::Tcp,
            TransportError::Tls(_) => Reason::Tls,
            TransportError::Proxy(_) => Reason::Proxy,
        }
    }
}
