//! Leases in a NATS KV bucket (SPEC §15 fine print): `upstreams.<name>`
//! holds the owner's node name, `nodes.<node>` says the node is alive; the
//! bucket keeps one revision per key (history 1) for `lease_ttl`, so a key
//! nobody renews disappears after that. A lease is taken with `create`
//! (fails when someone holds it) and renewed with `update` at the revision
//! this node wrote last (fails when someone else took it after it expired).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::TryStreamExt;
use tracing::{info, warn};

use super::share::{plan, View};

/// Prefix of the lease keys.
const UPSTREAMS: &str = "upstreams.";
/// Prefix of the liveness keys.
const NODES: &str = "nodes.";
/// Prefix of the owners' link states.
const STATES: &str = "state.";
/// The cluster's run id (replay, `Nats-Msg-Id`), renewed by every node.
const RUN: &str = "run";

/// Why a round could not be done (the bucket is unreachable, or refuses).
#[derive(Debug, thiserror::Error)]
#[error("lease bucket {bucket}: {message}")]
pub struct LeaseError {
    /// The bucket's name.
    bucket: String,
    /// What failed, without secrets (the KV API carries none).
    message: String,
}

/// This node's leases in one bucket.
pub struct Leases {
    /// The bucket.
    kv: kv::Store,
    /// Its name, for errors and logs.
    bucket: String,
    /// This replica's name.
    node: String,
    /// Upstream -> the revision this node wrote last, for each lease held.
    held: BTreeMap<String, u64>,
    /// Leases above the fair share being handed over: no longer held nor
    /// renewed, deleted by [`Leases::let_go`] once the caller has stopped
    /// the upstream and stored its last messages (with the revision, so a
    /// lease that expired and was taken by another node stays).
    letting: BTreeMap<String, u64>,
    /// Release through `letting` instead of deleting at once.
    defer: bool,
    /// What the bucket said in the last round.
    seen: View,
}

