//! Upstreams: one supervised [`Upstream`] actor per configured feed.
//!
//! Architecture invariant: only this module imports `awc`. `frames`,
//! `decode` and `policy` are plain code with no actix in them.

mod actor;
mod board;
mod connect;
mod connector;
pub mod decode;
mod error;
mod policy;
mod tls;

use std::sync::Arc;

use actix::{Addr, Supervisor};

pub use actor::{Retire, Shutdown, Upstream, UpstreamDeps};
pub use board::{NotReady, StatusBoard, UpstreamStatus, UpstreamView};
pub use connector::{parse_retry_after, Dialer};
pub use error::LinkError;
pub use policy::ReconnectPolicy;
pub use tls::client_config;

use crate::config::UpstreamConfig;
use crate::fanout::Hub;
use crate::model::LinkState;
use crate::telemetry::Metrics;

/// Starts the supervised actor of `cfg` on the current arbiter and registers
/// its status, metric series and hub slot.
pub fn spawn(cfg: Arc<UpstreamConfig>, hub: &Hub, metrics: &Arc<Metrics>, board: &StatusBoard) -> Addr<Upstream> {
    let status = Arc::new(UpstreamStatus::new(&cfg.name, cfg.redacted_url(), cfg.required));
    board.insert(Arc::clone(&status));
    let m = metrics.upstream(&cfg.name);
    m.state(LinkState::Connecting);
    let deps = UpstreamDeps { publisher: hub.publisher(&cfg.name), metrics: m, status };
    Supervisor::start(move |_| Upstream::new(cfg, deps))
}
