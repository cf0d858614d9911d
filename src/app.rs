//! Wiring: registry, hub, supervised upstreams, HTTP server, and the
//! shutdown order. [`Gateway::start`] returns once the listener is bound, so
//! tests run the real thing on port 0 and stop it when they like.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::cluster::{self, Cluster};
use crate::config::{self, ConfigSource, Settings, UpstreamConfig};
use crate::fanout::{Closed, Hub};
use crate::health::ProbeTargets;
use crate::http::{self, AppState};
use crate::model::RunId;
use crate::subscriber::auth::{refuse_open, watch_token_file};
use crate::subscriber::sinks::Sinks;
use crate::subscriber::websocket::{SubscriberSettings, WsEndpoint};
use crate::telemetry::Metrics;
use crate::transport::socket;
use crate::upstream::{self, Governor, StatusBoard, Upstream};

/// A running gateway.
pub struct Gateway {
    /// The address the HTTP server is bound to.
    pub addr: SocketAddr,
    /// Live states, for tests and the shutdown sequence.
    pub board: Arc<StatusBoard>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The hub.
    pub hub: Hub,
    settings: Settings,
    /// In config order: each upstream's config (to diff on reload) and actor.
    upstreams: Vec<(Arc<UpstreamConfig>, Addr<Upstream>)>,
    /// Read by `/ws` for every new connection; replaced on reload.
    subscriber_settings: Arc<std::sync::RwLock<SubscriberSettings>>,
    /// The upstream actors `/healthz` probes; follows `upstreams`.
    probes: ProbeTargets,
    /// Rations connects across all upstreams (SPEC §13).
    governor: Arc<Governor>,
    /// Keeps the subscriber token of `auth_token_file` current.
    token_watch: tokio::task::JoinHandle<()>,
    sinks: Sinks,
    /// This process's run id: with `seq`, names a message for the broker
    /// sinks (`Nats-Msg-Id`); kept across reloads. In cluster mode the
    /// cluster's, from the lease bucket.
    run: RunId,
    /// This replica's part in the cluster (`[cluster] enabled`): it runs
    /// the upstream actors of the leases it holds; `upstreams` is empty.
    cluster: Option<Cluster>,
    server: ServerHandle,
    server_done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Everything closed in time: exit 0.
    Clean,
    /// `shutdown_timeout` passed first: exit 1.
    TimedOut,
}

impl Gateway {
    /// Binds `server.listen`, starts the upstream actors on the current
    /// arbiter and the HTTP server on its workers.
    pub async fn start(settings: Settings) -> anyhow::Result<Gateway> {
        let listener = TcpListener::bind(&settings.server.listen)
            .with_context(|| format!("cannot listen on {} (server.listen)", settings.server.listen))?;
        Self::start_on(settings, listener).await
    }

