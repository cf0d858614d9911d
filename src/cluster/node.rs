//! One replica in the cluster (SPEC §15): the lease round every
//! `lease_ttl / 3`, the upstream actors of the leases it holds, the mirror
//! of the owners' states for the upstreams it does not hold, and the
//! handover at a clean stop.
//!
//! Start: connect to NATS, open the bucket, read (or start) the cluster's
//! `run`, make sure the stream exists, start the stream reader
//! ([`super::relay`]) and the publisher (an internal `nats` sink on
//! `{subject_prefix}.{upstream}.{topic}` that stores only this replica's
//! own messages). Then, each round:
//!
//! - leases gained: continue `seq` from the last `wsgate-seq` stored for
//!   the upstream (after the reader has passed it), then start the actor;
//! - leases gone (let go above the fair share, or lost): retire the actor
//!   (close 1000); the upstream's status mirrors its new owner;
//! - `run` and the owned upstreams' `state.<name>` renewed in the bucket.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::Addr;
use anyhow::Context as _;
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::{self};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::handover::{continue_seq, hand_over, retire};
use super::relay::{self, Progress, Publishers};
use super::Leases;
use crate::config::{redact_url, ClusterConfig, Redactor, SinkConfig, UpstreamConfig};
use crate::fanout::{Closed, Hub, Publisher};
use crate::health::ProbeTargets;
use crate::model::{LinkState, RunId};
use crate::subscriber::sinks::Sinks;
use crate::telemetry::Metrics;
use crate::upstream::{self, Governor, StatusBoard, Upstream, UpstreamStatus};

/// Hand-overs under way at once, at most (one per upstream; more than that
/// and the lease is left to expire).
const HANDOVERS: usize = 256;
/// How long the cluster stream keeps messages when this replica creates it.
const STREAM_MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest wait for NATS at start (connect, bucket, stream).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway's parts a replica works with.
pub struct Deps {
    /// The hub (publishers of every upstream).
    pub hub: Hub,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Upstream statuses: the actor's when owned, a mirror otherwise.
    pub board: Arc<StatusBoard>,
    /// Rations connects.
    pub governor: Arc<Governor>,
    /// `/healthz` probes the actors this replica runs.
    pub probes: ProbeTargets,
}

/// Who owns what, for `/status`.
#[derive(Debug, Default)]
pub struct Owners {
    /// This replica's node name.
    pub node: String,
    /// Upstream -> owner node, as of the last round.
    owners: RwLock<BTreeMap<String, String>>,
}

impl Owners {
    /// The owner of `upstream`, if any replica holds its lease.
    pub fn owner(&self, upstream: &str) -> Option<String> {
        self.owners.read().unwrap_or_else(|p| p.into_inner()).get(upstream).cloned()
    }
}

/// A running replica.
pub struct Cluster {
    /// Ownership for `/status`.
    pub owners: Arc<Owners>,
    /// The cluster's run id (kept in the bucket).
    pub run: RunId,
    /// Ends the round loop, which then shuts its actors down.
    stop: oneshot::Sender<()>,
    /// A reload's `[[upstreams]]`, applied by the round loop.
    configs: watch::Sender<Vec<Arc<UpstreamConfig>>>,
    /// The round loop; gives the leases back for the handover.
    rounds: tokio::task::JoinHandle<Leases>,
    /// The stream reader.
    reader: tokio::task::JoinHandle<()>,
    /// The internal nats sink that stores owned upstreams' messages.
    publisher: Sinks,
}

