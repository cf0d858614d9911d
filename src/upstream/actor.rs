//! The `Upstream` actor: one per configured feed, under a `Supervisor`.
//!
//! A shell around the pure lifecycle (`link.rs`): it turns dial results,
//! frames and timers into [`Event`]s, and carries out the [`Action`]s that
//! [`Lifecycle::on`] returns. Frames and closing links are `wire.rs`,
//! decoding and publishing `inbound.rs`, the heartbeat `heartbeat.rs`.
//! Connect and auth run as spawned futures, never `ctx.wait`, so the
//! mailbox and the heartbeat keep running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::io::WriteHandler;
use actix::prelude::*;
use awc::error::WsProtocolError;
use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::attempt::encode_query;
use super::board::UpstreamStatus;
use super::credentials::{CachedToken, Credentials};
use super::dedupe::{Dedupe, Identity};
use super::error::LinkError;
use super::governor::Governor;
use super::handshake::Plan;
use super::inbound::Inbound;
use super::link::{Action, Event, Phase};
use super::rotation::Switching;
use super::slots::{self, Role, Slot};
use super::wire::Closing;
use crate::config::{scrub, Redundancy, Rotate, UpstreamConfig};
use crate::fanout::Publisher;
use crate::model::LinkState;
use crate::telemetry::{LinkMetrics, UpstreamMetrics};

/// How long a stop waits for the close frame to be flushed.
const STOP_FLUSH: Duration = Duration::from_secs(2);

/// Close with 1000 and stay `stopped` (shutdown). Answers once the close
/// frame is flushed, or after two seconds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Close with 1000 and stay `stopped` because a reload removed or changed
/// this upstream (reason `reload`). Answers like [`Shutdown`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Close with 1000 and stay stopped because this upstream's cluster lease
/// moved to another replica (SPEC §15; reason `reload`). Like [`Retire`],
/// but the subscribers are not told `stopped`: the upstream lives on at
/// its new owner, whose state the cluster mirrors here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver;

/// What the actor needs from the rest of the process.
pub struct UpstreamDeps {
    /// Where decoded messages go.
    pub publisher: Publisher,
    /// This upstream's metric series and named telemetry events.
    pub metrics: UpstreamMetrics,
    /// This upstream's live status.
    pub status: Arc<UpstreamStatus>,
    /// The reconnect governor shared by every upstream.
    pub governor: Arc<Governor>,
}

/// The actor of one upstream.
pub struct Upstream {
    /// The upstream's config.
    pub(super) cfg: Arc<UpstreamConfig>,
    /// Status, metrics and the hub.
    pub(super) deps: UpstreamDeps,
    /// The link slots (`slots.rs`): one lifecycle each, every decision
    /// about a link is its lifecycle's.
    pub(super) slots: Vec<Slot>,
    /// The id of the next slot (rotation candidates get new ones).
    pub(super) next_slot: u32,
    /// The last `conn` handed out, shared by every slot (SPEC §14a).
    pub(super) conns: u64,
    /// The state last shown for the upstream (the best of its primaries).
    pub(super) shown: Option<LinkState>,
    /// The last `conn` of each endpoint, for `/status` `links`.
    pub(super) link_conns: Vec<u64>,
    /// How message identities are found, and the ones remembered: only
    /// when two links can be live at once (rotation, `redundancy = "all"`).
    pub(super) dedupe: Option<(Identity, Dedupe)>,
    /// A make-before-break switch waiting for the streams to meet (`switch.rs`).
    pub(super) switching: Option<Switching>,
    /// The link metrics of this upstream (SPEC §14).
    pub(super) links: LinkMetrics,
    /// Old links, still read until the server answers our close.
    pub(super) closing: Vec<Closing>,
    /// Decoder and topics.
    pub(super) inbound: Inbound,
    /// The handshake steps, built once from the config.
    pub(super) plan: Plan,
    /// The token and named secrets of the current attempt: rendered into
    /// handshake steps, scrubbed from error text.
    pub(super) creds: Credentials,
    /// What `token_command` printed last, for its `refresh`.
    pub(super) command_token: CachedToken,
    /// Shutdown callers waiting for the close frame to be flushed.
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Handed over to another replica: its last state change (`stopped`)
    /// is not announced to subscribers.
    handed_over: bool,
}

