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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytestring::ByteString;

#[path = "relay.rs"]
mod relay;

use super::message::{state_event, Delivery, Incoming};
use super::queue::{Closed, Pushed, SubQueue};
use crate::model::LinkState;

/// One (upstream, topic) pair of a subscriber's filter; `None` = any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// The upstream, or any.
    pub upstream: Option<Arc<str>>,
    /// The topic, or any.
    pub topic: Option<Arc<str>>,
}

/// A subscriber's filter: a message passes when any pair matches it.
///
/// The pairs are kept by shape, so that matching a message costs a few hash
/// lookups whatever the number of pairs (SPEC §11): a hostile subscriber
/// with many pairs slows nobody's publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The pair (any, any) is present: everything passes.
    everything: bool,
    /// Pairs (upstream, any).
    upstreams: HashSet<Arc<str>>,
    /// Pairs (any, topic).
    topics: HashSet<Arc<str>>,
    /// Pairs (upstream, topic), by upstream.
    pairs: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Distinct pairs in all four shapes, against `max_filters`.
    len: usize,
    /// Only messages of this replica's own links pass, none relayed from
    /// the cluster stream (the broker sinks in cluster mode, SPEC §15).
    local_only: bool,
}

/// A filter would hold more pairs than `subscribers.max_filters` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{pairs} filter pairs (upstream x topic) is over subscribers.max_filters ({max})")]
pub struct TooManyFilters {
    /// Distinct pairs the filter would hold.
    pub pairs: usize,
    /// The limit.
    pub max: usize,
}

impl Filter {
    /// The initial filter of a query: every listed upstream with every listed
    /// topic; an empty list means any. Duplicates count once; more than
    /// `max` distinct pairs is refused before any pair is built.
    pub fn from_lists(upstreams: &[String], topics: &[String], max: usize) -> Result<Self, TooManyFilters> {
        fn distinct(list: &[String]) -> Vec<Option<Arc<str>>> {
            if list.is_empty() {
                return vec![None];
            }
            let mut seen = HashSet::with_capacity(list.len());
            list.iter().filter(|s| seen.insert(s.as_str())).map(|s| Some(Arc::from(s.as_str()))).collect()
        }
        let ups = distinct(upstreams);
        let tops = distinct(topics);
        let pairs = ups.len().saturating_mul(tops.len());
        if pairs > max {
            return Err(TooManyFilters { pairs, max });
        }
        let mut f = Filter::default();
        for u in &ups {
            for t in &tops {
                f.insert(Pair { upstream: u.clone(), topic: t.clone() });
            }
        }
        Ok(f)
    }

    /// The same filter, passing only messages of this replica's own links.
    pub fn local_only(mut self) -> Self {
        self.local_only = true;
        self
    }

    /// Distinct pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no pair is held: nothing passes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the pair is held.
    pub fn contains(&self, pair: &Pair) -> bool {
        match (&pair.upstream, &pair.topic) {
            (None, None) => self.everything,
            (Some(u), None) => self.upstreams.contains(u),
            (None, Some(t)) => self.topics.contains(t),
            (Some(u), Some(t)) => self.pairs.get(u).is_some_and(|ts| ts.contains(t)),
        }
    }

    /// Adds a pair (idempotent); refused when a new pair would pass `max`.
    pub fn add(&mut self, pair: Pair, max: usize) -> Result<(), TooManyFilters> {
        if self.contains(&pair) {
            return Ok(());
        }
        if self.len >= max {
            return Err(TooManyFilters { pairs: self.len + 1, max });
        }
        self.insert(pair);
        Ok(())
    }

    /// Adds a pair known to fit.
    fn insert(&mut self, pair: Pair) {
        let new = match (pair.upstream, pair.topic) {
            (None, None) => !std::mem::replace(&mut self.everything, true),
            (Some(u), None) => self.upstreams.insert(u),
            (None, Some(t)) => self.topics.insert(t),
            (Some(u), Some(t)) => self.pairs.entry(u).or_default().insert(t),
        };
        self.len += usize::from(new);
    }

