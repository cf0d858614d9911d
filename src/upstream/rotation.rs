//! Rotation at `max_connection_age` and the de-duplicated inbound path
//! (SPEC §14, §14a). Decisions about one link stay in its lifecycle; this
//! file decides between links: when a rotation starts, when the new link
//! takes over, when the old one goes, and which copy of a message is
//! delivered (by [`Dedupe`](super::dedupe::Dedupe), consulted only while
//! two or more links are live).

use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;
use tracing::debug;

use super::actor::Upstream;
use super::dedupe::Verdict;
use super::error::LinkError;
use super::link::Event;
use super::slots::{Role, Slot};
use super::switch::{Held, Why, MAX_HELD_BYTES};
use crate::config::Rotate;
use crate::transport::reassembly::Message as WsMessage;

/// A held message: as received, its link's `conn`, when it came.
pub(super) type Pending = (WsMessage, u64, Instant);

/// What becomes of one data message (`admit`).
pub(super) enum Admit {
    /// Deliver it; `meets`: the held new link's stream meets it, switch after.
    Deliver {
        /// Switch after delivering it.
        meets: bool,
    },
    /// A copy: drop it (counted); `meets` as above.
    Drop {
        /// Switch now.
        meets: bool,
    },
    /// The new link of a switch in wait: hold it (its identity).
    Hold(u64),
}

/// A make-before-break switch waiting for the streams to meet.
pub(super) struct Switching {
    /// The new link's slot.
    pub new: u32,
    /// The old link's slot.
    pub old: u32,
    /// The new link's epoch, for the `rotate_overlap` timer.
    pub epoch: u64,
    /// The new link's data, held in order.
    pub held: Held<Pending>,
}

/// A random moment between 0.9 and 1.0 of `age` (SPEC §14a).
pub(super) fn rotation_delay(age: Duration) -> Duration {
    age.mul_f64(rand::thread_rng().gen_range(0.9..1.0))
}

impl Upstream {
    /// Link `id` of `epoch` went live: arm its rotation, if ages are on.
    pub(super) fn schedule_rotation(&mut self, ctx: &mut Context<Self>, id: u32, epoch: u64) {
        let age = self.cfg.max_connection_age.get();
        if age.is_zero() {
            return;
        }
        ctx.run_later(rotation_delay(age), move |act, ctx| act.rotation_due(ctx, id, epoch));
    }

    /// The age of link `id` of `epoch` is reached.
    fn rotation_due(&mut self, ctx: &mut Context<Self>, id: u32, epoch: u64) {
        let Some(slot) = self.current(epoch) else { return };
        if !slot.live() {
            return;
        }
        // A candidate not yet promoted is re-armed: it rotates once in charge.
        if slot.role != Role::Primary {
            return self.schedule_rotation(ctx, id, epoch);
        }
        let (url, conn) = (slot.url, slot.life.phase().conn().unwrap_or(0));
        match self.cfg.rotate {
            Rotate::BreakBeforeMake => {
                self.links.rotated("break_before_make", conn);
                self.apply_to(ctx, id, Event::Rotate { epoch });
            }
            Rotate::MakeBeforeBreak => {
                if self.slots.iter().any(|s| s.role == Role::Candidate { replaces: id }) {
                    return;
                }
                debug!(upstream = %self.cfg.name, conn, "Rotation: opening the new link beside the old one.");
                let new = self.add_slot(url, Role::Candidate { replaces: id });
                self.apply_to(ctx, new, Event::Started { now: Instant::now() });
            }
        }
    }

    /// Candidate `new` takes over from `old`: delivery switches to it; the
    /// old link is read until the streams overlap or `rotate_overlap` passes.
    pub(super) fn promote(&mut self, ctx: &mut Context<Self>, new: u32, old: u32) {
        let conn = self.slot(new).and_then(|s| s.life.phase().conn()).unwrap_or(0);
        if let Some(s) = self.slot_mut(new) {
            s.role = Role::Primary;
        }
        self.links.rotated("make_before_break", conn);
        let Some(o) = self.slot_mut(old) else { return self.refresh() };
        o.role = Role::Draining { successor: new };
        if o.live() {
            ctx.run_later(self.cfg.rotate_overlap.get(), move |act, ctx| act.retire(ctx, old));
            self.refresh();
        } else {
            self.retire(ctx, old);
        }
    }

    /// Closes replaced link `id` with 1000 (reason `rotate`), for good.
    pub(super) fn retire(&mut self, ctx: &mut Context<Self>, id: u32) {
        if matches!(self.slot(id).map(|s| s.role), Some(Role::Draining { .. })) {
            self.apply_to(ctx, id, Event::Stop { error: LinkError::Rotate });
        }
    }

