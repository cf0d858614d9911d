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

mod reload;

pub use reload::ReloadReport;

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

/// How often `serve` looks for dead upstream actors.
const REVIVE_EVERY: Duration = Duration::from_secs(2);

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
