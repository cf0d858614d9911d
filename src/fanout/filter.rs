//! A subscriber's filter: which (upstream, topic) pairs it follows, kept by
//! shape so that matching a message costs O(1) whatever the number of pairs
//! (SPEC §11).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
    pub(super) local_only: bool,
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
    pub(super) fn named_upstreams(&self) -> impl Iterator<Item = &str> {
        self.upstreams.iter().chain(self.pairs.keys()).map(|u| &**u)
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
