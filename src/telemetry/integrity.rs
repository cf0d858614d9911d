//! The metric families of SPEC §13 (feed integrity): sequence gaps,
//! duplicates, topic freshness and the reconnect governor's waits.

use std::time::Duration;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use tracing::{info, warn};

use super::{counter_vec, gauge_vec, Metrics, UpstreamMetrics};

const WAIT_BUCKETS: &[f64] = &[0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The §13 families, registered once.
#[derive(Clone)]
pub(super) struct Families {
    gaps: IntCounterVec,
    missed: IntCounterVec,
    duplicates: IntCounterVec,
    /// Only for the configured `freshness.topics` (bounded labels).
    topic_age: GaugeVec,
    topic_stale: IntGaugeVec,
    connect_wait: Histogram,
}

impl Families {
    pub(super) fn register(r: &Registry) -> Self {
        let u = &["upstream"];
        let ut = &["upstream", "topic"];
        let topic_age = GaugeVec::new(
            Opts::new("wsgate_topic_last_message_age_seconds", "Age of the last message of a watched topic."),
            ut,
        )
        .expect("static metric definition");
        r.register(Box::new(topic_age.clone())).expect("metric names are unique");
        let connect_wait = Histogram::with_opts(
            HistogramOpts::new("wsgate_connect_wait_seconds", "Time a connect waited for the reconnect governor.")
                .buckets(WAIT_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        r.register(Box::new(connect_wait.clone())).expect("metric names are unique");
        Families {
            gaps: counter_vec(r, "wsgate_upstream_sequence_gaps_total", "Sequence gaps seen in the feed.", u),
            missed: counter_vec(r, "wsgate_upstream_sequence_missed_total", "Sequence numbers the feed skipped.", u),
            duplicates: counter_vec(
                r,
                "wsgate_upstream_duplicates_total",
                "Messages dropped as sequence duplicates.",
                u,
            ),
            topic_age,
            topic_stale: gauge_vec(r, "wsgate_topic_stale", "1 while a watched topic is stale.", ut),
            connect_wait,
        }
    }

    /// Creates an upstream's series at zero.
    pub(super) fn init(&self, name: &str) {
        self.gaps.with_label_values(&[name]);
        self.missed.with_label_values(&[name]);
        self.duplicates.with_label_values(&[name]);
    }

    /// Removes an upstream's series (reload removed it).
    pub(super) fn remove(&self, name: &str) {
        let _ = self.gaps.remove_label_values(&[name]);
        let _ = self.missed.remove_label_values(&[name]);
        let _ = self.duplicates.remove_label_values(&[name]);
    }
}

impl Metrics {
    /// A connect waited `wait` for the reconnect governor (zero included).
    pub fn connect_waited(&self, wait: Duration) {
        self.integrity.connect_wait.observe(wait.as_secs_f64());
    }
}

impl UpstreamMetrics {
    /// A connect of this upstream waited `wait` for the reconnect governor.
    pub fn connect_waited(&self, wait: Duration) {
        self.all.connect_waited(wait);
    }

    /// The feed skipped `missed` sequence numbers.
    pub fn sequence_gap(&self, missed: u64, key: Option<&str>, across_reconnect: bool) {
        let f = &self.all.integrity;
        f.gaps.with_label_values(&[&self.name]).inc();
        f.missed.with_label_values(&[&self.name]).inc_by(missed);
        warn!(upstream = %self.name, missed, key, across_reconnect, "The feed skipped sequence numbers.");
    }

    /// A message at or below the last sequence number was dropped.
    pub fn duplicate(&self) {
        self.all.integrity.duplicates.with_label_values(&[&self.name]).inc();
    }

    /// A watched topic turned stale or fresh (logged).
    pub fn topic_freshness(&self, topic: &str, stale: bool) {
        if stale {
            warn!(upstream = %self.name, topic, "Topic is stale: no message within freshness.max_age.");
        } else {
            info!(upstream = %self.name, topic, "Topic is fresh again.");
        }
    }

    /// Age and staleness of a configured topic, for its gauges.
    pub fn topic_age(&self, topic: &str, age: Duration, stale: bool) {
        let f = &self.all.integrity;
        f.topic_age.with_label_values(&[&self.name, topic]).set(age.as_secs_f64());
        f.topic_stale.with_label_values(&[&self.name, topic]).set(i64::from(stale));
    }
}
