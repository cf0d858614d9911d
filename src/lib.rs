//! wsgate keeps WebSocket connections to upstream feeds alive whatever the
//! network does, and fans every decoded message out to many subscribers.
//!
//! Crate map (dependencies run top to bottom, no cycles):
//!
//! - [`demo`]: `wsgate demo`, a simulated feed wired to the gateway.
//! - [`app`]: wiring: registry, hub, supervised upstreams, HTTP server, shutdown order.
//! - [`http`]: routes only (`/healthz`, `/readyz`, `/status`, `/metrics`).
//! - [`health`]: the liveness probe of the hub and every upstream mailbox.
//! - [`upstream`]: the `Upstream` actor: connect, auth, heartbeat, backoff, decode.
//!   With the webhook sink's HTTP client, the only code that knows awc.
//! - [`subscriber`]: WebSocket sessions and sinks, each draining a bounded hub queue.
//! - [`fanout`]: the hub, shared message type, bounded subscriber queues.
//! - [`status`]: live upstream states read by HTTP; the bounded `Reason` set.
//! - [`wsframe`]: frame-header scanning that caps frame sizes before buffering.
//! - [`config`]: the `Settings` tree; load, validate, secrets.
//! - [`telemetry`]: metrics (the only module that touches prometheus) and logging.
//!
//! See `ARCHITECTURE.md` for the actors and the messages between them.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
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
