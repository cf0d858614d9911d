//! The live state that `/status`, `/readyz` and `/` read: one
//! [`UpstreamStatus`] per configured upstream, written only by its actor,
//! plus the process-wide [`ShutdownFlag`]. Plain data behind short locks and
//! atomics; no actix, so HTTP handlers read it without a message round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::{LinkState, ShutdownFlag};

/// What `/status` shows of one upstream, except the counters kept in atomics.
#[derive(Debug, Clone)]
struct Snapshot {
    state: LinkState,
    since: SystemTime,
    connected_since: Option<SystemTime>,
    reconnects: u64,
    last_error: Option<String>,
    last_close_code: Option<u16>,
    rtt_ms: Option<f64>,
    /// The handshake step waiting for its reply, by name.
    handshake_step: Option<String>,
    /// Waiting for the reconnect governor (a slot or a token).
    waiting: bool,
    /// The number of the current (or last) link.
    conn: u64,
    /// One entry per endpoint when `urls` is used (SPEC §14a).
    links: Option<Vec<LinkView>>,
}

/// One endpoint of an upstream with `urls`, in `/status` (SPEC §14a).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkView {
    /// The index in `urls`.
    pub index: usize,
    /// The URL, redacted.
    pub url: String,
    /// `connecting`, `authenticating`, `connected`, `backoff`, `stopped`,
    /// or `standby` (`redundancy = "failover"`: not the endpoint in use).
    pub state: &'static str,
    /// The number of its current (or last) link; 0: none yet.
    pub conn: u64,
}

/// One upstream's live status. Written by its actor, read by HTTP.
#[derive(Debug)]
pub struct UpstreamStatus {
    /// Config name.
    pub name: String,
    /// URL with secrets redacted: the only form that may be shown.
    url: String,
    /// Counts toward `/readyz`.
    required: bool,
    snapshot: Mutex<Snapshot>,
    /// Messages delivered to the hub; atomic because it moves per message.
    messages: AtomicU64,
    /// Unix time of the last data message in nanoseconds; 0 = never.
    last_message_ns: AtomicU64,
}

