//! `[cluster]` (SPEC §15): several replicas with the same config share the
//! upstreams through leases in a NATS KV bucket; owners publish to a
//! JetStream stream that every replica reads.

use serde::{Deserialize, Serialize};

use crate::config::units::Dur;

/// `[cluster]`: scale-out over NATS JetStream. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Share the upstreams with the other replicas of the same config:
    /// each upstream is connected by exactly one replica at a time, and
    /// every replica's `/ws` subscribers get every upstream (those it does
    /// not hold from the stream). Default: `false`.
    pub enabled: bool,
    /// The NATS server with JetStream, `nats://host:port` (userinfo shown
    /// as `***`). Default: `"nats://127.0.0.1:4222"`.
    pub nats_url: String,
    /// This replica's name in the cluster, unique per replica; empty = the
    /// host name (a StatefulSet pod name). Default: `""`.
    pub node: String,
    /// Duration after which an owner that stopped renewing loses its
    /// upstreams; leases are renewed every `lease_ttl / 3`. At least 1s.
    /// Default: `"10s"`.
    pub lease_ttl: Dur,
    /// The NATS KV bucket of the leases, one per cluster (several clusters
    /// may share a NATS). Default: `"wsgate_leases"`.
    pub bucket: String,
    /// The JetStream stream the owners publish to and every replica reads;
    /// created when missing, bound to `{subject_prefix}.>`.
    /// Default: `"WSGATE"`.
    pub stream: String,
    /// First token(s) of the subjects `{subject_prefix}.{upstream}.{topic}`.
    /// Default: `"wsgate"`.
    pub subject_prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            nats_url: "nats://127.0.0.1:4222".into(),
            node: String::new(),
            lease_ttl: Dur::secs(10),
            bucket: "wsgate_leases".into(),
            stream: "WSGATE".into(),
            subject_prefix: "wsgate".into(),
        }
    }
}

impl ClusterConfig {
    /// Checks what serde cannot, when enabled: `(key under cluster, message)`.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        if !self.enabled {
            return Ok(());
        }
        let scheme_ok = ["nats://", "tls://"].iter().any(|s| self.nats_url.starts_with(s));
        if !scheme_ok || self.nats_url.parse::<http::Uri>().is_err() {
            let shown = crate::config::redact_url(&self.nats_url, &crate::config::Redactor::default(), None);
            return bad("nats_url", format!("invalid url {shown:?} (must start with nats:// or tls://)"));
        }
        if !self.node.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad("node", format!("invalid node name {:?} (letters, digits, _ and - only)", self.node));
        }
        if self.lease_ttl.get() < std::time::Duration::from_secs(1) {
            return bad("lease_ttl", "must be at least 1s".into());
        }
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok(&self.bucket) {
            return bad("bucket", format!("invalid bucket name {:?} (letters, digits, _ and - only)", self.bucket));
        }
        if !name_ok(&self.stream) {
            return bad("stream", format!("invalid stream name {:?} (letters, digits, _ and - only)", self.stream));
        }
        let prefix_ok = self.subject_prefix.split('.').all(name_ok);
        if !prefix_ok {
            return bad(
                "subject_prefix",
                format!(
                    "invalid subject prefix {:?} (dot-separated tokens of letters, digits, _ and -)",
                    self.subject_prefix
                ),
            );
        }
        Ok(())
    }
}
