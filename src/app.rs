//! Wiring: registry, hub, supervised upstreams, HTTP server, and the
//! shutdown order. [`Gateway::start`] returns once the listener is bound, so
//! tests run the real thing on port 0 and stop it when they like.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::fanout::{Closed, Hub};
use crate::http::{self, AppState};
use crate::status::StatusBoard;
use crate::subscriber::sinks::Sinks;
use crate::subscriber::websocket::{tune_accepted_socket, SubscriberSettings, WsEndpoint};
use crate::telemetry::Metrics;
use crate::upstream::{self, Upstream};
use crate::watchdog::Watchdog;

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
    upstreams: Vec<(String, Addr<Upstream>)>,
    sinks: Sinks,
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
        let metrics = Metrics::new();
        let board = StatusBoard::new();
        let hub = Hub::new();
        let watchdog = Watchdog.start();

        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), upstream::spawn(Arc::new(u.clone()), &hub, &metrics, &board)))
            .collect();

        let sinks = Sinks::start(&settings.sinks, &hub, &metrics)?;
        let state = AppState { board: Arc::clone(&board), metrics: Arc::clone(&metrics), watchdog };
        let ws = WsEndpoint {
            hub: hub.clone(),
            settings: Arc::new(std::sync::RwLock::new(SubscriberSettings::resolve(&settings.subscribers)?)),
            board: Arc::clone(&board),
            metrics: Arc::clone(&metrics),
            live: Arc::default(),
        };
        let stall = settings.subscribers.stall_timeout.get();
        let workers = std::thread::available_parallelism().map(|n| n.get().clamp(1, 4)).unwrap_or(2);
        let timeout_secs = settings.server.shutdown_timeout.get().as_secs().max(1);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::Data::new(ws.clone()))
                .configure(http::routes)
        })
        .on_connect(move |conn, _| tune_accepted_socket(conn, stall))
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(timeout_secs)
        .listen(listener)
        .context("cannot start the HTTP server")?
        .run();
        let handle = server.handle();
        let server_done = actix_rt::spawn(server);
        info!(listen = %addr, upstreams = settings.upstreams.len(), "wsgate is serving.");
        Ok(Gateway { addr, board, metrics, hub, settings, upstreams, sinks, server: handle, server_done })
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
        let work = async move {
            hub.close_all(Closed::Shutdown);
            let closes = self.upstreams.iter().map(|(_, addr)| addr.send(upstream::Shutdown));
            futures_util::future::join_all(closes).await;
            self.sinks.flush_and_stop(timeout.saturating_sub(started.elapsed())).await;
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

/// Runs until `signal` resolves, then shuts down. Returns the exit code.
pub async fn run_until(settings: Settings, signal: impl Future<Output = ()>) -> i32 {
    let gateway = match Gateway::start(settings).await {
        Ok(g) => g,
        Err(e) => {
            error!(error = %format!("{e:#}"), "wsgate cannot start.");
            return 1;
        }
    };
    signal.await;
    match gateway.shutdown().await {
        ShutdownOutcome::Clean => 0,
        ShutdownOutcome::TimedOut => 1,
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            warn!("Cannot install signal handlers; stop with SIGKILL.");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received."),
            _ = int.recv() => info!("SIGINT received."),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for `cond` to hold, polling, up to `deadline`. For tests and the demo.
pub async fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
