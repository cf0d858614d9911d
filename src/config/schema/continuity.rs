//! The SPEC §14 keys of an upstream that pick its links: rotation
//! (`max_connection_age`, `rotate`, `rotate_overlap`) and redundancy
//! (`urls`, `redundancy`, `dedupe_window`). The fields sit in
//! [`UpstreamConfig`](super::UpstreamConfig) (serde cannot flatten with
//! `deny_unknown_fields`); their value types live here.

use serde::{Deserialize, Serialize};

/// `rotate`: how a link older than `max_connection_age` is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rotate {
    /// Open and handshake the new link beside the old one; switch at its
    /// first data message; close the old one once the streams overlap.
    #[default]
    MakeBeforeBreak,
    /// Close the old link (1000, reason `rotate`), then open the new one:
    /// for servers that allow one link per key.
    BreakBeforeMake,
}

/// `redundancy`: what several `urls` mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Redundancy {
    /// One link; the next URL after each failure.
    #[default]
    Failover,
    /// One link per URL, each with its own backoff; the first copy of a
    /// message wins.
    All,
}
