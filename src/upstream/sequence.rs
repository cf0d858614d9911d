//! Sequence gaps and duplicates (SPEC §13 `[upstreams.sequence]`): plain
//! data, table-tested. The feed numbers its messages (per key: symbol,
//! channel); a number past the expected one is a gap, one at or below the
//! last seen is a duplicate.

use std::collections::{HashMap, HashSet};

use crate::config::SequenceConfig;

/// What a message's number says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No number (or not an integer, or past `max_keys`): delivered, not tracked.
    Untracked,
    /// The expected number (or the first of its key).
    InOrder,
    /// Numbers were skipped: announce, then deliver this message.
    Gap {
        /// The key, when a key pointer is configured.
        key: Option<String>,
        /// The number that was due.
        expected: u64,
        /// The number that came.
        got: u64,
        /// The gap spans a new link.
        across_reconnect: bool,
    },
    /// At or below the last number seen: dropped for every subscriber.
    Duplicate,
}

/// The sequence state of one upstream, across its links.
#[derive(Debug)]
pub struct Sequencer {
    /// Pointer of the number.
    pointer: String,
    /// Pointer of the key; empty = one sequence.
    key: String,
    /// Keys tracked at most.
    max_keys: usize,
    /// Every new link starts each key afresh.
    reset_on_reconnect: bool,
    /// The last number per key.
    last: HashMap<String, u64>,
    /// Keys seen on the current link.
    on_link: HashSet<String>,
    /// The current link follows an `on_gap = "reconnect"` resync.
    resync: bool,
}

impl Sequencer {
    /// A sequencer for `cfg`.
    pub fn new(cfg: &SequenceConfig) -> Self {
        Sequencer {
            pointer: cfg.pointer.clone(),
            key: cfg.key.clone(),
            max_keys: cfg.max_keys,
            reset_on_reconnect: cfg.reset_on_reconnect,
            last: HashMap::new(),
            on_link: HashSet::new(),
            resync: false,
        }
    }

    /// A new link went live; `resync` when it replaces one dropped for a gap.
    pub fn new_link(&mut self, resync: bool) {
        self.on_link.clear();
        self.resync = resync;
    }

    /// Checks one message (its bytes as received).
    pub fn check(&mut self, raw: &[u8]) -> Check {
        // Two lookups without building the document (`pointer.rs`).
        let Some(got) = super::pointer::find_u64(raw, &self.pointer) else { return Check::Untracked };
        let key = if self.key.is_empty() {
            String::new()
        } else {
            super::pointer::find_key(raw, &self.key).unwrap_or_default()
        };
        let first_on_link = !self.on_link.contains(&key);
        let Some(&last) = self.last.get(&key) else {
            if self.last.len() >= self.max_keys {
                return Check::Untracked;
            }
            self.last.insert(key.clone(), got);
            self.on_link.insert(key);
            return Check::InOrder;
        };
        if first_on_link {
            self.on_link.insert(key.clone());
            if self.reset_on_reconnect || self.resync {
                self.last.insert(key, got);
                return Check::InOrder;
            }
        }
        if got <= last {
            return Check::Duplicate;
        }
        self.last.insert(key.clone(), got);
        if got == last + 1 {
            return Check::InOrder;
        }
        Check::Gap {
            key: (!self.key.is_empty()).then_some(key),
            expected: last + 1,
            got,
            across_reconnect: first_on_link,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnProblem;

    fn seq(key: &str, reset: bool) -> Sequencer {
        Sequencer::new(&SequenceConfig {
            pointer: "/s".into(),
            key: key.into(),
            on_gap: OnProblem::Event,
            max_keys: 2,
            reset_on_reconnect: reset,
        })
    }

    fn gap(key: Option<&str>, expected: u64, got: u64, across: bool) -> Check {
        Check::Gap { key: key.map(String::from), expected, got, across_reconnect: across }
    }

    /// In order, gaps, duplicates, untracked messages.
    #[test]
    fn one_sequence() {
        let mut s = seq("", false);
        for (msg, want) in [
            (r#"{"s":1}"#, Check::InOrder),
            (r#"{"s":2}"#, Check::InOrder),
            (r#"{"s":5}"#, gap(None, 3, 5, false)),
            (r#"{"s":6}"#, Check::InOrder),
            (r#"{"s":6}"#, Check::Duplicate),
            (r#"{"s":4}"#, Check::Duplicate),
            (r#"{"x":1}"#, Check::Untracked),
            (r#"{"s":"7"}"#, Check::Untracked),
            ("not json", Check::Untracked),
            (r#"{"s":7}"#, Check::InOrder),
        ] {
            assert_eq!(s.check(msg.as_bytes()), want, "{msg}");
        }
    }

    /// Per key, bounded by max_keys; across a reconnect the first message of
    /// each key is compared with the last before it.
    #[test]
    fn keys_and_reconnects() {
        let mut s = seq("/k", false);
        assert_eq!(s.check(br#"{"k":"a","s":10}"#), Check::InOrder);
        assert_eq!(s.check(br#"{"k":"b","s":1}"#), Check::InOrder);
        assert_eq!(s.check(br#"{"k":"c","s":1}"#), Check::Untracked, "max_keys");
        assert_eq!(s.check(br#"{"k":"a","s":12}"#), gap(Some("a"), 11, 12, false));
        s.new_link(false);
        assert_eq!(s.check(br#"{"k":"a","s":15}"#), gap(Some("a"), 13, 15, true));
        assert_eq!(s.check(br#"{"k":"b","s":2}"#), Check::InOrder);
        // After a resync the first message of each key sets the expectation.
        s.new_link(true);
        assert_eq!(s.check(br#"{"k":"a","s":100}"#), Check::InOrder);
        assert_eq!(s.check(br#"{"k":"a","s":102}"#), gap(Some("a"), 101, 102, false));
        // reset_on_reconnect: every link starts afresh.
        let mut s = seq("", true);
        s.check(br#"{"s":50}"#);
        s.new_link(false);
        assert_eq!(s.check(br#"{"s":1}"#), Check::InOrder);
        assert_eq!(s.check(br#"{"s":2}"#), Check::InOrder);
    }
}
