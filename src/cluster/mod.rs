//! Scale-out (SPEC §15 `[cluster]`): replicas with the same config share the
//! upstreams, each held by exactly one replica at a time through a lease in
//! a NATS KV bucket; owners publish to a JetStream stream that every
//! replica reads back for the upstreams it does not hold.
//!
//! - `share.rs`: the pure decision of one round: a replica's fair share
//!   (`ceil(upstreams / live replicas)`), which free leases to take and
//!   which excess ones to let go. Table-tested.
//! - `leases.rs`: the KV bucket (history 1, TTL = `lease_ttl`): keys
//!   `upstreams.<name>` (value: the owner's node name), `nodes.<node>`
//!   (who is alive), `state.<name>` (the owner's link state) and `run`,
//!   renewed every round (`lease_ttl / 3`); leases above the share are
//!   handed over, not dropped.
//! - `node.rs`: [`Cluster`]: joins at start, runs the round loop that
//!   starts and retires upstream actors as leases come and go, mirrors the
//!   owners' states on the status board, and publishes the owned
//!   upstreams through an internal `nats` sink; `reconfig.rs`: a reload.
//! - `handover.rs`: `seq` across a change of owner.
//! - `relay.rs`: the ordered consumer that gives the hub the others'
//!   messages with their owner's `seq`.
//!
//! Architecture invariant: `share.rs` and `leases.rs` know NATS and nothing
//! of actix, the hub or the upstreams; `node.rs` is the only place where
//! leases start and stop upstream actors. In cluster mode `app.rs` starts
//! no upstream itself.

mod handover;
mod leases;
mod node;
pub mod relay;
mod share;

pub use leases::{LeaseError, Leases};
pub use node::{Cluster, Deps, Owners};
pub use share::{fair_share, plan, Plan, View};