    /// Removes a pair (idempotent).
    pub fn remove(&mut self, pair: &Pair) {
        let gone = match (&pair.upstream, &pair.topic) {
            (None, None) => std::mem::replace(&mut self.everything, false),
            (Some(u), None) => self.upstreams.remove(u),
            (None, Some(t)) => self.topics.remove(t),
            (Some(u), Some(t)) => {
                let gone = self.pairs.get_mut(u).is_some_and(|ts| ts.remove(t));
                if self.pairs.get(u).is_some_and(HashSet::is_empty) {
                    self.pairs.remove(u);
                }
                gone
            }
        };
        self.len -= usize::from(gone);
    }

    /// True when a message of `upstream` with `topic` passes: at most four
    /// hash lookups, whatever the number of pairs.
    pub fn matches(&self, upstream: &str, topic: &str) -> bool {
        self.everything
            || self.upstreams.contains(upstream)
            || self.topics.contains(topic)
            || self.pairs.get(upstream).is_some_and(|ts| ts.contains(topic))
    }

    /// True when some pair covers `upstream`: it gets that upstream's state events.
    pub fn follows(&self, upstream: &str) -> bool {
        self.everything
            || !self.topics.is_empty()
            || self.upstreams.contains(upstream)
            || self.pairs.contains_key(upstream)
    }

    /// The upstreams named explicitly.
    fn named_upstreams(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().chain(self.pairs.keys()).map(|u| &**u)
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

impl Table {
    /// Queues `event` for every subscriber that follows `upstream`; one
    /// that has left too many events unread was closed as slow and goes.
    fn tell(&mut self, upstream: &str, event: &ByteString) {
        self.subscribers.retain(|s| !s.filter.follows(upstream) || s.queue.push_event(event.clone()));
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
        t.tell(name, &state_event(name, LinkState::Stopped));
        t.upstreams.retain(|(s, _)| &*s.name != name);
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
            Some(s) => f(&mut s.filter),
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

    /// Tells the envelope subscribers that follow this upstream an event
    /// (`upstream_gap`, `stale`, `fresh`): queued like state events.
    pub fn announce(&self, event: ByteString) {
        self.hub.write().tell(&self.slot.name, &event);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(u: Option<&str>, t: Option<&str>) -> Pair {
        Pair { upstream: u.map(Arc::from), topic: t.map(Arc::from) }
    }

    /// Every shape of pair matches what it says, and only that.
    #[test]
    fn filter_shapes() {
        let mut f = Filter::default();
        assert!(!f.matches("a", "x") && !f.follows("a"));
        f.add(pair(Some("a"), Some("x")), 10).unwrap();
        f.add(pair(Some("b"), None), 10).unwrap();
        f.add(pair(None, Some("y")), 10).unwrap();
        for (u, t, want) in
            [("a", "x", true), ("a", "z", false), ("b", "anything", true), ("c", "y", true), ("c", "x", false)]
        {
            assert_eq!(f.matches(u, t), want, "{u} {t}");
        }
        assert!(f.follows("a") && f.follows("b") && f.follows("c"), "a (any, y) pair follows every upstream");
        f.remove(&pair(None, Some("y")));
        assert!(!f.follows("c"));
        f.add(pair(None, None), 10).unwrap();
        assert!(f.matches("c", "q"));
        assert_eq!(f.len(), 3);
    }

    /// Duplicates count once; the limit applies to distinct pairs, before
    /// the pairs are built.
    #[test]
    fn filter_limits() {
        let list = |n: usize, p: &str| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
        let f = Filter::from_lists(&["a".into(), "a".into()], &list(3, "t"), 3).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(Filter::from_lists(&list(2, "u"), &list(2, "t"), 3).unwrap_err().pairs, 4);
        let huge = Filter::from_lists(&list(100_000, "u"), &list(100_000, "t"), 64).unwrap_err();
        assert_eq!(huge.pairs, 10_000_000_000);
        let mut f = Filter::from_lists(&[], &[], 1).unwrap();
        assert!(f.add(pair(None, None), 1).is_ok(), "an existing pair is no new pair");
        assert!(f.add(pair(Some("a"), None), 1).is_err());
    }
}