    /// As [`Gateway::start`], on a listener the caller bound.
    pub async fn start_on(settings: Settings, listener: TcpListener) -> anyhow::Result<Gateway> {
        let addr = listener.local_addr()?;
        let resolved = SubscriberSettings::resolve(&settings.subscribers)?;
        if let Some(refusal) = refuse_open(&settings, &resolved) {
            anyhow::bail!("{refusal}");
        }
        resolved.warn_if_open();
        let metrics = Metrics::new();
        let board = StatusBoard::new();
        let hub = Hub::new();
        let governor = Governor::new(&settings.reconnect_governor);

        let probes = ProbeTargets::default();
        let (history, history_bytes) = (settings.subscribers.history, settings.subscribers.history_bytes.bytes());
        let (upstreams, cluster, run) = if settings.cluster.enabled {
            let deps = cluster::Deps {
                hub: hub.clone(),
                metrics: Arc::clone(&metrics),
                board: Arc::clone(&board),
                governor: Arc::clone(&governor),
                probes: Arc::clone(&probes),
            };
            let cluster = Cluster::start(&settings.cluster, &settings.upstreams, deps).await?;
            // The cluster's run id (kept in the bucket, SPEC §15), before any relay or publish.
            let run = cluster.run.clone();
            hub.configure_replay(run.clone(), history, history_bytes);
            (Vec::new(), Some(cluster), run)
        } else {
            // Drawn before anything subscribes or publishes: the replay `hello`
            // and the broker sinks' message ids carry it.
            let run = RunId::random();
            hub.configure_replay(run.clone(), history, history_bytes);
            let upstreams = settings
                .upstreams
                .iter()
                .map(|u| {
                    let cfg = Arc::new(u.clone());
                    (Arc::clone(&cfg), upstream::spawn(cfg, &hub, &metrics, &board, &governor))
                })
                .collect();
            (upstreams, None, run)
        };

        let sinks = Sinks::start(&settings.sinks, &hub, &metrics, &run)?;
        let state = AppState {
            board: Arc::clone(&board),
            metrics: Arc::clone(&metrics),
            hub: hub.clone(),
            probes: Arc::clone(&probes),
            owners: cluster.as_ref().map(|c| Arc::clone(&c.owners)),
        };
        let subscriber_settings = Arc::new(std::sync::RwLock::new(resolved));
        let token_watch = actix_rt::spawn(watch_token_file(Arc::clone(&subscriber_settings)));
        let ws = WsEndpoint {
            hub: hub.clone(),
            settings: Arc::clone(&subscriber_settings),
            shutdown: board.shutdown_flag(),
            metrics: Arc::clone(&metrics),
            live: Arc::default(),
        };
        let stall = settings.subscribers.stall_timeout.get();
        let workers = std::thread::available_parallelism().map(|n| n.get().clamp(1, 4)).unwrap_or(2);
        // actix's own graceful-stop limit sits past ours, so that our
        // deadline decides between exit 0 and exit 1.
        let timeout_secs = settings.server.shutdown_timeout.get().as_secs() + 5;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::Data::new(ws.clone()))
                .configure(http::routes)
        })
        .on_connect(move |conn, _| socket::tune_accepted(conn, stall))
        .client_disconnect_timeout(crate::subscriber::websocket::CLOSE_LINGER)
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(timeout_secs)
        .listen(listener)
        .context("cannot start the HTTP server")?
        .run();
        let handle = server.handle();
        let server_done = actix_rt::spawn(server);
        let ws_auth = if subscriber_settings.read().unwrap_or_else(|p| p.into_inner()).token.is_some() {
            "token required"
        } else {
            "open (no subscriber token)"
        };
        info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %addr,
            upstreams = settings.upstreams.len(),
            ws = ws_auth,
            "wsgate is serving."
        );
        let gateway = Gateway {
            addr,
            board,
            metrics,
            hub,
            settings,
            upstreams,
            subscriber_settings,
            probes,
            governor,
            token_watch,
            sinks,
            run,
            cluster,
            server: handle,
            server_done,
        };
        gateway.update_probes();
        Ok(gateway)
    }

    /// Points `/healthz` at the current upstream actors (in cluster mode
    /// the cluster keeps them).
    fn update_probes(&self) {
        if self.cluster.is_some() {
            return;
        }
        let targets = self.upstreams.iter().map(|(c, a)| (c.name.clone(), a.clone().recipient())).collect();
        *self.probes.write().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// The SPEC §9 order: `/readyz` 503 at once; keep serving through
    /// `shutdown_delay`; then subscribers 1001, upstreams 1000, HTTP drained,
    /// all within `shutdown_timeout`.
    pub async fn shutdown(self) -> ShutdownOutcome {
        self.board.begin_shutdown();
        let delay = self.settings.server.shutdown_delay.get();
        if !delay.is_zero() {
            info!(delay = ?delay, "Shutting down: /readyz answers 503; still serving during shutdown_delay.");
            actix_rt::time::sleep(delay).await;
        }
        info!("Shutting down: closing subscribers and upstreams.");
        let timeout = self.settings.server.shutdown_timeout.get();
        let hub = self.hub.clone();
        let started = std::time::Instant::now();
        self.token_watch.abort();
        let work = async move {
            hub.close_all(Closed::Shutdown);
            if let Some(cluster) = self.cluster {
                cluster.stop(timeout.saturating_sub(started.elapsed())).await;
            }
            let closes = self.upstreams.iter().map(|(_, addr)| addr.send(upstream::Shutdown));
            futures_util::future::join_all(closes).await;
            self.sinks.flush_and_stop(timeout.saturating_sub(started.elapsed()), Closed::Shutdown).await;
            self.server.stop(true).await;
            let _ = self.server_done.await;
        };
        match actix_rt::time::timeout(timeout, work).await {
            Ok(()) => {
                info!("Shutdown complete.");
                ShutdownOutcome::Clean
            }
            Err(_) => {
                error!(timeout = ?timeout, "Shutdown did not finish within server.shutdown_timeout; exiting with status 1.");
                ShutdownOutcome::TimedOut
            }
        }
    }
}

/// What a reload did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Upstreams started.
    pub added: Vec<String>,
    /// Upstreams stopped and forgotten.
    pub removed: Vec<String>,
    /// Upstreams restarted with a new config (or restarted from `stopped`).
    pub restarted: Vec<String>,
    /// Upstreams left alone, links and all.
    pub unchanged: Vec<String>,
}

