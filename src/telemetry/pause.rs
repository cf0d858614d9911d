//! `wsgate_upstream_paused_seconds_total{upstream}` (SPEC §14a): the time an
//! upstream did not read its socket because a blocking sink was full.

use std::time::Duration;

use prometheus::{Counter, CounterVec, Opts, Registry};

/// The family, registered once.
#[derive(Clone)]
pub(super) struct Family(CounterVec);

impl Family {
    pub(super) fn register(r: &Registry) -> Self {
        let m = CounterVec::new(
            Opts::new(
                "wsgate_upstream_paused_seconds_total",
                "Time the upstream stopped reading because a blocking sink was full.",
            ),
            &["upstream"],
        )
        .expect("static metric definition");
        r.register(Box::new(m.clone())).expect("metric names are unique");
        Family(m)
    }

    pub(super) fn meter(&self, upstream: &str) -> PauseMeter {
        PauseMeter(self.0.with_label_values(&[upstream]))
    }

    pub(super) fn remove(&self, upstream: &str) {
        let _ = self.0.remove_label_values(&[upstream]);
    }
}

/// One upstream's paused-time counter.
#[derive(Clone)]
pub struct PauseMeter(Counter);

impl PauseMeter {
    /// The upstream was paused this long.
    pub fn add(&self, paused: Duration) {
        self.0.inc_by(paused.as_secs_f64());
    }
}

impl std::fmt::Debug for PauseMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PauseMeter")
    }
}
