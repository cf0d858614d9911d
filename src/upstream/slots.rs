//! The link slots of one upstream (SPEC §14): one [`Lifecycle`] per slot,
//! each with its epoch, its [`Link`] and its heartbeat. A plain upstream
//! has one slot; `urls` with `redundancy = "all"` one per URL; a
//! make-before-break rotation adds a candidate beside the slot it replaces.
//!
//! Events are routed to their slot by epoch (`Lifecycle::for_slot`); the
//! upstream's state is the best state of its primary slots, so it is
//! `connected` while any link is, and a rotation candidate never shows.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::actor::Upstream;
use super::board::LinkView;
use super::error::LinkError;
use super::link::{Event, Lifecycle, Phase};
use super::wire::Link;
use crate::config::{Redundancy, UpstreamConfig};
use crate::model::LinkState;

/// What a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Its state is the upstream's (with the other primaries).
    Primary,
    /// A make-before-break rotation's new link, not shown until it
    /// delivers its first data message; then it replaces slot `replaces`.
    Candidate {
        /// The slot it replaces.
        replaces: u32,
    },
    /// Replaced by `successor`: still read until the streams overlap or
    /// `rotate_overlap` passes, then closed 1000 (reason `rotate`).
    Draining {
        /// The slot that replaced it.
        successor: u32,
    },
}

/// One link slot.
pub(super) struct Slot {
    /// Names the slot; its epochs start at `id << 32`.
    pub id: u32,
    /// Its lane in the de-duplicator (distinct among live slots).
    pub lane: u8,
    /// The index in `urls` it dials (0 with `url`).
    pub url: usize,
    /// The upstream's config with `url` set to that endpoint.
    pub cfg: Arc<UpstreamConfig>,
    /// Every decision of this slot.
    pub life: Lifecycle,
    /// Its link (handshaking or live), tagged with its epoch.
    pub link: Option<Link>,
    /// What it is for.
    pub role: Role,
    /// A data message came since it went live.
    pub had_data: bool,
    /// The identity of the last data message it brought (de-duplication
    /// on): a new link that brings it has caught up with this one.
    pub last_key: Option<u64>,
}

/// Order of states for the upstream's state: the best slot wins.
fn rank(s: LinkState) -> u8 {
    match s {
        LinkState::Connected => 4,
        LinkState::Authenticating => 3,
        LinkState::Connecting => 2,
        LinkState::Backoff => 1,
        LinkState::Stopped => 0,
    }
}

/// The slots an upstream starts with: one, or one per URL under `all`.
pub(super) fn initial(cfg: &UpstreamConfig) -> Vec<Slot> {
    let n = if cfg.redundancy == Redundancy::All { cfg.link_urls().len() } else { 1 };
    (0..n).map(|i| Slot::new(cfg, i as u32, i as u8, i, Role::Primary)).collect()
}

impl Slot {
    pub(super) fn new(cfg: &UpstreamConfig, id: u32, lane: u8, url: usize, role: Role) -> Slot {
        let cfg = Arc::new(cfg.for_link(url));
        Slot {
            id,
            lane,
            url,
            life: Lifecycle::for_slot(&cfg, id),
            cfg,
            link: None,
            role,
            had_data: false,
            last_key: None,
        }
    }

    pub(super) fn live(&self) -> bool {
        matches!(self.life.phase(), Phase::Live { .. })
    }
}

