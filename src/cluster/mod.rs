//! Scale-out (SPEC §15 `[cluster]`): replicas with the same config share the
//! upstreams, each held by exactly one replica at a time through a lease in
//! a NATS KV bucket.
//!
//! - `share.rs`: the pure decision of one round: a replica's fair share
//!   (`ceil(upstreams / live replicas)`), which free leases to take and
//!   which excess ones to let go. Table-tested.
//! - `leases.rs`: the leases in the KV bucket (history 1, TTL = `lease_ttl`):
//!   keys `upstreams.<name>` (value: the owner's node name) and
//!   `nodes.<node>` (who is alive), renewed every round (`lease_ttl / 3`).
//!
//! Not yet (issue 15): the `[cluster]` config keys, starting and stopping
//! upstreams as leases come and go, the stream reader that gives `/ws`
//! subscribers the upstreams this replica does not own, `owner` in
//! `/status`, the cluster-wide `/readyz`, `seq` continuing across an owner
//! change, and the cluster metrics.
//!
//! Architecture invariant: knows NATS and `model`, nothing of actix, the
//! hub or the upstreams; the wiring will live in `app.rs`.

mod handover;
mod leases;
mod node;
pub mod relay;
mod share;

pub use leases::{LeaseError, Leases};
pub use node::{Cluster, Deps, Owners};
pub use share::{fair_share, plan, Plan, View};
