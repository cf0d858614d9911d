//! Every metric of SPEC §8 in one [`Registry`], and the event methods that
//! bump them. Only this module touches prometheus types: the rest of the
//! crate says what happened (`connected()`, `dropped(kind, reason)`), not how
//! it is counted. Labels come from config or from bounded enums, never from
//! a subscriber.

mod cluster;
mod integrity;
mod links;
mod logging;
mod pause;
mod subscriber;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub use links::LinkMetrics;
pub use logging::init_logging;
pub use pause::PauseMeter;
pub use subscriber::{DropReason, Left, SubscriberMetrics};
use tracing::{info, warn};

use crate::model::{LinkState, Reason};

/// Content type of `/metrics`: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Subscriber kinds: the `kind` label.
pub const SUBSCRIBER_KINDS: [&str; 6] = ["websocket", "stdout", "file", "webhook", "nats", "redis"];
/// Why a subscriber lost a message: the `reason` label of drops.
pub const DROP_REASONS: [&str; 4] =
    [DropReason::Overflow.code(), DropReason::Error.code(), DropReason::Shutdown.code(), DropReason::Reload.code()];

/// Why a subscriber went away: the `reason` label of disconnects.
pub const DISCONNECT_REASONS: [&str; 4] = ["client", "slow", "shutdown", "error"];

/// "in 1.2s", or "none" when the upstream stopped trying.
fn next_attempt(next: Option<Duration>) -> String {
    match next {
        Some(d) => format!("in {:.1}s", d.as_secs_f64()),
        None => "none (stopped)".into(),
    }
}

/// How often invalid upstream data is logged at most (every one is counted).
const INVALID_LOG_EVERY: Duration = Duration::from_secs(10);

const RTT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const DOWNTIME_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
const FANOUT_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// All metric families, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    upstream_up: IntGaugeVec,
    upstream_state: IntGaugeVec,
    connects: IntCounterVec,
    connect_failures: IntCounterVec,
    disconnects: IntCounterVec,
    messages: IntCounterVec,
    bytes: IntCounterVec,
    wire_bytes: IntCounterVec,
    decode_errors: IntCounterVec,
    last_message: GaugeVec,
    ping_rtt: HistogramVec,
    downtime: HistogramVec,
    subscribers: IntGaugeVec,
    subscriber_messages: IntCounterVec,
    subscriber_dropped: IntCounterVec,
    subscriber_disconnects: IntCounterVec,
    fanout_latency: Histogram,
    /// The SPEC §13 families.
    integrity: integrity::Families,
    /// `wsgate_upstream_paused_seconds_total` (SPEC §14a).
    paused: pause::Family,
    /// The SPEC §14 link families.
    links: links::Families,
    /// The SPEC §15 cluster families.
    cluster: cluster::Families,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(m.clone())).expect("metric names are unique");
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(m.clone())).expect("metric names are unique");
    m
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let m = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .expect("static metric definition");
    r.register(Box::new(m.clone())).expect("metric names are unique");
    m
}

