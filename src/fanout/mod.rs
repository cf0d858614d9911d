//! Fan-out: the hub, the shared message type, the bounded subscriber queues.
//!
//! Architecture invariant: this module knows neither awc nor actix-web.
//! Upstreams publish into it and subscribers drain from it; they never know
//! each other.

pub mod frame;
mod hub;
mod message;
mod queue;

/// Re-exported from [`crate::model`], where it lives, for the hub's users.
pub use crate::model::DataKind;
pub use hub::{Filter, Hub, HubError, Pair, Publisher, Subscription};
pub use message::{freshness_event, upstream_gap_event, Delivery, Incoming};
pub use queue::{Closed, Item, Next, Pushed, QueueStream, SubQueue, Taken};
