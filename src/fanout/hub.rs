//! The hub: which subscriber follows which (upstream, topic), the per-upstream
//! `seq`, the upstream states that subscribers are told about.
//!
//! Data path: an upstream actor calls [`Publisher::publish`] inline; it
//! numbers the message, wraps it once in an `Arc` and pushes it into the
//! bounded queue of every matching subscriber under a read lock. No mailbox
//! sits on this path, so there is no unbounded buffer between an upstream
//! and its subscribers, and a slow subscriber costs the publisher one failed
//! queue push. Control (subscribe, filter ops, state changes) takes the
//! write lock; it is rare.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytestring::ByteString;

#[path = "relay.rs"]
mod relay;

pub use super::filter::{Filter, Pair, TooManyFilters};
use super::gate::Gate;
use super::history::History;
use super::message::{state_event, Delivery, Incoming};
use super::queue::{Closed, Pushed, SubQueue};
use super::replay::Resume;
use crate::model::{LinkState, RunId};

/// An upstream as the hub knows it.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) name: Arc<str>,
    /// Last number handed out; survives reconnects, actor restarts and
    /// removal (`Table::retired`).
    /// Handed out under the table's read lock, so under the write lock it
    /// is the last seq every subscriber queue has seen.
    pub(super) seq: AtomicU64,
    /// The replay ring (SPEC §14), appended under the same lock as the publish.
    pub(super) history: Arc<History>,
    /// Closed while a full blocking sink queue holds this upstream back.
    gate: Gate,
}

#[derive(Debug)]
pub(super) struct Sub {
    pub(super) id: u64,
    pub(super) queue: Arc<SubQueue>,
    pub(super) filter: Filter,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    /// In config order.
    pub(super) upstreams: Vec<(Arc<Slot>, LinkState)>,
    pub(super) subscribers: Vec<Sub>,
    next_id: u64,
    /// Set at shutdown: new subscriptions are refused.
    closed: bool,
    /// Replay: this process's run id, and the ring bounds (messages, bytes).
    pub(super) run: Option<RunId>,
    pub(super) history: (usize, usize),
    /// The last seq of each removed upstream: one added again under the
    /// same name goes on from there (the run id stays, so its seqs must too).
    retired: Vec<(Arc<str>, u64)>,
}

impl Table {
    /// Queues `event` for every subscriber that follows `upstream`; one
    /// that has left too many events unread was closed as slow and goes.
    fn tell(&mut self, upstream: &str, event: &ByteString) {
        self.subscribers
            .retain(|s| !s.filter.follows(upstream) || s.queue.push_event_of(Some(upstream), event.clone()));
    }
}

/// Why the hub refused a subscription or an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The filter names an upstream that is not configured.
    #[error("unknown upstream {0:?}")]
    UnknownUpstream(String),
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The op would take the filter past `subscribers.max_filters`.
    #[error(transparent)]
    TooManyFilters(#[from] TooManyFilters),
}