impl Metrics {
    /// Registers every family in a fresh registry (no prefix on the registry:
    /// it would rename `process_*`).
    pub fn new() -> Arc<Self> {
        // The `expect`s below fire only on a programming error in these
        // static definitions (bad name, duplicate), never on outside input.
        let r = Registry::new();
        let build_info = IntGaugeVec::new(Opts::new("wsgate_build_info", "Build information; always 1."), &["version"])
            .expect("static metric definition");
        r.register(Box::new(build_info.clone())).expect("metric names are unique");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");

        let u = &["upstream"];
        let ur = &["upstream", "reason"];
        let last_message = GaugeVec::new(
            Opts::new("wsgate_upstream_last_message_timestamp_seconds", "Unix time of the last data message."),
            u,
        )
        .expect("static metric definition");
        r.register(Box::new(last_message.clone())).expect("metric names are unique");
        let fanout_latency = Histogram::with_opts(
            HistogramOpts::new("wsgate_fanout_latency_seconds", "From upstream receive to subscriber write.")
                .buckets(FANOUT_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        r.register(Box::new(fanout_latency.clone())).expect("metric names are unique");

        let m = Metrics {
            upstream_up: gauge_vec(&r, "wsgate_upstream_up", "1 while the upstream is connected.", u),
            upstream_state: gauge_vec(&r, "wsgate_upstream_state", "Current state, one-hot.", &["upstream", "state"]),
            connects: counter_vec(&r, "wsgate_upstream_connects_total", "Links that reached connected.", u),
            connect_failures: counter_vec(
                &r,
                "wsgate_upstream_connect_failures_total",
                "Attempts that failed before connected.",
                ur,
            ),
            disconnects: counter_vec(&r, "wsgate_upstream_disconnects_total", "Connected links that ended.", ur),
            messages: counter_vec(&r, "wsgate_upstream_messages_total", "Messages delivered to the hub.", u),
            bytes: counter_vec(&r, "wsgate_upstream_bytes_total", "Payload bytes received.", u),
            wire_bytes: counter_vec(
                &r,
                "wsgate_upstream_wire_bytes_total",
                "Bytes received on the socket (frames, compressed as sent).",
                u,
            ),
            decode_errors: counter_vec(&r, "wsgate_upstream_decode_errors_total", "Messages that failed to decode.", u),
            last_message,
            ping_rtt: histogram_vec(&r, "wsgate_upstream_ping_rtt_seconds", "Ping to pong round trip.", RTT_BUCKETS, u),
            downtime: histogram_vec(
                &r,
                "wsgate_upstream_downtime_seconds",
                "From losing the link to the next first message.",
                DOWNTIME_BUCKETS,
                u,
            ),
            subscribers: gauge_vec(&r, "wsgate_subscribers", "Current subscribers.", &["kind"]),
            subscriber_messages: counter_vec(
                &r,
                "wsgate_subscriber_messages_total",
                "Messages written to subscribers.",
                &["kind"],
            ),
            subscriber_dropped: counter_vec(
                &r,
                "wsgate_subscriber_dropped_total",
                "Messages a subscriber did not get.",
                &["kind", "reason"],
            ),
            subscriber_disconnects: counter_vec(
                &r,
                "wsgate_subscriber_disconnects_total",
                "Subscribers that went away.",
                &["reason"],
            ),
            fanout_latency,
            integrity: integrity::Families::register(&r),
            paused: pause::Family::register(&r),
            links: links::Families::register(&r),
            cluster: cluster::Families::register(&r),
            registry: r,
        };
        for kind in SUBSCRIBER_KINDS {
            m.subscribers.with_label_values(&[kind]).set(0);
            m.subscriber_messages.with_label_values(&[kind]);
            for reason in DROP_REASONS {
                m.subscriber_dropped.with_label_values(&[kind, reason]);
            }
        }
        for reason in DISCONNECT_REASONS {
            m.subscriber_disconnects.with_label_values(&[reason]);
        }
        Arc::new(m)
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on invalid metric data we never create.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "Metrics encoding failed.");
        }
        buf
    }

    /// The series of one upstream, created (all at zero) on first call.
    pub fn upstream(self: &Arc<Self>, name: &str) -> UpstreamMetrics {
        let l = &[name];
        for state in LinkState::ALL {
            self.upstream_state.with_label_values(&[name, state.as_str()]);
        }
        for reason in Reason::ALL {
            self.connect_failures.with_label_values(&[name, reason.code()]);
            self.disconnects.with_label_values(&[name, reason.code()]);
        }
        self.integrity.init(name);
        self.paused.meter(name);
        UpstreamMetrics {
            name: name.to_string(),
            up: self.upstream_up.with_label_values(l),
            connects: self.connects.with_label_values(l),
            messages: self.messages.with_label_values(l),
            bytes: self.bytes.with_label_values(l),
            wire_bytes: self.wire_bytes.with_label_values(l),
            decode_errors: self.decode_errors.with_label_values(l),
            last_message: self.last_message.with_label_values(l),
            ping_rtt: self.ping_rtt.with_label_values(l),
            downtime: self.downtime.with_label_values(l),
            invalid_log: Arc::default(),
            all: Arc::clone(self),
        }
    }

    /// Removes every series of an upstream that left the config (reload).
    pub fn remove_upstream(&self, name: &str) {
        let l = &[name];
        let _ = self.upstream_up.remove_label_values(l);
        let _ = self.connects.remove_label_values(l);
        let _ = self.messages.remove_label_values(l);
        let _ = self.bytes.remove_label_values(l);
        let _ = self.wire_bytes.remove_label_values(l);
        let _ = self.decode_errors.remove_label_values(l);
        let _ = self.last_message.remove_label_values(l);
        let _ = self.ping_rtt.remove_label_values(l);
        let _ = self.downtime.remove_label_values(l);
        self.integrity.remove(name);
        self.paused.remove(name);
        self.links.remove(name);
        for state in LinkState::ALL {
            let _ = self.upstream_state.remove_label_values(&[name, state.as_str()]);
        }
        for reason in Reason::ALL {
            let _ = self.connect_failures.remove_label_values(&[name, reason.code()]);
            let _ = self.disconnects.remove_label_values(&[name, reason.code()]);
        }
    }