impl Upstream {
    pub(super) fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.id == id)
    }

    pub(super) fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    /// The slot whose current epoch is `epoch`: results tagged otherwise are stale.
    pub(super) fn current(&self, epoch: u64) -> Option<&Slot> {
        self.slot(Lifecycle::slot_of(epoch)).filter(|s| s.life.epoch() == epoch)
    }

    /// The slot whose link has epoch `epoch`.
    pub(super) fn slot_of_link(&self, epoch: u64) -> Option<u32> {
        self.slots.iter().find(|s| s.link.as_ref().is_some_and(|l| l.epoch() == epoch)).map(|s| s.id)
    }

    /// Links live now.
    pub(super) fn live_links(&self) -> usize {
        self.slots.iter().filter(|s| s.live()).count()
    }

    /// Adds a slot for endpoint `url`; returns its id.
    pub(super) fn add_slot(&mut self, url: usize, role: Role) -> u32 {
        let id = self.next_slot;
        self.next_slot += 1;
        let lane = (0..super::dedupe::LANES).find(|l| self.slots.iter().all(|s| s.lane != *l)).unwrap_or(0);
        self.slots.push(Slot::new(&self.cfg, id, lane, url, role));
        id
    }

    /// Feeds `event` to its slot (by epoch), or to every slot, and
    /// carries out what the lifecycles say.
    pub(super) fn apply(&mut self, ctx: &mut Context<Self>, event: Event) {
        match event.epoch() {
            Some(epoch) => self.apply_to(ctx, Lifecycle::slot_of(epoch), event),
            None => {
                let ids: Vec<u32> = self.slots.iter().map(|s| s.id).collect();
                for id in ids {
                    self.apply_to(ctx, id, event.clone());
                }
            }
        }
    }

    /// Feeds `event` to slot `id`.
    pub(super) fn apply_to(&mut self, ctx: &mut Context<Self>, id: u32, event: Event) {
        if matches!(event, Event::Failed { .. } | Event::Stop { .. } | Event::Rotate { .. }) {
            // A switch in wait ends with either of its links.
            self.switch_ends(ctx, id);
        }
        if matches!(event, Event::Failed { .. }) && self.slot(id).is_some_and(|s| s.role == Role::Primary) {
            // A link lost while its live replacement waits for data (a quiet
            // feed): the replacement takes over instead of a redial.
            let ready = self.slots.iter().find(|s| s.role == (Role::Candidate { replaces: id }) && s.live());
            if let Some(new) = ready.map(|s| s.id) {
                self.promote(ctx, new, id);
            }
        }
        let conns = self.conns;
        let Some(slot) = self.slot_mut(id) else { return };
        // A replaced link that fails is not replaced again: it is retired.
        let event = match (slot.role, event) {
            (Role::Draining { .. }, Event::Failed { .. }) => Event::Stop { error: LinkError::Rotate },
            (_, e) => e,
        };
        slot.life.set_conns(conns);
        let actions = slot.life.on(event);
        let last = slot.life.conns();
        self.conns = self.conns.max(last);
        for action in actions {
            self.perform(ctx, id, action);
        }
        self.refresh();
    }

    /// After every change: drops finished rotation slots, shows the
    /// upstream's state (the best of its primaries) and its links.
    pub(super) fn refresh(&mut self) {
        let mut gone = Vec::new();
        self.slots.retain(|s| {
            let done = s.role != Role::Primary && matches!(s.life.phase(), Phase::Stopped { .. });
            if done {
                gone.push(s.lane);
            }
            !done
        });
        if let Some((_, d)) = self.dedupe.as_mut() {
            for lane in gone {
                d.forget_lane(lane);
            }
        }
        let state =
            self.slots.iter().filter(|s| s.role == Role::Primary).map(|s| s.life.shown()).max_by_key(|s| rank(*s));
        if let Some(state) = state {
            if self.shown != Some(state) {
                self.shown = Some(state);
                self.set_state(state);
            }
        }
        if self.cfg.urls.is_empty() {
            return;
        }
        let urls = self.cfg.redacted_urls();
        let mut views = Vec::with_capacity(urls.len());
        for (index, url) in urls.into_iter().enumerate() {
            let mine = || self.slots.iter().filter(move |s| s.url == index);
            let up = mine().any(Slot::live);
            self.links.up(index, up);
            let shown = mine().filter(|s| s.role == Role::Primary).max_by_key(|s| rank(s.life.shown()));
            let state = shown.map_or("standby", |s| s.life.shown().as_str());
            let conn = shown.map_or(0, |s| s.life.phase().conn().unwrap_or(self.link_conns[index]));
            if let Some(c) = shown.and_then(|s| s.life.phase().conn()) {
                self.link_conns[index] = c;
            }
            views.push(LinkView { index, url, state, conn });
        }
        self.deps.status.set_links(views);
    }

    /// Link `id` went live at `now`: a new stream only when no other link
    /// was live (a rotation or a redundant link continues the stream).
    pub(super) fn went_live(&mut self, ctx: &mut Context<Self>, id: u32, epoch: u64, now: Instant) {
        let alone = self.slots.iter().filter(|s| s.id != id).all(|s| !s.live());
        if alone {
            self.inbound.new_link(now);
        }
        if let Some(s) = self.slot_mut(id) {
            s.had_data = false;
        }
        self.schedule_rotation(ctx, id, epoch);
        if let Some(Role::Candidate { replaces }) = self.slot(id).map(|s| s.role) {
            if !self.slot(replaces).is_some_and(Slot::live) {
                // Nothing to overlap with: the new link takes over now.
                self.promote(ctx, id, replaces);
            }
        }
    }
}