    /// What becomes of a data message `raw` of link `id`: the first copy
    /// is delivered, later copies from other links are not (while 2+ links
    /// are live). A rotation's new link that may be ahead of the old one is
    /// held (`switch.rs`) until the streams meet. Also switches a rotation
    /// at the new link's first data message when that one is already known.
    pub(super) fn admit(&mut self, ctx: &mut Context<Self>, id: u32, raw: &[u8]) -> Admit {
        let Some((ident, _)) = self.dedupe.as_ref() else { return Admit::Deliver { meets: false } };
        let key = ident.of(raw);
        if self.switching.as_ref().is_some_and(|s| s.new == id) {
            return Admit::Hold(key);
        }
        let decide = self.live_links() >= 2;
        let Some(slot) = self.slot_mut(id) else { return Admit::Deliver { meets: false } };
        // Replies delivered during a handshake do not switch a rotation.
        let live = slot.live();
        let (lane, url, role, first_data) = (slot.lane, slot.url, slot.role, live && !slot.had_data);
        slot.had_data |= live;
        if let (Role::Candidate { replaces }, true) = (role, first_data) {
            if self.hold(ctx, id, replaces, key, lane) {
                return Admit::Hold(key);
            }
        }
        let verdict = match self.dedupe.as_mut() {
            Some((_, d)) => d.observe(key, lane, decide),
            None => Verdict::First,
        };
        if let Some(s) = self.slot_mut(id) {
            s.last_key = Some(key);
        }
        if let (Role::Candidate { replaces }, true) = (role, first_data) {
            self.promote(ctx, id, replaces);
        }
        let meets = self.switching.as_ref().is_some_and(|s| s.held.meets(key));
        match verdict {
            Verdict::First => {
                if decide {
                    self.links.first(url);
                }
                Admit::Deliver { meets }
            }
            Verdict::Copy { by } => {
                self.links.copy(url);
                self.overlap(ctx, id, by, key);
                Admit::Drop { meets }
            }
        }
    }

    /// Starts holding the data of candidate `new` (lane `lane`, first
    /// message `key`) when `old` is live and has not brought `key`: the new
    /// link may be ahead. Whether it holds.
    fn hold(&mut self, ctx: &mut Context<Self>, new: u32, old: u32, key: u64, lane: u8) -> bool {
        if !self.slot(old).is_some_and(Slot::live) {
            return false;
        }
        let window = self.cfg.dedupe_window;
        let Some(held) = self.dedupe.as_ref().and_then(|(_, d)| Held::begin(d, key, lane, window, MAX_HELD_BYTES))
        else {
            return false;
        };
        let epoch = self.slot(new).map_or(0, |s| s.life.epoch());
        debug!(upstream = %self.cfg.name, "Rotation: holding the new link's data until the streams meet.");
        self.switching = Some(Switching { new, old, epoch, held });
        ctx.run_later(self.cfg.rotate_overlap.get(), move |act, ctx| {
            if act.switching.as_ref().is_some_and(|s| s.new == new && s.epoch == epoch) {
                act.release(ctx, Why::Overlap);
            }
        });
        true
    }

    /// Holds message `msg` (identity `key`) of the new link; a full buffer
    /// switches now, and `msg` then follows as usual.
    pub(super) fn held(&mut self, ctx: &mut Context<Self>, id: u32, key: u64, msg: Pending) {
        let Some(s) = self.switching.as_mut() else { return };
        let bytes = msg.0.data.len();
        if let Err((msg, conn, at)) = s.held.push(key, bytes, msg) {
            self.release(ctx, Why::Full);
            self.deliver(ctx, id, conn, msg, at);
        }
    }

    /// The switch (`switch.rs`): the new link takes over, its held messages
    /// are delivered in order (minus what another link brought), and the
    /// old link is closed 1000 (unless it is gone already).
    pub(super) fn release(&mut self, ctx: &mut Context<Self>, why: Why) {
        let Some(Switching { new, old, held, .. }) = self.switching.take() else { return };
        let (n, bytes) = (held.count(), held.bytes());
        let Some(flush) = self.dedupe.as_mut().map(|(_, d)| held.flush(d)) else { return };
        let url = self.slot(new).map_or(0, |s| s.url);
        for _ in 0..flush.copies {
            self.links.copy(url);
        }
        if why == Why::Met {
            debug!(upstream = %self.cfg.name, held = n, "Rotation: the streams met; switching to the new link.");
        } else {
            // Not ordered against the old link: what it had not brought yet
            // is missing (a sequence reports it as a gap).
            debug!(upstream = %self.cfg.name, why = why.as_str(), held = n, bytes, copies = flush.copies,
                "Rotation: switching before the streams met.");
        }
        self.promote(ctx, new, old);
        for (msg, conn, at) in flush.deliver {
            self.links.first(url);
            self.publish(ctx, new, conn, msg, at);
        }
        if why != Why::OldGone {
            self.retire(ctx, old);
        }
    }

    /// Slot `id` is failing or stopping: a switch waiting on it ends (its
    /// held messages are dropped when it is the new link: the old link
    /// brings them).
    pub(super) fn switch_ends(&mut self, ctx: &mut Context<Self>, id: u32) {
        match self.switching.as_ref() {
            Some(s) if s.new == id => {
                debug!(upstream = %self.cfg.name, held = s.held.count(), "Rotation: the new link failed while held.");
                self.switching = None;
            }
            Some(s) if s.old == id => self.release(ctx, Why::OldGone),
            _ => {}
        }
    }

    /// Link `id` brought a copy (`key`) of what the lanes `by` brought:
    /// the streams overlap when the old link brings a copy of what its
    /// successor brought, or the successor a copy of the old link's latest
    /// message (a successor still behind is caught up first: closing the
    /// old link earlier would let the successor's next copies through).
    fn overlap(&mut self, ctx: &mut Context<Self>, id: u32, by: u64, key: u64) {
        let lane_of = |x: u32| self.slot(x).map(|s| 1u64 << s.lane);
        let brought_by = |a: u32, b: u32| a == id && lane_of(b).is_some_and(|bit| by & bit != 0);
        let mut done = Vec::new();
        for s in &self.slots {
            let Role::Draining { successor } = s.role else { continue };
            if brought_by(s.id, successor) || (brought_by(successor, s.id) && s.last_key == Some(key)) {
                done.push(s.id);
            }
        }
        for old in done {
            debug!(upstream = %self.cfg.name, "Rotation: the streams overlap; closing the old link.");
            self.retire(ctx, old);
        }
    }
}