    /// The handle a subscriber of `kind` counts with.
    pub fn subscriber(&self, kind: &'static str) -> SubscriberMetrics {
        SubscriberMetrics {
            current: self.subscribers.with_label_values(&[kind]),
            messages: self.subscriber_messages.with_label_values(&[kind]),
            dropped: DROP_REASONS.map(|r| self.subscriber_dropped.with_label_values(&[kind, r])),
            disconnects: self.subscriber_disconnects.clone(),
            fanout_latency: self.fanout_latency.clone(),
        }
    }

    /// Current subscribers per kind, for `/status`.
    pub fn subscriber_counts(&self) -> Vec<(&'static str, i64)> {
        SUBSCRIBER_KINDS.iter().map(|k| (*k, self.subscribers.with_label_values(&[k]).get())).collect()
    }
}

/// One upstream's series, resolved once so the hot path does no label lookup.
#[derive(Clone)]
pub struct UpstreamMetrics {
    name: String,
    up: IntGauge,
    connects: IntCounter,
    messages: IntCounter,
    bytes: IntCounter,
    wire_bytes: IntCounter,
    decode_errors: IntCounter,
    last_message: Gauge,
    ping_rtt: Histogram,
    downtime: Histogram,
    /// When invalid data was last logged, and how much came since.
    invalid_log: Arc<std::sync::Mutex<(Option<Instant>, u64)>>,
    all: Arc<Metrics>,
}

impl UpstreamMetrics {
    /// Where the time this upstream is paused by a blocking sink is counted.
    pub fn pause_meter(&self) -> PauseMeter {
        self.all.paused.meter(&self.name)
    }

    /// The one-hot state series and `up`.
    pub fn state(&self, state: LinkState) {
        for s in LinkState::ALL {
            self.all.upstream_state.with_label_values(&[&self.name, s.as_str()]).set(i64::from(s == state));
        }
        self.up.set(i64::from(state == LinkState::Connected));
    }

    // Named events: each one logs (rate-limited where it can repeat per
    // message) and counts, so call sites say what happened.

    /// A link reached `connected` (logged with the redacted `url`).
    pub fn connected(&self, url: &str) {
        self.connects.inc();
        info!(upstream = %self.name, url, "Upstream connected.");
    }

    /// An attempt failed before `connected`; `text` is already scrubbed.
    /// `next` is when the next attempt starts (`None`: no more attempts).
    pub fn connect_failed(&self, reason: Reason, text: &str, next: Option<Duration>) {
        self.all.connect_failures.with_label_values(&[&self.name, reason.code()]).inc();
        let next_attempt = next_attempt(next);
        warn!(upstream = %self.name, reason = reason.code(), error = %text, next_attempt, "Upstream connect failed.");
    }

    /// A connected link was lost; `text` is already scrubbed.
    /// `next` is when the next attempt starts (`None`: no more attempts).
    pub fn link_lost(&self, reason: Reason, text: &str, next: Option<Duration>) {
        self.all.disconnects.with_label_values(&[&self.name, reason.code()]).inc();
        let next_attempt = next_attempt(next);
        warn!(upstream = %self.name, reason = reason.code(), error = %text, next_attempt, "Upstream link lost.");
    }

    /// A connected link ended on our side (shutdown, reload): counted only.
    pub fn link_ended(&self, reason: Reason) {
        self.all.disconnects.with_label_values(&[&self.name, reason.code()]).inc();
    }

    /// A message failed to decode: counted; logged at most once per
    /// [`INVALID_LOG_EVERY`] with the number seen since the last line.
    pub fn invalid_data(&self, error: &str) {
        self.decode_errors.inc();
        let mut g = self.invalid_log.lock().unwrap_or_else(|p| p.into_inner());
        g.1 += 1;
        let now = Instant::now();
        if g.0.is_none_or(|t| now.duration_since(t) >= INVALID_LOG_EVERY) {
            warn!(upstream = %self.name, error, count = g.1, "Invalid upstream data (counted; logged at most every 10 s).");
            *g = (Some(now), 0);
        }
    }

    /// Payload bytes of a frame, counted as they arrive.
    pub fn bytes(&self, n: usize) {
        self.bytes.inc_by(n as u64);
    }

    /// Bytes of frames as received on the socket (before inflating).
    pub fn wire_bytes(&self, n: u64) {
        self.wire_bytes.inc_by(n);
    }

    /// A data message was delivered to the hub.
    pub fn message(&self, at: SystemTime) {
        self.messages.inc();
        self.last_message.set(at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0));
    }

    /// A pong came back after `rtt`.
    pub fn rtt(&self, rtt: Duration) {
        self.ping_rtt.observe(rtt.as_secs_f64());
    }

    /// The first message after a loss of link, `down` after it.
    pub fn downtime(&self, down: Duration) {
        self.downtime.observe(down.as_secs_f64());
    }
}
