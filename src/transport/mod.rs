//! Transport: everything between a socket and a whole WebSocket message,
//! shared by the upstreams and the webhook sink.
//!
//! Architecture invariant: a leaf. No actix actors; it knows sockets, TLS
//! and frames, and nothing above it (never `upstream`, `subscriber`,
//! `fanout` or `http`; only `model` and `config` below it).

pub mod frame_guard;
pub mod reassembly;
