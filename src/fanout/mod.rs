//! Fan-out: the hub, the shared message type, the bounded subscriber queues.
//!
//! Architecture invariant: this module knows neither awc nor actix-web.
//! Upstreams publish into it and subscribers drain from it; they never know
//! each other.

mod conflate;
mod entries;
mod filter;
pub mod frame;
mod gate;
mod history;
mod hub;
mod message;
mod queue;
mod replay;
mod take;

/// Re-exported from [`crate::model`], where it lives, for the hub's users.
pub use crate::model::DataKind;
pub use gate::{Gate, Pausable};
pub use history::History;
pub use hub::{Filter, Hub, HubError, Pair, Publisher, Subscription};
pub use message::{freshness_event, upstream_gap_event, Delivery, Incoming};
pub use queue::{Closed, Item, Pushed, SubQueue};
pub use replay::{check_since, parse_since, Resume};
pub use take::{Next, QueueStream, Taken};