impl Cluster {
    /// Joins the cluster. Fails when NATS cannot be reached within 10 s or
    /// refuses the bucket or the stream.
    pub async fn start(cfg: &ClusterConfig, upstreams: &[UpstreamConfig], deps: Deps) -> anyhow::Result<Cluster> {
        let shown = redact_url(&cfg.nats_url, &Redactor::default(), None);
        let node = node_name(&cfg.node);
        let setup = async {
            let client = async_nats::ConnectOptions::new()
                .name("wsgate-cluster")
                .connection_timeout(Duration::from_secs(5))
                .ping_interval(Duration::from_secs(5))
                .max_reconnects(None)
                .connect(cfg.nats_url.as_str())
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {shown}: {}", e.kind()))?;
            let js = jetstream::new(client);
            let leases = Leases::open(&js, &cfg.bucket, &node, cfg.lease_ttl.get()).await?;
            let run = leases.run_id(RunId::random().as_str()).await?;
            let config = stream::Config {
                name: cfg.stream.clone(),
                subjects: vec![format!("{}.>", cfg.subject_prefix)],
                // Bounded: replicas read it live; an hour covers any takeover.
                max_age: STREAM_MAX_AGE,
                ..Default::default()
            };
            let stream =
                js.get_or_create_stream(config).await.map_err(|e| anyhow::anyhow!("stream {}: {e}", cfg.stream))?;
            anyhow::Ok((leases, RunId::from_text(&run), stream))
        };
        let (leases, run, stream) = actix_rt::time::timeout(START_TIMEOUT, setup)
            .await
            .map_err(|_| anyhow::anyhow!("NATS at {shown} did not answer within {START_TIMEOUT:?}"))
            .and_then(|r| r)
            .context("cluster")?;
        info!(node = %leases.node(), run = %run, bucket = %cfg.bucket, stream = %cfg.stream, "Cluster joined.");

        let publisher = Sinks::start(&[publisher_config(cfg, &shown)?], &deps.hub, &deps.metrics, &run)
            .context("cluster publisher")?;
        let publishers: Publishers = Arc::default();
        let mut mirrors = HashMap::new();
        for u in upstreams {
            publishers.write().unwrap_or_else(|p| p.into_inner()).insert(u.name.clone(), deps.hub.publisher(&u.name));
            mirror(&deps, &mut mirrors, u, None, None);
        }
        let progress = Arc::new(Progress::default());
        let reader = actix_rt::spawn(relay::run(
            stream.clone(),
            cfg.subject_prefix.clone(),
            Arc::clone(&publishers),
            Arc::clone(&progress),
        ));
        let owners = Arc::new(Owners { node: leases.node().to_string(), owners: RwLock::default() });
        let (stop, stopped) = oneshot::channel();
        // One hand-over at most per upstream at a time.
        let (handed, handed_rx) = mpsc::channel(HANDOVERS);
        let (configs, configs_rx) = watch::channel(Vec::new());
        let node = Node {
            leases,
            ttl: cfg.lease_ttl.get(),
            prefix: cfg.subject_prefix.clone(),
            stream,
            progress,
            upstreams: upstreams.iter().map(|u| Arc::new(u.clone())).collect(),
            publishers,
            deps,
            owned: BTreeMap::new(),
            handed,
            mirrors,
            owners: Arc::clone(&owners),
            run: run.to_string(),
        };
        let rounds = actix_rt::spawn(node.rounds(stopped, handed_rx, configs_rx));
        Ok(Cluster { owners, run, stop, configs, rounds, reader, publisher })
    }

    /// A reload: the round loop applies the new `[[upstreams]]` at its next
    /// tick (added ones are shared out, removed ones stop and their leases
    /// go, changed ones this replica holds restart).
    pub fn reconfigure(&self, upstreams: &[UpstreamConfig]) {
        let _ = self.configs.send(upstreams.iter().map(|u| Arc::new(u.clone())).collect());
    }

    /// A clean stop: the owned upstreams close (1000), what they brought
    /// is stored, then the leases are let go so others take over at once.
    pub async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(());
        let started = Instant::now();
        let leases = self.rounds.await;
        self.publisher.flush_and_stop(deadline.saturating_sub(started.elapsed()), Closed::Shutdown).await;
        self.reader.abort();
        if let Ok(mut leases) = leases {
            match leases.release_all().await {
                Ok(()) => info!(node = %leases.node(), "Cluster left: leases let go."),
                Err(e) => warn!(error = %e, "Cannot let the leases go; others take over after lease_ttl."),
            }
        }
    }
}

#[path = "reconfig.rs"]
mod reconfig;

