//! `Gateway::reload` (SPEC §9, §11): a new config applied by difference,
//! atomically (everything that can fail is prepared first), and
//! `revive_dead_upstreams`. A child of `app`, so it reaches the gateway's
//! fields.

use std::sync::Arc;

use actix::Addr;
use tracing::{error, info, warn};

use super::Gateway;
use crate::config::{Settings, UpstreamConfig};
use crate::fanout::Closed;
use crate::subscriber::auth::refuse_open;
use crate::subscriber::sinks::Sinks;
use crate::subscriber::websocket::SubscriberSettings;
use crate::upstream::{self, Upstream};

/// What a reload did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Upstreams started.
    pub added: Vec<String>,
    /// Upstreams stopped and forgotten.
    pub removed: Vec<String>,
    /// Upstreams restarted with a new config (or restarted from `stopped`).
    pub restarted: Vec<String>,
    /// Upstreams left alone, links and all.
    pub unchanged: Vec<String>,
}

impl Gateway {
    /// Applies a new, already validated config by difference (SPEC §9),
    /// atomically (SPEC §11): the subscriber token is resolved and new sinks
    /// are prepared (files opened, endpoints built) before anything
    /// changes; if any of that fails, nothing changes and the error says why.
    /// Then:
    /// added upstreams start, removed ones stop (followers get a `stopped`
    /// event; their status and metric series go), changed ones restart,
    /// unchanged ones keep their link and their subscribers see nothing.
    /// Upstreams in state `stopped` restart. Subscriber settings apply to new
    /// connections; sinks restart if their config changed, else file sinks
    /// reopen (logrotate). `server.listen` and `[log]` need a restart.
    pub async fn reload(&mut self, new: Settings) -> anyhow::Result<ReloadReport> {
        if new.server.listen != self.settings.server.listen {
            warn!(old = %self.settings.server.listen, new = %new.server.listen, "server.listen changes need a restart; keeping the old listener.");
        }
        if new.log != self.settings.log {
            warn!("[log] changes need a restart.");
        }
        if new.reconnect_governor != self.settings.reconnect_governor {
            warn!("[reconnect_governor] changes need a restart.");
        }
        // === prepare: everything that can fail ===
        let subscribers = SubscriberSettings::resolve(&new.subscribers)?;
        let mut effective = new.clone();
        effective.server.listen = self.settings.server.listen.clone();
        if let Some(refusal) = refuse_open(&effective, &subscribers) {
            anyhow::bail!("{refusal}");
        }
        let new_sinks =
            if new.sinks != self.settings.sinks { Some(Sinks::prepare(&new.sinks, &self.run)?) } else { None };

        // === apply: nothing below fails ===
        subscribers.warn_if_open();
        *self.subscriber_settings.write().unwrap_or_else(|p| p.into_inner()) = subscribers;
        self.hub.configure_replay(self.run.clone(), new.subscribers.history, new.subscribers.history_bytes.bytes());

        let mut report = ReloadReport::default();
        let mut old: Vec<(Arc<UpstreamConfig>, Addr<Upstream>)> = std::mem::take(&mut self.upstreams);
        let mut next = Vec::with_capacity(new.upstreams.len());
        let upstream_cfgs = match &self.cluster {
            Some(cluster) => {
                if new.cluster != self.settings.cluster {
                    warn!("[cluster] changes need a restart.");
                }
                report = cluster_report(&self.settings.upstreams, &new.upstreams);
                cluster.reconfigure(&new.upstreams);
                &[][..]
            }
            None => &new.upstreams[..],
        };
        for cfg in upstream_cfgs {
            let found = old.iter().position(|(c, _)| c.name == cfg.name);
            match found.map(|i| old.remove(i)) {
                Some((c, addr))
                    if *c == *cfg
                        && self
                            .board
                            .upstreams()
                            .iter()
                            .any(|s| s.name == cfg.name && s.state() != crate::model::LinkState::Stopped) =>
                {
                    report.unchanged.push(cfg.name.clone());
                    next.push((c, addr));
                }
                Some((_, addr)) => {
                    let _ = addr.send(upstream::Retire).await;
                    let cfg = Arc::new(cfg.clone());
                    next.push((
                        Arc::clone(&cfg),
                        upstream::spawn(cfg, &self.hub, &self.metrics, &self.board, &self.governor),
                    ));
                    report.restarted.push(new_name(&next));
                }
                None => {
                    let cfg = Arc::new(cfg.clone());
                    next.push((
                        Arc::clone(&cfg),
                        upstream::spawn(cfg, &self.hub, &self.metrics, &self.board, &self.governor),
                    ));
                    report.added.push(new_name(&next));
                }
            }
        }
        for (cfg, addr) in old {
            let _ = addr.send(upstream::Retire).await;
            self.hub.remove_upstream(&cfg.name);
            self.board.remove(&cfg.name);
            self.metrics.remove_upstream(&cfg.name);
            report.removed.push(cfg.name.clone());
        }
        self.upstreams = next;

        self.update_probes();
        match new_sinks {
            Some(prepared) => {
                // Old sinks flush before new ones start: no message written
                // twice, no two writers on one file (the new file handles
                // are open already but written only from now on).
                let stale = std::mem::replace(&mut self.sinks, Sinks::none());
                stale.flush_and_stop(self.settings.server.shutdown_timeout.get(), Closed::Reload).await;
                self.sinks = prepared.start(&self.hub, &self.metrics);
            }
            None => self.sinks.reopen_files(),
        }
        let old_settings = std::mem::replace(&mut self.settings, new);
        self.settings.server.listen = old_settings.server.listen;
        if self.cluster.is_some() {
            // What the cluster runs on until a restart.
            self.settings.cluster = old_settings.cluster;
        }
        info!(added = ?report.added, removed = ?report.removed, restarted = ?report.restarted, unchanged = report.unchanged.len(), "Config reloaded.");
        Ok(report)
    }
}

impl Gateway {
    /// Re-creates every upstream whose actor is gone. The data path catches
    /// panics itself (reason `panic`, supervisor restart); this is the net
    /// for a panic anywhere else, which kills an actor beyond its
    /// supervisor's reach. Returns the names revived.
    pub fn revive_dead_upstreams(&mut self) -> Vec<String> {
        let mut revived = Vec::new();
        for (cfg, addr) in &mut self.upstreams {
            if !addr.connected() {
                error!(upstream = %cfg.name, "Upstream actor died; starting it again.");
                *addr = upstream::spawn(Arc::clone(cfg), &self.hub, &self.metrics, &self.board, &self.governor);
                revived.push(cfg.name.clone());
            }
        }
        if !revived.is_empty() {
            self.update_probes();
        }
        revived
    }
}

/// A reload in cluster mode by name (the cluster applies it: a changed
/// upstream restarts only on the replica that holds it).
fn cluster_report(old: &[UpstreamConfig], new: &[UpstreamConfig]) -> ReloadReport {
    let mut report = ReloadReport::default();
    for cfg in new {
        match old.iter().find(|o| o.name == cfg.name) {
            None => report.added.push(cfg.name.clone()),
            Some(o) if o != cfg => report.restarted.push(cfg.name.clone()),
            Some(_) => report.unchanged.push(cfg.name.clone()),
        }
    }
    report.removed = old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)).map(|o| o.name.clone()).collect();
    report
}

fn new_name(list: &[(Arc<UpstreamConfig>, Addr<Upstream>)]) -> String {
    list.last().map(|(c, _)| c.name.clone()).unwrap_or_default()
}