impl Gateway {
    /// Applies a new, already validated config by difference (SPEC §9),
    /// atomically (SPEC §11): the subscriber token is resolved and new sinks
    /// are prepared (files opened, endpoints built) before anything
    /// changes; if any of that fails, nothing changes and the error says why.
    /// Then:
    /// added upstreams start, removed ones stop (followers get a `stopped`
    /// event; their status and metric series go), changed ones restart,
    /// unchanged ones keep their link and their subscribers see nothing.
    /// Upstreams in state `stopped` restart. Subscriber settings apply to new
    /// connections; sinks restart if their config changed, else file sinks
    /// reopen (logrotate). `server.listen` and `[log]` need a restart.
    pub async fn reload(&mut self, new: Settings) -> anyhow::Result<ReloadReport> {
        if new.server.listen != self.settings.server.listen {
            warn!(old = %self.settings.server.listen, new = %new.server.listen, "server.listen changes need a restart; keeping the old listener.");
        }
        if new.log != self.settings.log {
            warn!("[log] changes need a restart.");
        }
        if new.reconnect_governor != self.settings.reconnect_governor {
            warn!("[reconnect_governor] changes need a restart.");
        }
        // === prepare: everything that can fail ===
        let subscribers = SubscriberSettings::resolve(&new.subscribers)?;
        let mut effective = new.clone();
        effective.server.listen = self.settings.server.listen.clone();
        if let Some(refusal) = refuse_open(&effective, &subscribers) {
            anyhow::bail!("{refusal}");
        }
        let new_sinks =
            if new.sinks != self.settings.sinks { Some(Sinks::prepare(&new.sinks, &self.run)?) } else { None };

        // === apply: nothing below fails ===
        subscribers.warn_if_open();
        *self.subscriber_settings.write().unwrap_or_else(|p| p.into_inner()) = subscribers;
        self.hub.configure_replay(self.run.clone(), new.subscribers.history, new.subscribers.history_bytes.bytes());

        let mut report = ReloadReport::default();
        let mut old: Vec<(Arc<UpstreamConfig>, Addr<Upstream>)> = std::mem::take(&mut self.upstreams);
        let mut next = Vec::with_capacity(new.upstreams.len());
        let upstream_cfgs = match &self.cluster {
            Some(cluster) => {
                if new.cluster != self.settings.cluster {
                    warn!("[cluster] changes need a restart.");
                }
                report = cluster_report(&self.settings.upstreams, &new.upstreams);
                cluster.reconfigure(&new.upstreams);
                &[][..]
            }
            None => &new.upstreams[..],
        };
        for cfg in upstream_cfgs {
            let found = old.iter().position(|(c, _)| c.name == cfg.name);
            match found.map(|i| old.remove(i)) {
                Some((c, addr))
                    if *c == *cfg
                        && self
                            .board
                            .upstreams()
                            .iter()
                            .any(|s| s.name == cfg.name && s.state() != crate::model::LinkState::Stopped) =>
                {
                    report.unchanged.push(cfg.name.clone());
                    next.push((c, addr));
                }
                Some((_, addr)) => {
                    let _ = addr.send(upstream::Retire).await;
                    let cfg = Arc::new(cfg.clone());
                    next.push((
                        Arc::clone(&cfg),
                        upstream::spawn(cfg, &self.hub, &self.metrics, &self.board, &self.governor),
                    ));
                    report.restarted.push(new_name(&next));
                }
                None => {
                    let cfg = Arc::new(cfg.clone());
                    next.push((
                        Arc::clone(&cfg),
                        upstream::spawn(cfg, &self.hub, &self.metrics, &self.board, &self.governor),
                    ));
                    report.added.push(new_name(&next));
                }
            }
        }
        for (cfg, addr) in old {
            let _ = addr.send(upstream::Retire).await;
            self.hub.remove_upstream(&cfg.name);
            self.board.remove(&cfg.name);
            self.metrics.remove_upstream(&cfg.name);
            report.removed.push(cfg.name.clone());
        }
        self.upstreams = next;

        self.update_probes();
        match new_sinks {
            Some(prepared) => {
                // Old sinks flush before new ones start: no message written
                // twice, no two writers on one file (the new file handles
                // are open already but written only from now on).
                let stale = std::mem::replace(&mut self.sinks, Sinks::none());
                stale.flush_and_stop(self.settings.server.shutdown_timeout.get(), Closed::Reload).await;
                self.sinks = prepared.start(&self.hub, &self.metrics);
            }
            None => self.sinks.reopen_files(),
        }
        let old_settings = std::mem::replace(&mut self.settings, new);
        self.settings.server.listen = old_settings.server.listen;
        if self.cluster.is_some() {
            // What the cluster runs on until a restart.
            self.settings.cluster = old_settings.cluster;
        }
        info!(added = ?report.added, removed = ?report.removed, restarted = ?report.restarted, unchanged = report.unchanged.len(), "Config reloaded.");
        Ok(report)
    }
}

