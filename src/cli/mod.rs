//! Subcommands that are clients rather than the daemon: `wsgate tail`
//! (SPEC §12). `main.rs` only parses and dispatches.

mod echo;
pub mod tail;
