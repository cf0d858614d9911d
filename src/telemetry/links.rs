//! The metric families of SPEC §14 (rotation and redundancy): links up,
//! first copies and removed copies per link, rotations per upstream. The
//! `link` label is the index in `urls` (at most 16, from config).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use tracing::info;

use super::{counter_vec, gauge_vec, UpstreamMetrics};

/// Most `link` labels one upstream can have (`urls` is bounded in config).
const MAX_LINKS: usize = 16;

/// The §14 families, registered once.
#[derive(Clone)]
pub(super) struct Families {
    up: IntGaugeVec,
    first: IntCounterVec,
    copies: IntCounterVec,
    rotations: IntCounterVec,
}

impl Families {
    pub(super) fn register(r: &Registry) -> Self {
        let ul = &["upstream", "link"];
        Families {
            up: gauge_vec(r, "wsgate_upstream_link_up", "1 while this link of the upstream is connected.", ul),
            first: counter_vec(
                r,
                "wsgate_upstream_link_first_total",
                "Messages this link delivered first while two or more links were live.",
                ul,
            ),
            copies: counter_vec(
                r,
                "wsgate_upstream_link_copies_total",
                "Messages of this link dropped as copies another link delivered first.",
                ul,
            ),
            rotations: counter_vec(
                r,
                "wsgate_upstream_rotations_total",
                "Links replaced at max_connection_age.",
                &["upstream"],
            ),
        }
    }

    /// Removes an upstream's series (reload removed it).
    pub(super) fn remove(&self, name: &str) {
        let _ = self.rotations.remove_label_values(&[name]);
        for i in 0..MAX_LINKS {
            let l = i.to_string();
            let _ = self.up.remove_label_values(&[name, &l]);
            let _ = self.first.remove_label_values(&[name, &l]);
            let _ = self.copies.remove_label_values(&[name, &l]);
        }
    }
}

/// One upstream's link series, resolved once (no label lookup per message).
#[derive(Clone)]
pub struct LinkMetrics {
    name: String,
    up: Vec<IntGauge>,
    first: Vec<IntCounter>,
    copies: Vec<IntCounter>,
    rotations: IntCounter,
}

impl UpstreamMetrics {
    /// The series of this upstream's `links` endpoints (created at zero;
    /// none when `urls` is not used) and its rotation counter.
    pub fn links(&self, links: usize) -> LinkMetrics {
        let f = &self.all.links;
        let labels: Vec<String> = (0..links.min(MAX_LINKS)).map(|i| i.to_string()).collect();
        let each = |v: &IntCounterVec| labels.iter().map(|l| v.with_label_values(&[&self.name, l])).collect();
        LinkMetrics {
            name: self.name.clone(),
            up: labels.iter().map(|l| f.up.with_label_values(&[&self.name, l])).collect(),
            first: each(&f.first),
            copies: each(&f.copies),
            rotations: f.rotations.with_label_values(&[&self.name]),
        }
    }
}

impl LinkMetrics {
    /// Whether link `index` is connected.
    pub fn up(&self, index: usize, up: bool) {
        if let Some(g) = self.up.get(index) {
            g.set(i64::from(up));
        }
    }

    /// Link `index` delivered a message first.
    pub fn first(&self, index: usize) {
        if let Some(c) = self.first.get(index) {
            c.inc();
        }
    }

    /// Link `index` brought a copy another link delivered first.
    pub fn copy(&self, index: usize) {
        if let Some(c) = self.copies.get(index) {
            c.inc();
        }
    }

    /// A link was replaced at its age (logged).
    pub fn rotated(&self, how: &str, conn: u64) {
        self.rotations.inc();
        info!(upstream = %self.name, how, conn, "Upstream link rotated at max_connection_age.");
    }
}
