//! How the upstream actor starts a link: the reconnect governor's slot, the
//! secret and TLS files read off-thread, the dial and upgrade, and the
//! handshake steps sent after it. Results come back as lifecycle events
//! tagged with the epoch of the `Dial` or `Handshake` action.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use awc::ws::Message;
use bytestring::ByteString;
use tracing::{debug, warn};

use super::actor::Upstream;
use super::attempt::{Attempt, Files, Upgraded};
use super::error::LinkError;
use super::governor::Permit;
use super::handshake::Values;
use super::link::Event;

impl Upstream {
    /// Reads the secret and TLS files off this thread (SPEC §11), then dials
    /// and upgrades; results come back tagged with `epoch`.
    pub(super) fn dial(&mut self, ctx: &mut Context<Self>, epoch: u64) {
        let Some(url) = self.current(epoch).map(|s| s.cfg.url.clone()) else { return };
        self.deps.status.set_waiting(true);
        let admit = Arc::clone(&self.deps.governor).admit(host_port(&url));
        ctx.spawn(admit.into_actor(self).map(move |(permit, waited), act, ctx| {
            act.deps.status.set_waiting(false);
            act.deps.metrics.connect_waited(waited);
            if act.current(epoch).is_some() {
                act.dial_admitted(ctx, epoch, permit);
            }
        }));
    }

    /// The governor let this connect go: it holds `permit` until the
    /// upgrade is done.
    fn dial_admitted(&mut self, ctx: &mut Context<Self>, epoch: u64, permit: Permit) {
        let Some(cfg) = self.current(epoch).map(|s| Arc::clone(&s.cfg)) else { return };
        let files = Files::read(Arc::clone(&cfg), self.command_token.clone());
        ctx.spawn(files.into_actor(self).map(move |files, act, ctx| {
            if act.current(epoch).is_none() {
                return;
            }
            let files = files.inspect(|f| {
                act.command_token = f.creds.cached.clone();
                act.creds = f.creds.clone();
            });
            let attempt = match files.and_then(|f| Attempt::prepare(&cfg, f)) {
                Ok(a) => a,
                Err(error) => return act.apply(ctx, Event::Failed { epoch, now: Instant::now(), error }),
            };
            if attempt.insecure {
                warn!(upstream = %act.cfg.name, "TLS certificate verification is OFF (tls.insecure_skip_verify); use only in tests.");
            }
            debug!(upstream = %act.cfg.name, url = %cfg.redacted_url(), "Connecting to upstream.");
            ctx.spawn(attempt.run().into_actor(act).map(move |res, act, ctx| {
                drop(permit);
                if act.current(epoch).is_none() {
                    return;
                }
                match res.and_then(|up| act.check_subprotocol(up)) {
                    Ok(up) => {
                        act.attach(ctx, epoch, up);
                        act.apply(ctx, Event::Upgraded { epoch, now: Instant::now() });
                    }
                    Err(error) => act.apply(ctx, Event::Failed { epoch, now: Instant::now(), error }),
                }
            }));
        }));
    }

    fn check_subprotocol(&self, up: Upgraded) -> Result<Upgraded, LinkError> {
        match &up.protocol {
            Some(p) if !self.cfg.subprotocols.iter().any(|o| o == p) => {
                Err(LinkError::Protocol(format!("server picked subprotocol {p:?}, which was not offered")))
            }
            _ => Ok(up),
        }
    }

    /// Sends handshake step `step` (rendered now, one clock reading) and,
    /// when it waits for a reply, shows it in `/status` and arms its timeout.
    pub(super) fn send_step(&mut self, ctx: &mut Context<Self>, epoch: u64, step: usize) {
        let Some(s) = self.plan.steps.get(step) else { return };
        let values = Values { token: self.creds.token.as_ref(), secrets: &self.creds.secrets };
        let text = match s.render(&values, std::time::SystemTime::now()) {
            Ok((text, _shown)) => text,
            Err(error) => return self.apply(ctx, Event::Failed { epoch, now: Instant::now(), error }),
        };
        let (label, timeout, waits) = (s.label.clone(), s.timeout, s.expect.is_some());
        let kind = if s.auth { "auth reply" } else { "reply" };
        let error = s.error(&format!("no {kind} within {timeout:?}"));
        self.write(super::link::Lifecycle::slot_of(epoch), Message::Text(ByteString::from(text)));
        if waits {
            // Shown while it holds the upstream back: not for a rotation's
            // new link, nor for a second link while another is connected.
            let id = super::link::Lifecycle::slot_of(epoch);
            let primary = self.slot(id).is_some_and(|s| s.role == super::slots::Role::Primary && !s.life.quiet());
            if primary && self.shown != Some(crate::model::LinkState::Connected) {
                self.deps.status.set_handshake_step(Some(label));
            }
            ctx.run_later(timeout, move |act, ctx| {
                act.apply(ctx, Event::StepTimeout { epoch, step, now: Instant::now(), error });
            });
        }
    }
}

/// `host:port` of a `ws://` or `wss://` URL, the governor's per-host key.
pub(super) fn host_port(url: &str) -> String {
    let secure = url.starts_with("wss://");
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = hostport.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if secure { 443 } else { 80 })
    }
}
