//! Liveness (SPEC §7, §11): `/healthz` asks the hub and every upstream
//! actor's mailbox to answer, each within [`PROBE_DEADLINE`]. A hub whose
//! lock is held by a stuck writer, or an upstream actor whose arbiter is
//! blocked or whose mailbox is not served, makes the process unhealthy.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;

use crate::fanout::Hub;

/// How long the hub and each upstream actor get to answer a probe.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(1);

/// A liveness probe, answered by every upstream actor from its mailbox.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Probe;

/// The upstream actors to probe, by name; kept current by the gateway
/// (start, reload, revival of a dead actor).
pub type ProbeTargets = Arc<RwLock<Vec<(String, Recipient<Probe>)>>>;

/// Probes the hub and every target at once. `Err` names what did not
/// answer within the deadline.
pub async fn probe(hub: &Hub, targets: &ProbeTargets) -> Result<(), Vec<String>> {
    let targets = targets.read().unwrap_or_else(|p| p.into_inner()).clone();
    let upstreams = join_all(targets.iter().map(|(name, r)| async move {
        match actix_rt::time::timeout(PROBE_DEADLINE, r.send(Probe)).await {
            Ok(Ok(())) => None,
            _ => Some(format!("upstream {name}")),
        }
    }));
    let (hub_ok, upstreams) = futures_util::future::join(probe_hub(hub), upstreams).await;
    let mut late: Vec<String> = upstreams.into_iter().flatten().collect();
    if !hub_ok {
        late.insert(0, "hub".into());
    }
    if late.is_empty() {
        Ok(())
    } else {
        Err(late)
    }
}

/// True when the hub's table can be read within the deadline (it is only
/// ever locked for short, non-blocking sections).
async fn probe_hub(hub: &Hub) -> bool {
    let end = Instant::now() + PROBE_DEADLINE;
    loop {
        if hub.answers() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}
