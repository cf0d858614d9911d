//! wsgate keeps WebSocket connections to upstream feeds alive whatever the
//! network does, and fans every decoded message out to many subscribers.
//!
//! Crate map (dependencies run top to bottom, no cycles):
//!
//! - [`demo`]: `wsgate demo`, a simulated feed wired to the gateway.
//! - [`app`]: wiring: registry, hub, supervised upstreams, HTTP server, shutdown order.
//! - [`http`]: routes only (`/healthz`, `/readyz`, `/status`, `/metrics`).
//! - [`cluster`]: leases of upstreams in a NATS KV bucket (scale-out, SPEC §15; not wired yet).
//! - [`health`]: the liveness probe of the hub and every upstream mailbox.
//! - [`upstream`]: the `Upstream` actor (connect, auth, heartbeat, decode) and
//!   the `StatusBoard` of live upstream states that HTTP reads.
//!   With the webhook sink's HTTP client, the only code that knows awc.
//! - [`subscriber`]: WebSocket sessions and sinks, each draining a bounded hub queue.
//!   Beside `upstream`, never importing it.
//! - [`fanout`]: the hub, shared message type, bounded subscriber queues.
//! - [`transport`]: a leaf under upstreams and the webhook: the dialer (Happy
//!   Eyeballs, TLS, socket options), `Retry-After`, the frame-header guard,
//!   fragment reassembly, the reconnect backoff. No actors.
//! - [`config`]: the `Settings` tree; load, validate, secrets.
//! - [`telemetry`]: metrics (the only module that touches prometheus) and logging.
//! - [`model`]: the leaf vocabulary: `LinkState`, the bounded `Reason` set,
//!   `DataKind`, close codes, the shutdown flag.
//!
//! See `ARCHITECTURE.md` for the actors and the messages between them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod fanout;
pub mod health;
pub mod http;
pub mod model;
pub mod subscriber;
pub mod telemetry;
pub mod transport;
pub mod upstream;