/// The round loop's state.
struct Node {
    leases: Leases,
    ttl: Duration,
    prefix: String,
    stream: Stream,
    progress: Arc<Progress>,
    /// In config order.
    upstreams: Vec<Arc<UpstreamConfig>>,
    publishers: Publishers,
    deps: Deps,
    /// The actors of the upstreams this replica holds.
    owned: BTreeMap<String, Addr<Upstream>>,
    /// Hand-overs report here when the lease can be deleted.
    handed: mpsc::Sender<String>,
    /// The status objects of upstreams while this replica does not hold them.
    mirrors: HashMap<String, Arc<UpstreamStatus>>,
    owners: Arc<Owners>,
    run: String,
}

impl Node {
    async fn rounds(
        mut self,
        mut stopped: oneshot::Receiver<()>,
        mut handed: mpsc::Receiver<String>,
        mut configs: watch::Receiver<Vec<Arc<UpstreamConfig>>>,
    ) -> Leases {
        self.leases.defer_release();
        let mut tick = actix_rt::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        // Round 0 only says "alive"; the first real round is one period later.
        tick.tick().await;
        if let Err(e) = self.leases.announce().await {
            warn!(error = %e, "Cluster lease round failed.");
        }
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => break,
            }
            while let Ok(name) = handed.try_recv() {
                self.leases.let_go(&name).await;
            }
            if configs.has_changed().unwrap_or(false) {
                let new = configs.borrow_and_update().clone();
                self.reconfigure(new).await;
            }
            let names: Vec<String> = self.upstreams.iter().map(|u| u.name.clone()).collect();
            match self.leases.round(&names).await {
                Ok(held) => {
                    last_ok = Instant::now();
                    self.apply(&held).await;
                    self.publish_states().await;
                }
                Err(e) => {
                    warn!(error = %e, "Cluster lease round failed.");
                    // Past the TTL the leases are gone: another replica may
                    // connect these upstreams now.
                    if last_ok.elapsed() >= self.ttl && !self.owned.is_empty() {
                        self.apply(&BTreeSet::new()).await;
                    }
                }
            }
        }
        let closes: Vec<_> =
            std::mem::take(&mut self.owned).into_values().map(|a| a.send(upstream::Shutdown)).collect();
        futures_util::future::join_all(closes).await;
        self.leases
    }

    /// Starts what was gained, retires what is gone, mirrors the rest.
    async fn apply(&mut self, held: &BTreeSet<String>) {
        let gone: Vec<String> = self.owned.keys().filter(|u| !held.contains(*u)).cloned().collect();
        for name in gone {
            let Some(addr) = self.owned.remove(&name) else { continue };
            let publisher = self.publisher(&name);
            match publisher.filter(|_| self.leases.is_letting_go(&name)) {
                Some(publisher) => {
                    self.deps.metrics.lease_left(&name, &self.owners.node, "above the fair share");
                    let (stream, prefix) = (self.stream.clone(), self.prefix.clone());
                    let metrics = Arc::clone(&self.deps.metrics);
                    actix_rt::spawn(hand_over(addr, metrics, stream, prefix, name, publisher, self.handed.clone()));
                }
                None => {
                    self.deps.metrics.lease_left(&name, &self.owners.node, "lost");
                    let metrics = Arc::clone(&self.deps.metrics);
                    actix_rt::spawn(async move { retire(addr, metrics, &name).await });
                }
            }
        }
        let gained: Vec<Arc<UpstreamConfig>> = self
            .upstreams
            .iter()
            .filter(|u| held.contains(&u.name) && !self.owned.contains_key(&u.name))
            .cloned()
            .collect();
        // Each continues its seq first; together, so a round stays short.
        let limit = (self.ttl / 4).min(Duration::from_secs(2));
        let continues = gained.iter().filter_map(|u| {
            let publisher = self.publisher(&u.name)?;
            let (stream, prefix, progress) = (&self.stream, &self.prefix, &self.progress);
            Some(async move { continue_seq(stream, prefix, &u.name, &publisher, progress, limit).await })
        });
        futures_util::future::join_all(continues).await;
        for cfg in gained {
            self.deps.metrics.lease_taken(&cfg.name, &self.owners.node);
            let addr = upstream::spawn(
                Arc::clone(&cfg),
                &self.deps.hub,
                &self.deps.metrics,
                &self.deps.board,
                &self.deps.governor,
            );
            self.owned.insert(cfg.name.clone(), addr);
        }
        // The net for an actor that died outside its supervisor's reach.
        for cfg in &self.upstreams {
            if let Some(addr) = self.owned.get_mut(&cfg.name) {
                if !addr.connected() {
                    warn!(upstream = %cfg.name, "Upstream actor died; starting it again.");
                    *addr = upstream::spawn(
                        Arc::clone(cfg),
                        &self.deps.hub,
                        &self.deps.metrics,
                        &self.deps.board,
                        &self.deps.governor,
                    );
                }
            }
        }
        self.deps.metrics.set_owned(self.owned.len());
        let targets = self.owned.iter().map(|(n, a)| (n.clone(), a.clone().recipient())).collect();
        *self.deps.probes.write().unwrap_or_else(|p| p.into_inner()) = targets;

        let seen = self.leases.seen().clone();
        for cfg in &self.upstreams {
            if self.owned.contains_key(&cfg.name) {
                continue;
            }
            let owner = seen.owners.get(&cfg.name).filter(|o| **o != self.owners.node);
            let state = owner.and_then(|_| seen.states.get(&cfg.name)).and_then(|s| parse_state(s));
            mirror(&self.deps, &mut self.mirrors, cfg, owner.map(String::as_str), state);
            if let Some(p) = self.publisher(&cfg.name) {
                p.set_state(state.unwrap_or(LinkState::Connecting));
            }
        }
        let mut owners = seen.owners;
        for name in self.owned.keys() {
            owners.insert(name.clone(), self.owners.node.clone());
        }
        *self.owners.owners.write().unwrap_or_else(|p| p.into_inner()) = owners;
    }

    /// The hub handle of a configured upstream.
    fn publisher(&self, name: &str) -> Option<Publisher> {
        self.publishers.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Writes `state.<name>` of each owned upstream.
    async fn publish_states(&self) {
        let boards = self.deps.board.upstreams();
        let states: Vec<(String, &'static str)> = boards
            .iter()
            .filter(|s| self.owned.contains_key(&s.name))
            .map(|s| (s.name.clone(), s.state().as_str()))
            .collect();
        if let Err(e) = self.leases.renew(&self.run, &states).await {
            warn!(error = %e, "Cannot write the owned upstreams' states.");
        }
    }
}

/// The status of an upstream this replica does not connect: its owner's
/// state, or `connecting` while nobody holds it. `mirrors` keeps the
/// status object per upstream, put back on the board when an actor of
/// this replica had replaced it.
fn mirror(
    deps: &Deps,
    mirrors: &mut HashMap<String, Arc<UpstreamStatus>>,
    cfg: &UpstreamConfig,
    owner: Option<&str>,
    state: Option<LinkState>,
) {
    let status = mirrors
        .entry(cfg.name.clone())
        .or_insert_with(|| Arc::new(UpstreamStatus::new(&cfg.name, cfg.redacted_url(), cfg.required)));
    let on_board = deps.board.upstreams().iter().any(|s| Arc::ptr_eq(s, status));
    if !on_board {
        deps.board.insert(Arc::clone(status));
    }
    status.set_state(state.unwrap_or(LinkState::Connecting));
    status.set_error(match owner {
        Some(o) => format!("held by cluster node {o}"),
        None => "no cluster node holds the lease yet".into(),
    });
}

/// A state as written in the bucket.
fn parse_state(text: &str) -> Option<LinkState> {
    LinkState::ALL.into_iter().find(|s| s.as_str() == text)
}

/// `node`, or the host name when empty, as a KV key token.
fn node_name(node: &str) -> String {
    let name = if node.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "wsgate".into())
    } else {
        node.to_string()
    };
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The internal publisher: a `nats` sink on the cluster's stream and
/// subjects, envelope format, default queue.
fn publisher_config(cfg: &ClusterConfig, shown: &str) -> anyhow::Result<SinkConfig> {
    let mut sink: SinkConfig = toml::from_str("kind = \"nats\"").context("the publisher's defaults")?;
    if let SinkConfig::Nats(n) = &mut sink {
        n.url = cfg.nats_url.clone();
        n.stream = cfg.stream.clone();
        n.subject = format!("{}.{{upstream}}.{{topic}}", cfg.subject_prefix);
    } else {
        anyhow::bail!("publisher for {shown}: not a nats sink");
    }
    Ok(sink)
}