/// The shared hub. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    table: Arc<RwLock<Table>>,
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Hub::default()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Table> {
        // The table is only mutated by short, non-panicking sections.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an upstream (or finds it again after a reload or restart,
    /// keeping its `seq`) and returns its publishing handle.
    pub fn publisher(&self, name: &str) -> Publisher {
        let mut t = self.write();
        if let Some((slot, _)) = t.upstreams.iter().find(|(s, _)| &*s.name == name) {
            return Publisher { hub: self.clone(), slot: Arc::clone(slot) };
        }
        let history = Arc::new(History::default());
        history.configure(t.history.0, t.history.1);
        let seq = match t.retired.iter().position(|(n, _)| &**n == name) {
            Some(i) => t.retired.swap_remove(i).1,
            None => 0,
        };
        let slot = Arc::new(Slot { name: Arc::from(name), seq: AtomicU64::new(seq), history, gate: Gate::default() });
        t.upstreams.push((Arc::clone(&slot), LinkState::Connecting));
        Publisher { hub: self.clone(), slot }
    }

    /// Forgets an upstream (reload removed it); its followers get
    /// `stopped`. Its history is freed and every replay of it ends; its
    /// last seq is kept, so a re-added upstream of that name goes on after it.
    pub fn remove_upstream(&self, name: &str) {
        let mut t = self.write();
        t.tell(name, &state_event(name, LinkState::Stopped));
        let Some(at) = t.upstreams.iter().position(|(s, _)| &*s.name == name) else { return };
        let (slot, _) = t.upstreams.remove(at);
        slot.history.configure(0, 0);
        for s in &t.subscribers {
            s.queue.forget_removed(name);
        }
        let last = slot.seq.load(Ordering::Relaxed);
        t.retired.push((Arc::clone(&slot.name), last));
    }

    /// True when `name` is a configured upstream.
    pub fn has_upstream(&self, name: &str) -> bool {
        self.read().upstreams.iter().any(|(s, _)| &*s.name == name)
    }

    /// Replay (SPEC §14): this process's run id, and how many messages
    /// (and bytes) each upstream keeps; 0 messages turns replay off. Set at
    /// start and on reload.
    pub fn configure_replay(&self, run: RunId, history: usize, history_bytes: usize) {
        let mut t = self.write();
        t.run = Some(run);
        t.history = (history, history_bytes);
        for (slot, _) in &t.upstreams {
            slot.history.configure(history, history_bytes);
        }
    }

    /// Adds a subscriber. It receives, right away, one state event per
    /// upstream it follows (if it wants events).
    pub fn subscribe(&self, queue: Arc<SubQueue>, filter: Filter) -> Result<Subscription, HubError> {
        self.subscribe_from(queue, filter, &[])
    }

    /// As [`Hub::subscribe`], replaying what came after `since` (SPEC §14)
    /// before the live messages. With replay on, an envelope subscriber
    /// first gets the `hello` event.
    pub fn subscribe_from(
        &self,
        queue: Arc<SubQueue>,
        filter: Filter,
        since: &[Resume],
    ) -> Result<Subscription, HubError> {
        let mut t = self.write();
        if t.closed {
            return Err(HubError::ShuttingDown);
        }
        if let Some(unknown) = filter.named_upstreams().find(|u| !t.upstreams.iter().any(|(s, _)| &*s.name == *u)) {
            return Err(HubError::UnknownUpstream(unknown.to_string()));
        }
        if let (Some(run), true) = (&t.run, t.history.0 > 0) {
            queue.push_event(super::message::hello_event(run.as_str()));
        }
        for (slot, state) in &t.upstreams {
            if filter.follows(&slot.name) {
                queue.push_event(state_event(&slot.name, *state));
            }
        }
        for r in since {
            t.start_replay(&queue, &filter, r, false);
        }
        t.next_id += 1;
        let id = t.next_id;
        queue.metrics().joined();
        t.subscribers.push(Sub { id, queue, filter });
        Ok(Subscription { id, hub: self.clone() })
    }

    /// True when the table can be read right now (liveness probe): false
    /// only while a writer holds it.
    pub fn answers(&self) -> bool {
        match self.table.try_read() {
            Ok(_) | Err(std::sync::TryLockError::Poisoned(_)) => true,
            Err(std::sync::TryLockError::WouldBlock) => false,
        }
    }

    /// Number of subscribers (all kinds).
    pub fn subscriber_count(&self) -> usize {
        self.read().subscribers.len()
    }

    /// Refuses new subscribers and closes every queue with `why`.
    pub fn close_all(&self, why: Closed) {
        let mut t = self.write();
        t.closed = true;
        for s in &t.subscribers {
            s.queue.close(why);
        }
    }

    fn remove(&self, id: u64) {
        self.write().subscribers.retain(|s| s.id != id);
    }

    fn set_state(&self, slot: &Slot, state: LinkState) {
        let mut t = self.write();
        let Some(entry) = t.upstreams.iter_mut().find(|(s, _)| std::ptr::eq(&**s, slot)) else { return };
        if entry.1 == state {
            return;
        }
        entry.1 = state;
        t.tell(&slot.name, &state_event(&slot.name, state));
    }

    fn update_filter<R: Default>(&self, id: u64, f: impl FnOnce(&mut Filter) -> R) -> R {
        match self.write().subscribers.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                // Replays filter with the filter they started with: from
                // now on live messages queue behind them, by the new one.
                s.queue.stop_joining();
                f(&mut s.filter)
            }
            None => R::default(),
        }
    }
}

