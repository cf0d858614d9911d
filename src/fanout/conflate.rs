//! `overflow = "conflate"` (SPEC §14): the index by key that keeps a full
//! queue's push cheap.
//!
//! A queue that conflates remembers, per (upstream, key), the positions of
//! its queued messages. When it is full, a new message removes every queued
//! message of its key (each left as a tombstone, so positions stay valid,
//! counted as dropped) and is appended: `seq` still grows along the
//! subscriber's stream, and each key keeps only its latest value. Positions
//! are absolute (`base` is the position of the queue's first entry), so
//! taking from the front costs one index update; tombstones are compacted
//! away once they outnumber the messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::message::Delivery;

/// (upstream, key value).
type Key = (Arc<str>, Arc<str>);

/// The conflation index of one queue.
#[derive(Debug)]
pub(super) struct Conflation {
    /// `conflate_key`: a JSON pointer, `""` for the topic.
    pointer: Box<str>,
    /// Absolute positions of the queued messages of each key, oldest first.
    index: HashMap<Key, VecDeque<u64>>,
    /// Absolute position of the queue's first entry.
    base: u64,
}

impl Conflation {
    pub(super) fn new(pointer: &str) -> Self {
        Conflation { pointer: Box::from(pointer), index: HashMap::new(), base: 0 }
    }

    fn key(&self, d: &Delivery) -> Option<Key> {
        Some((Arc::clone(&d.msg.upstream), d.conflate_key(&self.pointer)?))
    }

    /// `d` was appended at queue index `at`.
    pub(super) fn appended(&mut self, d: &Delivery, at: usize) {
        if let Some(k) = self.key(d) {
            self.index.entry(k).or_default().push_back(self.base + at as u64);
        }
    }

    /// The first entry left the queue; `d` when it was a message.
    pub(super) fn popped_front(&mut self, d: Option<&Delivery>) {
        if let Some(d) = d {
            self.forget(d, self.base);
        }
        self.base += 1;
    }

    /// The message `d` at queue index `at` was removed (tombstoned).
    pub(super) fn removed_at(&mut self, d: &Delivery, at: usize) {
        self.forget(d, self.base + at as u64);
    }

    fn forget(&mut self, d: &Delivery, pos: u64) {
        let Some(k) = self.key(d) else { return };
        if let Some(list) = self.index.get_mut(&k) {
            list.retain(|p| *p != pos);
            if list.is_empty() {
                self.index.remove(&k);
            }
        }
    }

    /// Queue indexes of the queued messages with the key of `d`, forgotten
    /// here: the caller tombstones them.
    pub(super) fn take_same_key(&mut self, d: &Delivery) -> Vec<usize> {
        let Some(k) = self.key(d) else { return Vec::new() };
        let base = self.base;
        self.index.remove(&k).map_or_else(Vec::new, |list| list.into_iter().map(|p| (p - base) as usize).collect())
    }

    /// The queue was emptied (`len` entries went) or rebuilt: start over
    /// with the messages it holds now, given with their queue indexes.
    pub(super) fn rebuild<'a>(&mut self, dropped: usize, held: impl Iterator<Item = (usize, &'a Delivery)>) {
        self.base += dropped as u64;
        self.index.clear();
        for (at, d) in held {
            self.appended(d, at);
        }
    }
}

#[cfg(test)]
#[path = "overflow_tests.rs"]
mod tests;
