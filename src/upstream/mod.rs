//! Upstreams: one supervised [`Upstream`] actor per configured feed, and
//! the [`StatusBoard`] that shows their live state.
//!
//! Architecture invariant: above `transport`, `fanout` and `model`, never
//! beside `subscriber`; with the webhook sink, the only code that names `awc`.

mod actor;
mod attempt;
mod board;
mod credentials;
pub mod decode;
pub mod dedupe;
mod dial;
mod error;
pub mod freshness;
pub mod governor;
pub mod handshake;
pub mod heartbeat;
mod inbound;
pub mod link;
mod link_events;
#[cfg(test)]
mod link_tests;
mod once;
pub mod pointer;
mod rotation;
pub mod sequence;
mod slots;
mod switch;
mod trace;
mod wire;

use std::sync::Arc;

use actix::{Addr, Supervisor};

pub use actor::{HandOver, Retire, Shutdown, Upstream, UpstreamDeps};
pub use board::{LinkView, NotReady, StatusBoard, UpstreamStatus, UpstreamView};
pub use error::LinkError;
pub use governor::Governor;
pub use once::{connect_once, Connected};

use crate::config::UpstreamConfig;
use crate::fanout::Hub;
use crate::model::LinkState;
use crate::telemetry::Metrics;

/// Starts the supervised actor of `cfg` on the current arbiter and registers
/// its status, metric series and hub slot.
pub fn spawn(
    cfg: Arc<UpstreamConfig>,
    hub: &Hub,
    metrics: &Arc<Metrics>,
    board: &StatusBoard,
    governor: &Arc<Governor>,
) -> Addr<Upstream> {
    let status = Arc::new(UpstreamStatus::new(&cfg.name, cfg.for_link(0).redacted_url(), cfg.required));
    board.insert(Arc::clone(&status));
    let m = metrics.upstream(&cfg.name);
    m.state(LinkState::Connecting);
    let publisher = hub.publisher(&cfg.name);
    publisher.gate().meter(m.pause_meter());
    let deps = UpstreamDeps { publisher, metrics: m, status, governor: Arc::clone(governor) };
    Supervisor::start(move |_| Upstream::new(cfg, deps))
}
