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
use super::slots::Role;
use crate::config::Rotate;

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

    /// Whether a data message `raw` of link `id` is delivered: the first
    /// copy is, later copies from other links are not (while 2+ links are
    /// live). Also switches a rotation at the new link's first data
    /// message and retires the old link once the two streams overlap.
    pub(super) fn admit(&mut self, ctx: &mut Context<Self>, id: u32, raw: &[u8]) -> bool {
        let Some((ident, _)) = self.dedupe.as_ref() else { return true };
        let key = ident.of(raw);
        let decide = self.live_links() >= 2;
        let Some(slot) = self.slot_mut(id) else { return true };
        // Replies delivered during a handshake do not switch a rotation.
        let live = slot.live();
        let (lane, url, role, first_data) = (slot.lane, slot.url, slot.role, live && !slot.had_data);
        slot.had_data |= live;
        let verdict = match self.dedupe.as_mut() {
            Some((_, d)) => d.observe(key, lane, decide),
            None => Verdict::First,
        };
        if let (Role::Candidate { replaces }, true) = (role, first_data) {
            self.promote(ctx, id, replaces);
        }
        match verdict {
            Verdict::First => {
                if decide {
                    self.links.first(url);
                }
                true
            }
            Verdict::Copy { by } => {
                self.links.copy(url);
                self.overlap(ctx, id, by);
                false
            }
        }
    }

    /// Link `id` brought a copy of what the lanes `by` brought: when that
    /// pairs a replaced link with its successor, the streams overlap.
    fn overlap(&mut self, ctx: &mut Context<Self>, id: u32, by: u64) {
        let lane_of = |x: u32| self.slot(x).map(|s| 1u64 << s.lane);
        let mut done = Vec::new();
        for s in &self.slots {
            let Role::Draining { successor } = s.role else { continue };
            let pair = |a: u32, b: u32| a == id && lane_of(b).is_some_and(|bit| by & bit != 0);
            if pair(s.id, successor) || pair(successor, s.id) {
                done.push(s.id);
            }
        }
        for old in done {
            debug!(upstream = %self.cfg.name, "Rotation: the streams overlap; closing the old link.");
            self.retire(ctx, old);
        }
    }
}
