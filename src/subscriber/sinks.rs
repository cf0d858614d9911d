//! Sinks (SPEC §6): subscribers that are not WebSocket sessions.
//! PLACEHOLDER: being implemented (stdout, file, webhook).

use std::sync::Arc;
use std::time::Duration;

use crate::config::SinkConfig;
use crate::fanout::Hub;
use crate::telemetry::Metrics;

/// The running sinks.
pub struct Sinks {
    _count: usize,
}

impl Sinks {
    /// Starts one actor per configured sink on the current arbiter.
    pub fn start(cfgs: &[SinkConfig], _hub: &Hub, _metrics: &Arc<Metrics>) -> anyhow::Result<Sinks> {
        anyhow::ensure!(cfgs.is_empty(), "sinks are not implemented yet");
        Ok(Sinks { _count: 0 })
    }

    /// Flushes what is queued (file synced, webhook's last batch sent) and stops, within `deadline`.
    pub async fn flush_and_stop(self, _deadline: Duration) {}

    /// Reopens file sinks (SIGHUP, for logrotate).
    pub fn reopen_files(&self) {}
}
