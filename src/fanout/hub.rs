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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::message::{state_event, Delivery, Incoming};
use super::queue::{Closed, Pushed, SubQueue};
use crate::status::LinkState;

/// One (upstream, topic) pair of a subscriber's filter; `None` = any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The upstream, or any.
    pub upstream: Option<Arc<str>>,
    /// The topic, or any.
    pub topic: Option<Arc<str>>,
}

/// A subscriber's filter: a message passes when any pair matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pairs: Vec<Pair>,
}

impl Filter {
    /// The initial filter of a query: every listed upstream with every listed
    /// topic; an empty list means any.
    pub fn from_lists(upstreams: &[String], topics: &[String]) -> Self {
        let ups: Vec<Option<Arc<str>>> = if upstreams.is_empty() {
            vec![None]
        } else {
            upstreams.iter().map(|u| Some(Arc::from(u.as_str()))).collect()
        };
        let tops: Vec<Option<Arc<str>>> =
            if topics.is_empty() { vec![None] } else { topics.iter().map(|t| Some(Arc::from(t.as_str()))).collect() };
        let mut f = Filter::default();
        for u in &ups {
            for t in &tops {
                f.add(Pair { upstream: u.clone(), topic: t.clone() });
            }
        }
        f
    }

    /// Adds a pair (idempotent).
    pub fn add(&mut self, pair: Pair) {
        if !self.pairs.contains(&pair) {
            self.pairs.push(pair);
        }
    }

    /// Removes a pair (idempotent).
    pub fn remove(&mut self, pair: &Pair) {
        self.pairs.retain(|p| p != pair);
    }

    /// True when a message of `upstream` with `topic` passes.
    pub fn matches(&self, upstream: &str, topic: &str) -> bool {
        self.pairs.iter().any(|p| {
            p.upstream.as_deref().is_none_or(|u| u == upstream) && p.topic.as_deref().is_none_or(|t| t == topic)
        })
    }

    /// True when some pair covers `upstream`: it gets that upstream's state events.
    pub fn follows(&self, upstream: &str) -> bool {
        self.pairs.iter().any(|p| p.upstream.as_deref().is_none_or(|u| u == upstream))
    }

    /// The upstreams named explicitly.
    fn named_upstreams(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().filter_map(|p| p.upstream.as_deref())
    }
}

/// An upstream as the hub knows it.
#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    /// Last number handed out; survives reconnects and actor restarts.
    seq: AtomicU64,
}

#[derive(Debug)]
struct Sub {
    id: u64,
    queue: Arc<SubQueue>,
    filter: Filter,
}

#[derive(Debug, Default)]
struct Table {
    /// In config order.
    upstreams: Vec<(Arc<Slot>, LinkState)>,
    subscribers: Vec<Sub>,
    next_id: u64,
    /// Set at shutdown: new subscriptions are refused.
    closed: bool,
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

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        // The table is only mutated by short, non-panicking sections.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an upstream (or finds it again after a reload or restart,
    /// keeping its `seq`) and returns its publishing handle.
    pub fn publisher(&self, name: &str) -> Publisher {
        let mut t = self.write();
        if let Some((slot, _)) = t.upstreams.iter().find(|(s, _)| &*s.name == name) {
            return Publisher { hub: self.clone(), slot: Arc::clone(slot) };
        }
        let slot = Arc::new(Slot { name: Arc::from(name), seq: AtomicU64::new(0) });
        t.upstreams.push((Arc::clone(&slot), LinkState::Connecting));
        Publisher { hub: self.clone(), slot }
    }

    /// Forgets an upstream (reload removed it); its followers get `stopped`.
    pub fn remove_upstream(&self, name: &str) {
        let mut t = self.write();
        let event = state_event(name, LinkState::Stopped);
        for s in t.subscribers.iter().filter(|s| s.filter.follows(name)) {
            s.queue.push_event(event.clone());
        }
        t.upstreams.retain(|(s, _)| &*s.name != name);
    }

    /// Names of the upstreams, in config order.
    pub fn upstream_names(&self) -> Vec<Arc<str>> {
        self.read().upstreams.iter().map(|(s, _)| Arc::clone(&s.name)).collect()
    }

    /// True when `name` is a configured upstream.
    pub fn has_upstream(&self, name: &str) -> bool {
        self.read().upstreams.iter().any(|(s, _)| &*s.name == name)
    }

    /// Adds a subscriber. It receives, right away, one state event per
    /// upstream it follows (if it wants events).
    pub fn subscribe(&self, queue: Arc<SubQueue>, filter: Filter) -> Result<Subscription, HubError> {
        let mut t = self.write();
        if t.closed {
            return Err(HubError::ShuttingDown);
        }
        if let Some(unknown) = filter.named_upstreams().find(|u| !t.upstreams.iter().any(|(s, _)| &*s.name == *u)) {
            return Err(HubError::UnknownUpstream(unknown.to_string()));
        }
        for (slot, state) in &t.upstreams {
            if filter.follows(&slot.name) {
                queue.push_event(state_event(&slot.name, *state));
            }
        }
        t.next_id += 1;
        let id = t.next_id;
        t.subscribers.push(Sub { id, queue: Arc::clone(&queue), filter });
        queue.metrics().joined();
        Ok(Subscription { id, hub: self.clone(), queue })
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
        let event = state_event(&slot.name, state);
        for s in t.subscribers.iter().filter(|s| s.filter.follows(&slot.name)) {
            s.queue.push_event(event.clone());
        }
    }

    fn update_filter(&self, id: u64, f: impl FnOnce(&mut Filter)) {
        if let Some(s) = self.write().subscribers.iter_mut().find(|s| s.id == id) {
            f(&mut s.filter);
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
    /// Numbers `msg` and queues it for every matching subscriber. Returns the
    /// number it got. Subscribers closed for being slow are removed.
    pub fn publish(&self, msg: Incoming) -> u64 {
        let seq = self.slot.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let delivery = Delivery::new(msg, seq);
        let mut slow = Vec::new();
        {
            let t = self.hub.read();
            let (up, topic) = (&*delivery.msg.upstream, &*delivery.msg.topic);
            for s in t.subscribers.iter().filter(|s| s.filter.matches(up, topic)) {
                if s.queue.push(&delivery) == Pushed::Disconnected {
                    slow.push(s.id);
                }
            }
        }
        for id in slow {
            self.hub.remove(id);
        }
        seq
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
    queue: Arc<SubQueue>,
}

impl Subscription {
    /// The queue this subscriber drains.
    pub fn queue(&self) -> &Arc<SubQueue> {
        &self.queue
    }

    /// Adds a pair to the filter; unknown upstreams are refused.
    pub fn add(&self, pair: Pair) -> Result<(), HubError> {
        if let Some(u) = pair.upstream.as_deref() {
            if !self.hub.has_upstream(u) {
                return Err(HubError::UnknownUpstream(u.to_string()));
            }
        }
        self.hub.update_filter(self.id, |f| f.add(pair));
        Ok(())
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

/// Per-upstream counters of `seq`, for tests and status.
pub fn seq_snapshot(hub: &Hub) -> HashMap<String, u64> {
    hub.read().upstreams.iter().map(|(s, _)| (s.name.to_string(), s.seq.load(Ordering::Relaxed))).collect()
}