impl Leases {
    /// Opens the bucket, creating it (history 1, TTL `ttl`) when missing;
    /// an existing bucket with another TTL is updated to `ttl` (warning).
    pub async fn open(js: &jetstream::Context, bucket: &str, node: &str, ttl: Duration) -> Result<Leases, LeaseError> {
        let err = |message: String| LeaseError { bucket: bucket.to_string(), message };
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => {
                let mut stream = js.get_stream(format!("KV_{bucket}")).await.map_err(|e| err(e.to_string()))?;
                let mut config = stream.info().await.map_err(|e| err(e.to_string()))?.config.clone();
                if config.max_age != ttl {
                    warn!(bucket, was = ?config.max_age, now = ?ttl, "Lease bucket has another TTL; it is updated to lease_ttl.");
                    config.max_age = ttl;
                    config.duplicate_window = config.duplicate_window.min(ttl);
                    js.update_stream(config).await.map_err(|e| err(e.to_string()))?;
                }
                kv
            }
            Err(_) => {
                // The KV stream as `create_key_value` makes it, made here:
                // that call first reads the account info, which the client
                // cannot parse from a 2.9 server.
                let config = stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age: ttl,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    ..Default::default()
                };
                js.get_or_create_stream(config).await.map_err(|e| err(e.to_string()))?;
                js.get_key_value(bucket).await.map_err(|e| err(e.to_string()))?
            }
        };
        Ok(Leases {
            kv,
            bucket: bucket.to_string(),
            node: key_part(node),
            held: BTreeMap::new(),
            letting: BTreeMap::new(),
            defer: false,
            seen: View::default(),
        })
    }

    fn err(&self, message: impl ToString) -> LeaseError {
        LeaseError { bucket: self.bucket.clone(), message: message.to_string() }
    }

    /// What the bucket says now: owners and live nodes.
    pub async fn view(&self) -> Result<View, LeaseError> {
        let keys: Vec<String> =
            self.kv.keys().await.map_err(|e| self.err(e))?.try_collect().await.map_err(|e| self.err(e))?;
        let mut view = View { owners: BTreeMap::new(), nodes: BTreeSet::new(), states: BTreeMap::new() };
        for key in keys {
            if let Some(node) = key.strip_prefix(NODES) {
                view.nodes.insert(node.to_string());
            } else if let Some(upstream) = key.strip_prefix(STATES) {
                if let Some(state) = self.kv.get(key.as_str()).await.map_err(|e| self.err(e))? {
                    view.states.insert(upstream.to_string(), String::from_utf8_lossy(&state).into_owned());
                }
            } else if let Some(upstream) = key.strip_prefix(UPSTREAMS) {
                // Gone between the listing and the read: free.
                if let Some(owner) = self.kv.get(key.as_str()).await.map_err(|e| self.err(e))? {
                    view.owners.insert(upstream.to_string(), String::from_utf8_lossy(&owner).into_owned());
                }
            }
        }
        Ok(view)
    }

    /// One round (every `lease_ttl / 3`): renews this node's liveness and
    /// its leases (a lease that cannot be renewed is lost), then takes its
    /// share of free upstreams and lets the excess go. Returns the
    /// upstreams this node holds after the round.
    pub async fn round(&mut self, upstreams: &[String]) -> Result<BTreeSet<String>, LeaseError> {
        let me = Bytes::from(self.node.clone());
        self.kv.put(format!("{NODES}{}", self.node), me.clone()).await.map_err(|e| self.err(e))?;
        let names: Vec<String> = upstreams.iter().map(|u| key_part(u)).collect();
        let held: Vec<(String, u64)> = self.held.iter().map(|(u, r)| (u.clone(), *r)).collect();
        for (upstream, revision) in held {
            if !names.contains(&upstream) {
                // Removed from the config (a reload): let it go.
                self.held.remove(&upstream);
                let _ = self.kv.delete_expect_revision(lease_key(&upstream), Some(revision)).await;
                continue;
            }
            match self.kv.update(lease_key(&upstream), me.clone(), revision).await {
                Ok(revision) => {
                    self.held.insert(upstream, revision);
                }
                Err(e) => {
                    self.held.remove(&upstream);
                    warn!(upstream = %upstream, node = %self.node, error = %e, "Lease lost.");
                }
            }
        }
        self.seen = self.view().await?;
        // A lease being handed over is neither this node's nor free.
        let mut planning = self.seen.clone();
        for upstream in self.letting.keys() {
            planning.owners.insert(upstream.clone(), format!("{}~", self.node));
        }
        let step = plan(&self.node, &names, &planning);
        for upstream in step.release {
            let Some(revision) = self.held.remove(&upstream) else { continue };
            if self.defer {
                info!(upstream = %upstream, node = %self.node, "Lease being let go (above the fair share).");
                self.letting.insert(upstream, revision);
            } else {
                self.kv.delete(lease_key(&upstream)).await.map_err(|e| self.err(e))?;
                info!(upstream = %upstream, node = %self.node, "Lease let go (above the fair share).");
            }
        }
        for upstream in step.take {
            // Fails when another node took it first: fine, it is held.
            if let Ok(revision) = self.kv.create(lease_key(&upstream), me.clone()).await {
                info!(upstream = %upstream, node = %self.node, "Lease taken.");
                self.held.insert(upstream, revision);
            }
        }
        Ok(self.held.keys().cloned().collect())
    }

    /// Says this node is alive without taking anything: the first round,
    /// so that replicas starting together count each other before taking.
    pub async fn announce(&self) -> Result<(), LeaseError> {
        let me = Bytes::from(self.node.clone());
        self.kv.put(format!("{NODES}{}", self.node), me).await.map(drop).map_err(|e| self.err(e))
    }

    /// From now on, leases above the fair share are not deleted by
    /// [`Leases::round`] but handed over: see [`Leases::let_go`].
    pub fn defer_release(&mut self) {
        self.defer = true;
    }

    /// True while `upstream`'s lease is being handed over.
    pub fn is_letting_go(&self, upstream: &str) -> bool {
        self.letting.contains_key(&key_part(upstream))
    }

    /// Deletes a lease being handed over (unless it expired and another
    /// node took it since).
    pub async fn let_go(&mut self, upstream: &str) {
        let Some(revision) = self.letting.remove(&key_part(upstream)) else { return };
        match self.kv.delete_expect_revision(lease_key(&key_part(upstream)), Some(revision)).await {
            Ok(()) => info!(upstream, node = %self.node, "Lease let go (above the fair share)."),
            Err(e) => info!(upstream, node = %self.node, error = %e, "Lease had expired before it was let go."),
        }
    }

    /// What the bucket said in the last round (owners, live nodes, states).
    pub fn seen(&self) -> &View {
        &self.seen
    }

    /// This node's name as written in the bucket.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster's run id: the one in the bucket, or `fresh` when there
    /// is none yet (this node starts the cluster, or all were gone for
    /// longer than `lease_ttl`).
    pub async fn run_id(&self, fresh: &str) -> Result<String, LeaseError> {
        if self.kv.create(RUN, Bytes::from(fresh.to_string())).await.is_ok() {
            return Ok(fresh.to_string());
        }
        match self.kv.get(RUN).await.map_err(|e| self.err(e))? {
            Some(run) => Ok(String::from_utf8_lossy(&run).into_owned()),
            // Expired between the two calls: ours then.
            None => {
                self.kv.put(RUN, Bytes::from(fresh.to_string())).await.map_err(|e| self.err(e))?;
                Ok(fresh.to_string())
            }
        }
    }

    /// Keeps `run` (every round, by every node: it lives while one does)
    /// and the link state of each upstream this node owns.
    pub async fn renew(&self, run: &str, states: &[(String, &'static str)]) -> Result<(), LeaseError> {
        self.kv.put(RUN, Bytes::from(run.to_string())).await.map_err(|e| self.err(e))?;
        for (upstream, state) in states {
            if self.held.contains_key(&key_part(upstream)) {
                let key = format!("{STATES}{}", key_part(upstream));
                self.kv.put(key, Bytes::from_static(state.as_bytes())).await.map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Lets every lease go and marks this node gone (a clean stop), so
    /// others take over at once instead of after `lease_ttl`.
    pub async fn release_all(&mut self) -> Result<(), LeaseError> {
        for (upstream, revision) in std::mem::take(&mut self.letting) {
            let _ = self.kv.delete_expect_revision(lease_key(&upstream), Some(revision)).await;
        }
        for upstream in std::mem::take(&mut self.held).into_keys() {
            self.kv.delete(lease_key(&upstream)).await.map_err(|e| self.err(e))?;
        }
        self.kv.delete(format!("{NODES}{}", self.node)).await.map_err(|e| self.err(e))
    }
}

/// The lease key of an upstream.
fn lease_key(upstream: &str) -> String {
    format!("{UPSTREAMS}{upstream}")
}

/// A name as one KV key token: `[A-Za-z0-9_-]`, others `_`, empty `_`.
fn key_part(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
