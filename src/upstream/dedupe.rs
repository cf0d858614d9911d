//! De-duplication across the links of one upstream (SPEC §14, §14a): plain
//! data, table-tested, no actix. While two or more links are live (the
//! overlap of a rotation, `redundancy = "all"`), a message is delivered
//! once, from whichever link brought it first.
//!
//! A message's identity is its `[upstreams.sequence]` key and number when
//! a sequence is configured and the message carries one, else a hash of
//! its payload. The last `dedupe_window` identities are remembered, each
//! with the set of links (lanes, 0..64) that brought it. A link that
//! brings an identity it already brought is repeating itself (a feed's own
//! repeated payload): that is a new occurrence, never a copy, so nothing
//! is removed within one link.
//!
//! Identities are recorded also while one link is live (that is when the
//! copies of the next link's first messages are delivered), but only
//! decided on while two or more are.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::config::SequenceConfig;

/// Links a de-duplicator tells apart (bits of a `u64`).
pub const LANES: u8 = 64;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it: the first copy (or only one link is live).
    First,
    /// Drop it: another link already brought it. `by` holds the lanes
    /// that brought it before (never the message's own lane).
    Copy {
        /// Lanes that brought it before, as bits.
        by: u64,
    },
}

/// How a message's identity is found.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sequence.pointer` and `sequence.key`, when configured.
    sequence: Option<(String, String)>,
}

impl Identity {
    /// By sequence when `sequence` is set, else by payload hash. A feed
    /// that numbers every connection from scratch (`reset_on_reconnect`)
    /// gives two links different numbers for one message: by payload.
    pub fn new(sequence: Option<&SequenceConfig>) -> Self {
        let sequence = sequence.filter(|s| !s.reset_on_reconnect);
        Identity { sequence: sequence.map(|s| (s.pointer.clone(), s.key.clone())) }
    }

    /// The identity of a message, as received.
    pub fn of(&self, raw: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        if let Some((pointer, key)) = &self.sequence {
            if let Some(n) = super::pointer::find_u64(raw, pointer) {
                1u8.hash(&mut h);
                n.hash(&mut h);
                if !key.is_empty() {
                    super::pointer::find(raw, key).map(|k| k.get()).unwrap_or_default().hash(&mut h);
                }
                return h.finish();
            }
        }
        0u8.hash(&mut h);
        raw.hash(&mut h);
        h.finish()
    }
}

/// The remembered identities of one upstream.
#[derive(Debug)]
pub struct Dedupe {
    /// Identities remembered at most.
    window: usize,
    /// Identity -> (lanes that brought it, generation of its entry).
    seen: HashMap<u64, (u64, u64)>,
    /// Identities in arrival order with their generation, oldest first.
    order: VecDeque<(u64, u64)>,
    /// Moves at every new entry, so an old `order` slot of a re-entered
    /// identity does not evict the new one.
    generation: u64,
}