/// An upstream's handle on the hub.
#[derive(Debug, Clone)]
pub struct Publisher {
    hub: Hub,
    slot: Arc<Slot>,
}

impl Publisher {
    /// Numbers `msg`, keeps it in the replay history and queues it for
    /// every matching subscriber, all under one read lock (a subscriber
    /// registering or resuming holds the write lock, so it sees the history
    /// end where its live queue begins). Returns the number it got.
    /// Subscribers closed for being slow are removed.
    pub fn publish(&self, msg: Incoming) -> u64 {
        let mut slow = Vec::new();
        let seq;
        {
            let t = self.hub.read();
            seq = self.slot.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let delivery = Delivery::new(msg, seq);
            self.slot.history.append(&delivery);
            let (up, topic) = (&*delivery.msg.upstream, &*delivery.msg.topic);
            for s in t.subscribers.iter().filter(|s| s.filter.matches(up, topic)) {
                if s.queue.push_from(&delivery, Some(&self.slot.gate)) == Pushed::Disconnected {
                    slow.push(s.id);
                }
            }
        }
        for id in slow {
            self.hub.remove(id);
        }
        seq
    }

    /// This upstream's gate: closed while a full blocking sink holds it back
    /// (the upstream then stops reading its socket, SPEC §14).
    pub fn gate(&self) -> Gate {
        self.slot.gate.clone()
    }

    /// Tells the envelope subscribers that follow this upstream an event
    /// (`upstream_gap`, `stale`, `fresh`): queued like state events.
    pub fn announce(&self, event: ByteString) {
        self.hub.write().tell(&self.slot.name, &event);
    }

    /// True when this upstream's history holds nothing (tests).
    #[cfg(test)]
    pub(crate) fn history_is_empty(&self) -> bool {
        self.slot.history.is_empty()
    }

    /// Records a state change and tells the subscribers that follow this upstream.
    pub fn set_state(&self, state: LinkState) {
        self.hub.set_state(&self.slot, state);
    }
}

/// A subscriber's registration. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    hub: Hub,
}

impl Subscription {
    /// Adds a pair to the filter; unknown upstreams are refused, and so is
    /// a new pair past `max` (`subscribers.max_filters`).
    pub fn add(&self, pair: Pair, max: usize) -> Result<(), HubError> {
        if let Some(u) = pair.upstream.as_deref() {
            if !self.hub.has_upstream(u) {
                return Err(HubError::UnknownUpstream(u.to_string()));
            }
        }
        self.hub.update_filter(self.id, |f| f.add(pair, max).map_err(HubError::from).err()).map_or(Ok(()), Err)
    }

    /// The `resume` op (SPEC §14): replays what came after `r.after` of
    /// `r.upstream` before what is queued live; unknown upstreams are
    /// refused; one the filter does not follow is ignored. `Ok(true)` when
    /// the queued messages of that upstream gave way to the replay (the
    /// session then drops what it took of them and has not written).
    pub fn resume(&self, r: &Resume) -> Result<bool, HubError> {
        if !self.hub.has_upstream(&r.upstream) {
            return Err(HubError::UnknownUpstream(r.upstream.clone()));
        }
        let t = self.hub.write();
        let Some(s) = t.subscribers.iter().find(|s| s.id == self.id) else { return Ok(false) };
        Ok(t.start_replay(&s.queue, &s.filter, r, true))
    }

    /// Removes a pair (idempotent); unknown upstreams are refused.
    pub fn remove(&self, pair: &Pair) -> Result<(), HubError> {
        if let Some(u) = pair.upstream.as_deref() {
            if !self.hub.has_upstream(u) {
                return Err(HubError::UnknownUpstream(u.to_string()));
            }
        }
        self.hub.update_filter(self.id, |f| f.remove(pair));
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}