impl Gateway {
    /// Re-creates every upstream whose actor is gone. The data path catches
    /// panics itself (reason `panic`, supervisor restart); this is the net
    /// for a panic anywhere else, which kills an actor beyond its
    /// supervisor's reach. Returns the names revived.
    pub fn revive_dead_upstreams(&mut self) -> Vec<String> {
        let mut revived = Vec::new();
        for (cfg, addr) in &mut self.upstreams {
            if !addr.connected() {
                error!(upstream = %cfg.name, "Upstream actor died; starting it again.");
                *addr = upstream::spawn(Arc::clone(cfg), &self.hub, &self.metrics, &self.board, &self.governor);
                revived.push(cfg.name.clone());
            }
        }
        if !revived.is_empty() {
            self.update_probes();
        }
        revived
    }
}

/// How often `serve` looks for dead upstream actors.
const REVIVE_EVERY: Duration = Duration::from_secs(2);

/// A reload in cluster mode by name (the cluster applies it: a changed
/// upstream restarts only on the replica that holds it).
fn cluster_report(old: &[UpstreamConfig], new: &[UpstreamConfig]) -> ReloadReport {
    let mut report = ReloadReport::default();
    for cfg in new {
        match old.iter().find(|o| o.name == cfg.name) {
            None => report.added.push(cfg.name.clone()),
            Some(o) if o != cfg => report.restarted.push(cfg.name.clone()),
            Some(_) => report.unchanged.push(cfg.name.clone()),
        }
    }
    report.removed = old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)).map(|o| o.name.clone()).collect();
    report
}

fn new_name(list: &[(Arc<UpstreamConfig>, Addr<Upstream>)]) -> String {
    list.last().map(|(c, _)| c.name.clone()).unwrap_or_default()
}

/// Serves until SIGTERM/SIGINT, reloading from `reload_from` on SIGHUP
/// (an invalid new config is logged and the running one stays). Returns the
/// exit code.
pub async fn serve(settings: Settings, reload_from: Option<ConfigSource>) -> i32 {
    let mut gateway = match Gateway::start(settings).await {
        Ok(g) => g,
        Err(e) => {
            error!(error = %format!("{e:#}"), "wsgate cannot start.");
            return 1;
        }
    };
    let mut signals = Signals::new();
    let mut revive = actix_rt::time::interval(REVIVE_EVERY);
    loop {
        let signal = tokio::select! {
            s = signals.next() => s,
            _ = revive.tick() => {
                gateway.revive_dead_upstreams();
                continue;
            }
        };
        match signal {
            Signal::Terminate => break,
            Signal::Reload => match &reload_from {
                None => info!("SIGHUP: nothing to reload (built-in config)."),
                Some(source) => match config::load(source) {
                    Ok(new) => {
                        if let Err(e) = gateway.reload(new).await {
                            error!(error = %format!("{e:#}"), "Reload failed; the running config stays.");
                        }
                    }
                    Err(e) => error!(error = %e, "Reload rejected: invalid config; the running config stays."),
                },
            },
        }
    }
    match gateway.shutdown().await {
        ShutdownOutcome::Clean => 0,
        ShutdownOutcome::TimedOut => 1,
    }
}

/// Resolves at SIGTERM or SIGINT (SIGHUP is ignored): for processes that
/// only serve until told to stop (`wsgate demo --feed-only`).
pub async fn wait_for_terminate() {
    let mut signals = Signals::new();
    while let Signal::Reload = signals.next().await {}
}

enum Signal {
    Terminate,
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP as one stream.
struct Signals {
    #[cfg(unix)]
    inner: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let inner = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(t), Ok(i), Ok(h)) => Some((t, i, h)),
                _ => {
                    warn!("Cannot install signal handlers; stop with SIGKILL.");
                    None
                }
            };
            Signals { inner }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            let Some((term, int, hup)) = self.inner.as_mut() else { return std::future::pending().await };
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM received."); Signal::Terminate }
                _ = int.recv() => { info!("SIGINT received."); Signal::Terminate }
                _ = hup.recv() => { info!("SIGHUP received: reloading the config."); Signal::Reload }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Terminate
        }
    }
}