impl Upstream {
    /// A new actor; it connects when started.
    pub fn new(cfg: Arc<UpstreamConfig>, deps: UpstreamDeps) -> Self {
        let urls = cfg.link_urls().len();
        let several = (cfg.redundancy == Redundancy::All && urls > 1)
            || (!cfg.max_connection_age.is_zero() && cfg.rotate == Rotate::MakeBeforeBreak);
        let slots = slots::initial(&cfg);
        Upstream {
            next_slot: slots.len() as u32,
            slots,
            conns: 0,
            shown: None,
            link_conns: vec![0; urls],
            dedupe: several.then(|| (Identity::new(cfg.sequence.as_ref()), Dedupe::new(cfg.dedupe_window))),
            switching: None,
            links: deps.metrics.links(if cfg.urls.is_empty() { 0 } else { urls }),
            plan: Plan::new(&cfg),
            inbound: Inbound::new(&cfg),
            cfg,
            deps,
            closing: Vec::new(),
            creds: Credentials::default(),
            command_token: None,
            close_waiters: Vec::new(),
            handed_over: false,
        }
    }

    /// Carries out one action of slot `id`'s lifecycle.
    pub(super) fn perform(&mut self, ctx: &mut Context<Self>, id: u32, action: Action) {
        match action {
            // The upstream's state is shown by `refresh`, after the actions.
            Action::State(_) => {}
            Action::Dial { epoch, retry } => {
                let primary = self.slot(id).is_some_and(|s| s.role == Role::Primary);
                if retry && primary {
                    self.deps.status.add_reconnect();
                    self.next_url(id);
                }
                self.dial(ctx, epoch);
            }
            Action::Handshake { epoch, step } => self.send_step(ctx, epoch, step),
            Action::Live { epoch, conn } => {
                self.deps.status.set_conn(conn);
                let now = Instant::now();
                self.went_live(ctx, id, epoch, now);
                self.fresh_data(id);
                let url = self.slot(id).map(|s| s.cfg.redacted_url()).unwrap_or_default();
                self.deps.metrics.connected(&url);
                debug!(upstream = %self.cfg.name, conn, "Link is live.");
                ctx.run_later(self.cfg.reconnect.stable_after.get(), move |act, ctx| {
                    act.apply(ctx, Event::Stable { epoch });
                });
            }
            Action::Report { error, live } => {
                let reason = error.reason();
                let text = self.scrub(error.to_string());
                // The lifecycle has already moved on: backoff (until when) or stopped.
                let next = match self.slot(id).map(|s| s.life.phase()) {
                    Some(Phase::Backoff { until, .. }) => Some(until.saturating_duration_since(Instant::now())),
                    _ => None,
                };
                if live {
                    self.deps.metrics.link_lost(reason, &text, next);
                } else {
                    self.deps.metrics.connect_failed(reason, &text, next);
                }
                if let LinkError::Closed { code, .. } = &error {
                    self.deps.status.set_close_code(*code);
                }
                self.deps.status.set_error(format!("{}: {text}", reason.code()));
            }
            Action::Ended(reason) => self.deps.metrics.link_ended(reason),
            Action::Close(bye) => self.close_link(ctx, id, bye),
            Action::Wait { epoch, delay } => {
                debug!(upstream = %self.cfg.name, delay_ms = delay.as_millis() as u64, "Reconnecting after backoff.");
                ctx.run_later(delay, move |act, ctx| act.apply(ctx, Event::BackoffOver { epoch }));
            }
            Action::GaveUp => error!(
                upstream = %self.cfg.name,
                max_elapsed = %self.cfg.reconnect.max_elapsed,
                "Upstream gave up: reconnect.max_elapsed passed; it stays stopped until a reload or restart."
            ),
            Action::Restart => {
                error!(upstream = %self.cfg.name, "Handling upstream data panicked; restarting this upstream.");
                // The supervisor restarts the actor: restarting(), then started().
                ctx.stop();
            }
        }
    }

