//! The SPEC §14 keys of an upstream that pick its links: rotation
//! (`max_connection_age`, `rotate`, `rotate_overlap`) and redundancy
//! (`urls`, `redundancy`, `dedupe_window`). The fields sit in
//! [`UpstreamConfig`](super::UpstreamConfig) (serde cannot flatten with
//! `deny_unknown_fields`); their value types live here.

use serde::{Deserialize, Serialize};

use super::UpstreamConfig;
use crate::config::redact::redact_url;

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

// === the endpoints of an upstream ===

impl UpstreamConfig {
    /// Every URL of `urls`, redacted as [`redacted_url`](Self::redacted_url).
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact_url(u, &self.redactor, self.query_auth_param())).collect()
    }

    /// The endpoints this upstream links to: `urls`, or `url` alone.
    pub fn link_urls(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.urls.iter().map(String::as_str).collect()
        }
    }

    /// The config one link of endpoint `index` dials: this one with `url`
    /// set to that endpoint (every per-URL helper then applies to it).
    pub fn for_link(&self, index: usize) -> UpstreamConfig {
        let mut one = self.clone();
        if let Some(u) = self.urls.get(index) {
            one.url = u.clone();
        }
        one
    }
}
