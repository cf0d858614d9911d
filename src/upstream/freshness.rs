//! Stale topics (SPEC §13 `[upstreams.freshness]`): a quiet channel told
//! apart from a dead link. Plain data driven by the caller's clock,
//! table-tested.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::FreshnessConfig;

/// A change of a topic's freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No message within `max_age` (the age when it was noticed).
    Stale(String, Duration),
    /// Messages came back.
    Fresh(String),
}

/// The freshness of one upstream's topics.
#[derive(Debug)]
pub struct Freshness {
    /// No message within this is stale.
    max_age: Duration,
    /// The configured topics (with metrics); `None`: every topic seen.
    configured: Option<HashSet<String>>,
    /// With `configured = None`: topics watched at most.
    max_topics: usize,
    /// When each watched topic last had a message.
    last: HashMap<String, Instant>,
    /// Topics now stale.
    stale: HashSet<String>,
    /// When the current link went live: the age clock starts there.
    since: Option<Instant>,
}

impl Freshness {
    /// `None` when `max_age` is 0 (off).
    pub fn new(cfg: &FreshnessConfig) -> Option<Self> {
        if cfg.max_age.is_zero() {
            return None;
        }
        let configured = (!cfg.topics.is_empty()).then(|| cfg.topics.iter().cloned().collect());
        Some(Freshness {
            max_age: cfg.max_age.get(),
            configured,
            max_topics: cfg.max_topics,
            last: HashMap::new(),
            stale: HashSet::new(),
            since: None,
        })
    }

    /// A new link went live at `now`: every watched topic's age restarts.
    pub fn new_link(&mut self, now: Instant) {
        self.since = Some(now);
        if let Some(topics) = &self.configured {
            for t in topics {
                self.last.entry(t.clone()).or_insert(now);
            }
        }
        for at in self.last.values_mut() {
            *at = (*at).max(now);
        }
    }

    /// A message of `topic` came at `now`; a stale topic turns fresh.
    pub fn on_message(&mut self, topic: &str, now: Instant) -> Option<Change> {
        match self.last.get_mut(topic) {
            Some(at) => *at = now,
            None => {
                let watched = match &self.configured {
                    Some(topics) => topics.contains(topic),
                    None => self.last.len() < self.max_topics,
                };
                if !watched {
                    return None;
                }
                self.last.insert(topic.to_string(), now);
            }
        }
        self.stale.remove(topic).then(|| Change::Fresh(topic.to_string()))
    }

    /// The topics that turned stale by `now` (each announced once).
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        if self.since.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (topic, at) in &self.last {
            let age = now.saturating_duration_since(*at);
            if age >= self.max_age && self.stale.insert(topic.clone()) {
                out.push(Change::Stale(topic.clone(), age));
            }
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    /// Age and staleness of each configured topic at `now`, for the metrics.
    pub fn configured_ages(&self, now: Instant) -> Vec<(&str, Duration, bool)> {
        let Some(topics) = &self.configured else { return Vec::new() };
        topics
            .iter()
            .map(|t| {
                let age = self.last.get(t).map_or(Duration::ZERO, |at| now.saturating_duration_since(*at));
                (t.as_str(), age, self.stale.contains(t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, OnProblem};

    fn fresh(topics: &[&str], max_topics: usize) -> Freshness {
        Freshness::new(&FreshnessConfig {
            max_age: Dur::ms(100),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            on_stale: OnProblem::Event,
            max_topics,
        })
        .unwrap()
    }

    /// Configured topics are stale max_age after the link went live when
    /// silent, once; a message makes them fresh; the clock restarts per link.
    #[test]
    fn configured_topics() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut f = fresh(&["trade", "book"], 10);
        assert_eq!(f.tick(ms(500)), [], "no link yet");
        f.new_link(ms(0));
        assert_eq!(f.on_message("trade", ms(50)), None);
        assert_eq!(f.on_message("other", ms(50)), None, "not watched");
        assert_eq!(f.tick(ms(99)), []);
        assert_eq!(f.tick(ms(100)), [Change::Stale("book".into(), Duration::from_millis(100))]);
        assert_eq!(f.tick(ms(150)), [Change::Stale("trade".into(), Duration::from_millis(100))]);
        assert_eq!(f.tick(ms(300)), [], "announced once");
        assert_eq!(f.on_message("book", ms(310)), Some(Change::Fresh("book".into())));
        let ages = f.configured_ages(ms(320));
        assert!(ages.contains(&("book", Duration::from_millis(10), false)), "{ages:?}");
        assert!(ages.contains(&("trade", Duration::from_millis(270), true)), "{ages:?}");
        f.new_link(ms(1000));
        assert_eq!(f.tick(ms(1050)), [], "the clock restarted with the link");
    }

    /// With topics = [], the first max_topics topics seen are watched.
    #[test]
    fn every_topic_seen_is_bounded() {
        let t0 = Instant::now();
        let mut f = fresh(&[], 2);
        f.new_link(t0);
        f.on_message("a", t0);
        f.on_message("b", t0);
        f.on_message("c", t0);
        let stale = f.tick(t0 + Duration::from_millis(200));
        assert_eq!(stale.len(), 2, "{stale:?}");
        assert!(f.configured_ages(t0).is_empty(), "no metrics without configured topics");
        assert!(Freshness::new(&FreshnessConfig::default()).is_none(), "off by default");
    }
}