    /// `redundancy = "failover"`: slot `id` dials the next URL.
    fn next_url(&mut self, id: u32) {
        let n = self.cfg.urls.len();
        if self.cfg.redundancy != Redundancy::Failover || n < 2 {
            return;
        }
        let next = self.slot(id).map_or(0, |s| (s.url + 1) % n);
        let cfg = Arc::new(self.cfg.for_link(next));
        if let Some(s) = self.slot_mut(id) {
            s.url = next;
            s.cfg = cfg;
        }
    }

    pub(super) fn set_state(&mut self, state: LinkState) {
        if state != LinkState::Authenticating {
            self.deps.status.set_handshake_step(None);
        }
        debug!(upstream = %self.cfg.name, to = state.as_str(), "Upstream state changed.");
        self.deps.status.set_state(state);
        self.deps.metrics.state(state);
        if !self.handed_over {
            self.deps.publisher.set_state(state);
        }
    }

    /// `text` without the token of the current attempt (as given and as
    /// put in a query) or any secret part of the URL (SPEC §11), for error
    /// texts that come from libraries.
    fn scrub(&self, text: String) -> String {
        scrub(&text, &self.hidden())
    }

    /// What no log line or error text may show: the URL's secrets, the
    /// token (as given and as put in a query) and the named secrets.
    pub(super) fn hidden(&self) -> Vec<String> {
        let mut secrets = self.cfg.url_secrets();
        if let Some(t) = &self.creds.token {
            secrets.push(t.expose().to_string());
            secrets.push(encode_query(t.expose()));
        }
        secrets.extend(self.creds.secrets.values().map(|s| s.expose().to_string()));
        secrets
    }

    /// Stops for good with `why`; the future resolves once the close frame
    /// is flushed (or after [`STOP_FLUSH`]).
    fn stop_and_wait(&mut self, ctx: &mut Context<Self>, why: LinkError) -> ResponseFuture<()> {
        let had_link = self.slots.iter().any(|s| s.link.is_some());
        self.apply(ctx, Event::Stop { error: why });
        if !had_link {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.close_waiters.push(tx);
        Box::pin(async move {
            let _ = actix_rt::time::timeout(STOP_FLUSH, rx).await;
        })
    }
}

// === impl Actor ===

impl Actor for Upstream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.apply(ctx, Event::Started { now: Instant::now() });
    }
}

impl Supervised for Upstream {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        // The old context's futures, streams and timers are gone; make sure
        // the old connections go with them. Rotations in progress end.
        self.drop_links();
        self.switching = None;
        let gone: Vec<u8> = self.slots.iter().filter(|s| s.role != Role::Primary).map(|s| s.lane).collect();
        self.slots.retain(|s| s.role == Role::Primary);
        if let Some((_, d)) = self.dedupe.as_mut() {
            for lane in gone {
                d.forget_lane(lane);
            }
        }
        info!(upstream = %self.cfg.name, "Upstream actor restarting.");
    }
}

impl WriteHandler<WsProtocolError> for Upstream {
    /// Write errors also surface on the read side or as a dead link; an old
    /// link's late error must not tear down the new one.
    fn error(&mut self, err: WsProtocolError, _ctx: &mut Self::Context) -> Running {
        debug!(upstream = %self.cfg.name, error = %err, "Upstream write failed.");
        Running::Continue
    }

    /// A sink finished closing: the close frame is out.
    fn finished(&mut self, _ctx: &mut Self::Context) {
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

impl Handler<Shutdown> for Upstream {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        self.stop_and_wait(ctx, LinkError::Shutdown)
    }
}

impl Handler<Retire> for Upstream {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) -> Self::Result {
        info!(upstream = %self.cfg.name, "Upstream retired by a reload.");
        self.stop_and_wait(ctx, LinkError::Reload)
    }
}

impl Handler<HandOver> for Upstream {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: HandOver, ctx: &mut Self::Context) -> Self::Result {
        info!(upstream = %self.cfg.name, "Upstream handed over to another replica.");
        self.handed_over = true;
        self.stop_and_wait(ctx, LinkError::Reload)
    }
}

impl Handler<crate::health::Probe> for Upstream {
    type Result = ();

    /// Answering at all is the proof of life: the mailbox is served.
    fn handle(&mut self, _: crate::health::Probe, _ctx: &mut Self::Context) {}
}
