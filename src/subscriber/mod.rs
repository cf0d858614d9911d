//! Subscribers: actors that drain a bounded hub queue ([`crate::fanout::SubQueue`]).
//! One file per kind: WebSocket sessions, and the sinks (stdout, file,
//! webhook). A broker sink (NATS, Redis Streams) is one more file that
//! subscribes the same way.
//!
//! Architecture invariant: beside `upstream`, never importing it; the
//! webhook dials through `transport` like an upstream does.

pub mod auth;
#[cfg(feature = "test-hooks")]
pub mod echo;
mod outbound;
mod session;
pub mod sinks;
pub mod websocket;