impl UpstreamStatus {
    /// A new upstream, `connecting` from now on.
    pub fn new(name: &str, redacted_url: String, required: bool) -> Self {
        UpstreamStatus {
            name: name.to_string(),
            url: redacted_url,
            required,
            snapshot: Mutex::new(Snapshot {
                state: LinkState::Connecting,
                since: SystemTime::now(),
                connected_since: None,
                reconnects: 0,
                last_error: None,
                last_close_code: None,
                rtt_ms: None,
                handshake_step: None,
                waiting: false,
                conn: 0,
                links: None,
            }),
            messages: AtomicU64::new(0),
            last_message_ns: AtomicU64::new(0),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the data is
        // plain values, still safe to read and overwrite.
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Current state.
    pub fn state(&self) -> LinkState {
        self.with(|s| s.state)
    }

    /// Records a state change; `connected_since` follows `Connected`.
    pub fn set_state(&self, state: LinkState) {
        self.with(|s| {
            if s.state == state {
                return;
            }
            let now = SystemTime::now();
            s.state = state;
            s.since = now;
            s.connected_since = (state == LinkState::Connected).then_some(now);
        });
    }

    /// Counts one reconnect attempt (every attempt after the first).
    pub fn add_reconnect(&self) {
        self.with(|s| s.reconnects += 1);
    }

    /// Keeps the last error text (already free of secrets).
    pub fn set_error(&self, error: String) {
        self.with(|s| s.last_error = Some(error));
    }

    /// Keeps the last close code received from the server.
    pub fn set_close_code(&self, code: Option<u16>) {
        self.with(|s| s.last_close_code = code);
    }

    /// Keeps the last measured ping round trip.
    pub fn set_rtt(&self, rtt: Duration) {
        self.with(|s| s.rtt_ms = Some(rtt.as_secs_f64() * 1000.0));
    }

    /// The handshake step that waits for its reply (`None` when none does).
    pub fn set_handshake_step(&self, step: Option<String>) {
        self.with(|s| s.handshake_step = step);
    }

    /// Whether a connect waits for the reconnect governor.
    pub fn set_waiting(&self, waiting: bool) {
        self.with(|s| s.waiting = waiting);
    }

    /// The number of the link that went live.
    pub fn set_conn(&self, conn: u64) {
        self.with(|s| s.conn = conn);
    }

    /// The endpoints of an upstream with `urls` (shown as `links`).
    pub fn set_links(&self, links: Vec<LinkView>) {
        self.with(|s| s.links = Some(links));
    }

    /// Counts one delivered message at `at`.
    pub fn message(&self, at: SystemTime) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let ns = at.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        self.last_message_ns.store(ns, Ordering::Relaxed);
    }

    /// Messages delivered so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// The `/status` view.
    pub fn view(&self) -> UpstreamView {
        let s = self.with(|s| s.clone());
        let ns = self.last_message_ns.load(Ordering::Relaxed);
        UpstreamView {
            name: self.name.clone(),
            url: self.url.clone(),
            required: self.required,
            state: s.state,
            since: rfc3339(s.since),
            connected_since: s.connected_since.map(rfc3339),
            last_message_at: (ns > 0).then(|| rfc3339(UNIX_EPOCH + Duration::from_nanos(ns))),
            messages: self.messages(),
            reconnects: s.reconnects,
            last_error: s.last_error,
            last_close_code: s.last_close_code,
            rtt_ms: s.rtt_ms,
            handshake_step: s.handshake_step,
            waiting: s.waiting,
            conn: s.conn,
            links: s.links,
        }
    }
}

/// One upstream in `/status` (SPEC §7 plus `required` and `last_close_code`).
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamView {
    /// Config name.
    pub name: String,
    /// Redacted URL.
    pub url: String,
    /// Counts toward `/readyz`.
    pub required: bool,
    /// Current state.
    pub state: LinkState,
    /// When the current state began.
    pub since: String,
    /// When the link became connected, if it is.
    pub connected_since: Option<String>,
    /// When the last data message arrived.
    pub last_message_at: Option<String>,
    /// Messages delivered since start.
    pub messages: u64,
    /// Attempts after the first.
    pub reconnects: u64,
    /// The last failure, as text.
    pub last_error: Option<String>,
    /// The last close code the server sent.
    pub last_close_code: Option<u16>,
    /// The last ping round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The handshake step waiting for its reply (null when none runs).
    pub handshake_step: Option<String>,
    /// Waiting for the reconnect governor (SPEC §13).
    pub waiting: bool,
    /// The number of the current (or last) link, from 1 (0: none yet).
    pub conn: u64,
    /// The endpoints, when `urls` is used (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<LinkView>>,
}

/// RFC 3339 UTC with nanoseconds, as `/status` and envelopes use.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Every upstream's status plus the shutdown flag.
#[derive(Debug, Default)]
pub struct StatusBoard {
    upstreams: RwLock<Vec<Arc<UpstreamStatus>>>,
    /// Shared with `/ws`, which refuses new subscribers once it is set.
    shutting_down: ShutdownFlag,
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Arc<Self> {
        Arc::new(StatusBoard::default())
    }

    /// Adds (or replaces, by name) an upstream's status.
    pub fn insert(&self, status: Arc<UpstreamStatus>) {
        let mut list = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
        match list.iter_mut().find(|s| s.name == status.name) {
            Some(slot) => *slot = status,
            None => list.push(status),
        }
    }

    /// Removes an upstream (reload).
    pub fn remove(&self, name: &str) {
        self.upstreams.write().unwrap_or_else(|p| p.into_inner()).retain(|s| s.name != name);
    }

    /// All upstreams, in config order.
    pub fn upstreams(&self) -> Vec<Arc<UpstreamStatus>> {
        self.upstreams.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the start of shutdown: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.begin();
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.is_set()
    }

    /// The shutdown flag itself, for readers that need no upstream status.
    pub fn shutdown_flag(&self) -> ShutdownFlag {
        self.shutting_down.clone()
    }

    /// `Ok` when every required upstream is connected and no shutdown began;
    /// else the reasons, for the 503 body.
    pub fn readiness(&self) -> Result<(), Vec<NotReady>> {
        if self.is_shutting_down() {
            return Err(vec![NotReady { upstream: None, state: None, reason: "shutting down".into() }]);
        }
        let not_ready: Vec<NotReady> = self
            .upstreams()
            .iter()
            .filter(|u| u.required)
            .map(|u| u.view())
            .filter(|v| v.state != LinkState::Connected)
            .map(|v| NotReady {
                upstream: Some(v.name),
                state: Some(v.state),
                reason: v.last_error.unwrap_or_else(|| format!("not connected yet ({})", v.state.as_str())),
            })
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(not_ready)
        }
    }
}

/// One reason `/readyz` is 503.
#[derive(Debug, Clone, Serialize)]
pub struct NotReady {
    /// The upstream, or none for process-wide reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,
    /// Why, in words.
    pub reason: String,
}