impl Dedupe {
    /// Remembers the last `window` identities (at least 1).
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Dedupe {
            window,
            seen: HashMap::with_capacity(window.min(1 << 16)),
            order: VecDeque::with_capacity(window.min(1 << 16)),
            generation: 0,
        }
    }

    /// Message `id` came on link `lane`; `decide` is true while two or
    /// more links are live (else it is recorded and delivered).
    pub fn observe(&mut self, id: u64, lane: u8, decide: bool) -> Verdict {
        let bit = 1u64 << (lane % LANES);
        if let Some((lanes, _)) = self.seen.get_mut(&id) {
            if *lanes != 0 && *lanes & bit == 0 {
                let by = *lanes;
                *lanes |= bit;
                if decide {
                    return Verdict::Copy { by };
                }
                return Verdict::First;
            }
        }
        // New, or this link repeats itself: a new occurrence.
        self.generation += 1;
        self.seen.insert(id, (bit, self.generation));
        self.order.push_back((id, self.generation));
        while self.order.len() > self.window {
            if let Some((old, generation)) = self.order.pop_front() {
                if self.seen.get(&old).is_some_and(|(_, g)| *g == generation) {
                    self.seen.remove(&old);
                }
            }
        }
        Verdict::First
    }

    /// Whether another link than `lane` already brought `id` (nothing is
    /// recorded: a rotation's switch asks before it holds a message).
    pub fn known(&self, id: u64, lane: u8) -> bool {
        let bit = 1u64 << (lane % LANES);
        self.seen.get(&id).is_some_and(|(lanes, _)| *lanes != 0 && *lanes & bit == 0)
    }

    /// Link `lane` is gone: what it brought no longer says anything about
    /// the next link given that lane.
    pub fn forget_lane(&mut self, lane: u8) {
        let bit = 1u64 << (lane % LANES);
        for (lanes, _) in self.seen.values_mut() {
            *lanes &= !bit;
        }
    }

    /// Identities remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u8 = 0;
    const B: u8 = 1;
    const C: u8 = 2;

    /// (id, lane, decide) -> expected verdict is First (true) or Copy (false).
    fn run(window: usize, steps: &[(u64, u8, bool, bool)]) {
        let mut d = Dedupe::new(window);
        for (i, &(id, lane, decide, first)) in steps.iter().enumerate() {
            let v = d.observe(id, lane, decide);
            assert_eq!(v == Verdict::First, first, "step {i}: {:?} -> {v:?}", (id, lane, decide));
        }
    }

    /// The second copy from another link is dropped, whichever link is first.
    #[test]
    fn first_copy_wins() {
        run(16, &[(1, A, true, true), (1, B, true, false), (2, B, true, true), (2, A, true, false)]);
    }

    /// A link repeating its own payload is a new occurrence, never a copy.
    #[test]
    fn never_within_one_link() {
        run(16, &[(7, A, true, true), (7, A, true, true), (7, B, true, false), (7, B, true, true)]);
    }

    /// With one link live, everything is delivered but remembered.
    #[test]
    fn records_while_alone() {
        run(16, &[(1, A, false, true), (2, A, false, true), (1, B, true, false), (3, B, true, true)]);
    }

    /// Three links: the third copy is dropped too.
    #[test]
    fn three_links() {
        run(16, &[(1, A, true, true), (1, B, true, false), (1, C, true, false)]);
        let mut d = Dedupe::new(16);
        d.observe(5, A, true);
        assert_eq!(d.observe(5, C, true), Verdict::Copy { by: 1 << A });
    }

    /// Only the last `window` identities are remembered.
    #[test]
    fn window_is_bounded() {
        let mut d = Dedupe::new(3);
        for id in 0..10 {
            d.observe(id, A, true);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.observe(6, B, true), Verdict::First, "evicted");
        assert_eq!(d.observe(9, B, true), Verdict::Copy { by: 1 << A });
    }

    /// A re-entered identity is not evicted by its older slot.
    #[test]
    fn reentry_survives_old_slot() {
        let mut d = Dedupe::new(2);
        d.observe(1, A, true);
        d.observe(1, A, true); // repeat: a new entry
        d.observe(2, A, true); // evicts the first slot of 1 only
        assert_eq!(d.observe(1, B, true), Verdict::Copy { by: 1 << A });
    }

    /// A gone lane's records no longer mark the next link of that lane.
    #[test]
    fn forget_lane() {
        let mut d = Dedupe::new(8);
        d.observe(1, A, true);
        d.forget_lane(A);
        assert_eq!(d.observe(1, B, true), Verdict::First);
    }

    /// By sequence key and number when configured, else by payload.
    #[test]
    fn identities() {
        let plain = Identity::new(None);
        assert_eq!(plain.of(br#"{"seq":1,"t":1}"#), plain.of(br#"{"seq":1,"t":1}"#));
        assert_ne!(plain.of(br#"{"seq":1,"t":1}"#), plain.of(br#"{"seq":1,"t":2}"#));
        let cfg: SequenceConfig = toml::from_str("pointer = \"/seq\"\nkey = \"/s\"").unwrap();
        let seq = Identity::new(Some(&cfg));
        assert_eq!(seq.of(br#"{"seq":1,"s":"a","t":1}"#), seq.of(br#"{"s":"a","seq":1,"t":2}"#));
        assert_ne!(seq.of(br#"{"seq":1,"s":"a"}"#), seq.of(br#"{"seq":1,"s":"b"}"#));
        assert_ne!(seq.of(br#"{"x":1}"#), seq.of(br#"{"x":2}"#), "no number: by payload");
        let cfg: SequenceConfig = toml::from_str("pointer = \"/seq\"\nreset_on_reconnect = true").unwrap();
        let per_link = Identity::new(Some(&cfg));
        assert_ne!(per_link.of(br#"{"seq":1,"t":1}"#), per_link.of(br#"{"seq":1,"t":2}"#), "by payload");
    }
}
