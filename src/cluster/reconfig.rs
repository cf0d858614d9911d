//! A reload in cluster mode (SPEC §9 with §15): the round loop applies the
//! new `[[upstreams]]`. Added upstreams get a hub slot and a mirror and are
//! shared out by the next rounds; removed ones stop here (their lease goes
//! in the next round, their subscribers get `stopped`, their status and
//! series go); changed ones this replica holds restart with the new config
//! (`seq` continues: the hub slot stays).

use std::sync::Arc;

use tracing::info;

use super::{mirror, retire, Node};
use crate::config::UpstreamConfig;
use crate::upstream;

impl Node {
    pub(super) async fn reconfigure(&mut self, new: Vec<Arc<UpstreamConfig>>) {
        let (mut added, mut removed, mut restarted) = (Vec::new(), Vec::new(), Vec::new());
        for old in &self.upstreams {
            if new.iter().any(|u| u.name == old.name) {
                continue;
            }
            if let Some(addr) = self.owned.remove(&old.name) {
                retire(addr, Arc::clone(&self.deps.metrics), &old.name).await;
            }
            self.deps.hub.remove_upstream(&old.name);
            self.deps.board.remove(&old.name);
            self.deps.metrics.remove_upstream(&old.name);
            self.mirrors.remove(&old.name);
            self.publishers.write().unwrap_or_else(|p| p.into_inner()).remove(&old.name);
            removed.push(old.name.clone());
        }
        for cfg in &new {
            match self.upstreams.iter().find(|u| u.name == cfg.name) {
                None => {
                    let publisher = self.deps.hub.publisher(&cfg.name);
                    self.publishers.write().unwrap_or_else(|p| p.into_inner()).insert(cfg.name.clone(), publisher);
                    mirror(&self.deps, &mut self.mirrors, cfg, None, None);
                    added.push(cfg.name.clone());
                }
                Some(old) if **old != **cfg => {
                    // A mirror shows the new URL from now on.
                    self.mirrors.remove(&cfg.name);
                    if let Some(addr) = self.owned.get_mut(&cfg.name) {
                        let _ = addr.send(upstream::Retire).await;
                        let d = &self.deps;
                        *addr = upstream::spawn(Arc::clone(cfg), &d.hub, &d.metrics, &d.board, &d.governor);
                        restarted.push(cfg.name.clone());
                    }
                }
                Some(_) => {}
            }
        }
        self.upstreams = new;
        info!(added = ?added, removed = ?removed, restarted = ?restarted, "Cluster: upstreams reconfigured.");
    }
}
