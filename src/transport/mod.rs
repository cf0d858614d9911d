//! Transport: everything between a socket and a whole WebSocket message,
//! shared by the upstreams and the webhook sink: the dialer (Happy
//! Eyeballs, TLS, socket options, the response head), `Retry-After`, the
//! frame-header guard, fragment reassembly, and the reconnect backoff.
//!
//! Architecture invariant: a leaf. No actix actors; it knows sockets, TLS
//! and frames, and nothing above it (never `upstream`, `subscriber`,
//! `fanout` or `http`; only `model` and `config` below it).

pub mod deflate;
mod dialer;
mod error;
pub mod frame_guard;
pub mod proxy;
pub mod reassembly;
mod reconnect;
pub mod retry_after;
pub mod socket;
mod tls;

pub use dialer::{Dialer, UpstreamIo};
pub use error::TransportError;
pub use frame_guard::FrameTooLarge;
pub use reconnect::ReconnectPolicy;
pub use tls::client_config;
