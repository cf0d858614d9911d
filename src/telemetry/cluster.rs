//! The cluster families of SPEC §15: how many upstreams this replica holds,
//! and how often each upstream's lease changed hands here.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tracing::info;

use super::{counter_vec, Metrics};

/// The §15 cluster families, registered once.
#[derive(Clone)]
pub(super) struct Families {
    owned: IntGauge,
    lease_changes: IntCounterVec,
}

impl Families {
    pub(super) fn register(r: &Registry) -> Self {
        let owned = IntGauge::with_opts(Opts::new(
            "wsgate_cluster_owned_upstreams",
            "Upstreams whose lease this replica holds (cluster mode).",
        ))
        .expect("static metric definition");
        r.register(Box::new(owned.clone())).expect("metric names are unique");
        let lease_changes = counter_vec(
            r,
            "wsgate_cluster_lease_changes_total",
            "Times this replica took or lost an upstream's lease.",
            &["upstream"],
        );
        Families { owned, lease_changes }
    }
}

impl Metrics {
    /// This replica took the lease of `upstream` (it connects it now).
    pub fn lease_taken(&self, upstream: &str, node: &str) {
        info!(upstream, node, "Cluster: lease taken; this replica connects the upstream.");
        self.cluster.lease_changes.with_label_values(&[upstream]).inc();
    }

    /// This replica let the lease of `upstream` go, or lost it.
    pub fn lease_left(&self, upstream: &str, node: &str, why: &'static str) {
        info!(upstream, node, why, "Cluster: lease gone; this replica no longer connects the upstream.");
        self.cluster.lease_changes.with_label_values(&[upstream]).inc();
    }

    /// The number of upstreams this replica holds now.
    pub fn set_owned(&self, n: usize) {
        self.cluster.owned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
