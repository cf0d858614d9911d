//! The vocabulary every layer speaks: link states, failure reasons, data
//! kinds, WebSocket close codes, and the shutdown flag.
//!
//! Architecture invariant: a leaf. Plain types only; no actix, no
//! prometheus, nothing from any other module of the crate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// The states of SPEC §4. `Connected` is the only one that counts as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// TCP, TLS and the upgrade are in progress.
    Connecting,
    /// Upgraded; waiting for the auth reply.
    Authenticating,
    /// Live: data flows to the hub.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// Gave up after `max_elapsed`, or shut down.
    Stopped,
}

impl LinkState {
    /// Every state, for one-hot metric series.
    pub const ALL: [LinkState; 5] = [
        LinkState::Connecting,
        LinkState::Authenticating,
        LinkState::Connected,
        LinkState::Backoff,
        LinkState::Stopped,
    ];

    /// The label and JSON value.
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Authenticating => "authenticating",
            LinkState::Connected => "connected",
            LinkState::Backoff => "backoff",
            LinkState::Stopped => "stopped",
        }
    }
}

/// Why a link failed or ended (SPEC §10a): the bounded `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Name resolution failed.
    Dns,
    /// TCP connect failed, or a reset/EOF mid-stream.
    Tcp,
    /// TLS handshake or certificate failure.
    Tls,
    /// `connect_timeout` passed.
    Timeout,
    /// The upgrade got a 4xx other than 401/403.
    Http4xx,
    /// The upgrade got a 5xx.
    Http5xx,
    /// 401/403, an auth failure reply, or the auth timeout.
    Auth,
    /// The server sent a close frame.
    Closed,
    /// No frame of any kind within `heartbeat.timeout`.
    DeadLink,
    /// No data message within `heartbeat.idle_timeout`.
    Idle,
    /// A message over `max_message_size`.
    Oversize,
    /// Bad frames, invalid UTF-8, a 2xx/3xx answer to the upgrade, a wrong subprotocol.
    Protocol,
    /// Handling this upstream's data panicked.
    Panic,
    /// The process is shutting down.
    Shutdown,
    /// A reload removed or changed the upstream.
    Reload,
    /// The proxy refused or failed (407, refused CONNECT, SOCKS errors) (§12).
    Proxy,
    /// A handshake step that is not an auth step failed or timed out (§13).
    Handshake,
    /// The link was replaced by a rotation (§14).
    Rotate,
    /// A sequence gap with `on_gap = "reconnect"` (§13).
    Sequence,
    /// A stale topic with `on_stale = "reconnect"` (§13).
    Stale,
}

impl Reason {
    /// Every reason, so metric series exist from the start.
    pub const ALL: [Reason; 20] = [
        Reason::Dns,
        Reason::Tcp,
        Reason::Tls,
        Reason::Timeout,
        Reason::Http4xx,
        Reason::Http5xx,
        Reason::Auth,
        Reason::Closed,
        Reason::DeadLink,
        Reason::Idle,
        Reason::Oversize,
        Reason::Protocol,
        Reason::Panic,
        Reason::Shutdown,
        Reason::Reload,
        Reason::Proxy,
        Reason::Handshake,
        Reason::Rotate,
        Reason::Sequence,
        Reason::Stale,
    ];

    /// The label value.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Dns => "dns",
            Reason::Tcp => "tcp",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::Http4xx => "http_4xx",
            Reason::Http5xx => "http_5xx",
            Reason::Auth => "auth",
            Reason::Closed => "closed",
            Reason::DeadLink => "dead_link",
            Reason::Idle => "idle",
            Reason::Oversize => "oversize",
            Reason::Protocol => "protocol",
            Reason::Panic => "panic",
            Reason::Shutdown => "shutdown",
            Reason::Reload => "reload",
            Reason::Proxy => "proxy",
            Reason::Handshake => "handshake",
            Reason::Rotate => "rotate",
            Reason::Sequence => "sequence",
            Reason::Stale => "stale",
        }
    }
}

/// How the message's `data` is represented in an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `raw` holds a valid JSON document: embedded verbatim.
    Json,
    /// `raw` holds UTF-8 text: embedded as a JSON string.
    Text,
    /// `raw` holds bytes: embedded as a base64 string.
    Binary,
}

impl DataKind {
    /// The header value `wsgate-kind` (SPEC §15 streams): `json`, `text`, `binary`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataKind::Json => "json",
            DataKind::Text => "text",
            DataKind::Binary => "binary",
        }
    }

    /// The kind a `wsgate-kind` header names.
    pub fn from_text(text: &str) -> Option<DataKind> {
        [DataKind::Json, DataKind::Text, DataKind::Binary].into_iter().find(|k| k.as_str() == text)
    }
}

/// WebSocket close codes (RFC 6455 §7.4.1) the gateway sends, by name.
pub mod close {
    /// 1000: the purpose of the link is fulfilled (shutdown, reload, idle, auth).
    pub const NORMAL: u16 = 1000;
    /// 1001: this end is going away (subscribers at shutdown, a silent client).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: a protocol error (bad frame sequence).
    pub const PROTOCOL: u16 = 1002;
    /// 1007: data not consistent with the message type (text that is not UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// 1008: a policy was violated (a subscriber too slow to keep up).
    pub const POLICY: u16 = 1008;
    /// 1009: a message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: an unexpected condition on this end (a caught panic).
    pub const INTERNAL: u16 = 1011;
    /// 1012: the service is restarting (the demo feed's scripted drop).
    pub const RESTART: u16 = 1012;
}

/// The process-wide "shutdown has begun" flag: set once by the gateway,
/// read by `/readyz` (through the status board) and by `/ws`, which takes
/// no new subscriber from then on. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct ShutdownFlag(Arc<AtomicBool>);

impl ShutdownFlag {
    /// Marks the start of shutdown, for every clone.
    pub fn begin(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// This process's run: a random id drawn at start. With an upstream's
/// `seq` (consecutive from 1 at process start) it names one message for
/// good: `Nats-Msg-Id: {upstream}:{run}:{seq}` (SPEC §15), so a retried
/// publish is stored once and a restart never collides with the last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId(Arc<str>);

impl RunId {
    /// A fresh id: 16 hex digits from the process's randomly seeded hasher,
    /// the clock and the process id.
    pub fn random() -> RunId {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        RunId(Arc::from(format!("{:016x}", h.finish())))
    }

    /// An id kept elsewhere (a cluster's, in its lease bucket).
    pub fn from_text(id: &str) -> RunId {
        RunId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
