//! Replay (SPEC §14): the history ring of one upstream and the cursor a
//! subscriber replays it with.
//!
//! The ring holds the last `history` messages of the upstream (at most
//! `history_bytes` of message bytes as received), consecutive in `seq`: the
//! hub appends each message under the same table lock as its publish, so a
//! subscriber registered (or resuming) under the write lock sees the ring end
//! exactly where its live queue begins. The messages are the very `Arc`s the
//! queues hold: history costs one pointer per message beside them.
//!
//! A [`Cursor`] is what a subscriber asks for: seqs `next..=end` of one
//! upstream, filtered. It copies nothing up front; the session's queue takes
//! one bounded batch at a time from the ring when its socket can take more,
//! and whatever the ring dropped meanwhile becomes a `gap` event: reason
//! `history` for what it asked for, a plain (overflow, counted) gap for the
//! live messages that joined the replay (at most what the queue has room
//! for, see [`Cursor::extend`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::hub::Filter;
use super::message::{gap_event, history_gap_event, Delivery};
use super::queue::Item;

/// One upstream's ring.
#[derive(Debug, Default)]
pub struct History {
    ring: Mutex<Ring>,
    /// `max_items > 0`, readable without the lock: the publish path of an
    /// upstream without replay takes no lock here.
    on: AtomicBool,
}

#[derive(Debug, Default)]
struct Ring {
    /// Consecutive in seq, oldest first.
    items: VecDeque<Arc<Delivery>>,
    /// Message bytes in `items`.
    bytes: usize,
    /// Bounds: messages and bytes (0 messages = history off).
    max_items: usize,
    max_bytes: usize,
}

impl Ring {
    fn trim(&mut self) {
        while self.items.len() > self.max_items || (self.bytes > self.max_bytes && !self.items.is_empty()) {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.size();
            }
        }
    }

    /// Seq of the oldest message held, if any.
    fn first(&self) -> Option<u64> {
        self.items.front().map(|d| d.seq)
    }
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Plain data; a panic elsewhere cannot leave it inconsistent.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the bounds (start, reload); trims at once. 0 messages: off.
    pub fn configure(&self, max_items: usize, max_bytes: usize) {
        let mut r = self.lock();
        r.max_items = max_items;
        r.max_bytes = max_bytes;
        self.on.store(max_items > 0, Ordering::Release);
        r.trim();
        if r.items.is_empty() && r.items.capacity() > 0 {
            r.items = VecDeque::new();
        } else if r.items.capacity() > max_items.saturating_add(1) {
            // A smaller history gives its room back (it holds at most one over while appending).
            r.items.shrink_to(max_items.saturating_add(1));
        }
        if r.items.is_empty() {
            r.bytes = 0;
        }
    }

    /// True when the ring holds `seq` now.
    pub fn holds(&self, seq: u64) -> bool {
        let r = self.lock();
        r.first().is_some_and(|first| first <= seq) && r.items.back().is_some_and(|last| seq <= last.seq)
    }

    /// Ring capacity (tests).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.lock().items.capacity()
    }

    /// True when messages are kept.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Appends the newest message. A message that does not follow the last
    /// one (the numbering started over) empties the ring first, so it stays
    /// consecutive.
    pub fn append(&self, d: &Arc<Delivery>) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        let mut r = self.lock();
        if r.max_items == 0 {
            return;
        }
        if r.items.back().is_some_and(|last| last.seq + 1 != d.seq) {
            r.items.clear();
            r.bytes = 0;
        }
        r.bytes += d.size();
        r.items.push_back(Arc::clone(d));
        r.trim();
    }

    /// Messages held now (tests, status).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A subscriber's replay of one upstream: seqs `next..=end` that pass `filter`.
#[derive(Debug)]
pub struct Cursor {
    /// The upstream replayed.
    pub upstream: Arc<str>,
    history: Arc<History>,
    /// Next seq to send.
    next: u64,
    /// Last seq to send: the last one published when the replay was set up;
    /// everything after it reaches the subscriber live.
    pub end: u64,
    /// The subscriber's filter when it asked.
    filter: Filter,
    /// Gap events go into the stream (envelope subscribers).
    events: bool,
    /// Live messages still join the replay (see [`Cursor::extend`]).
    joining: bool,
    /// Seq and size of the live messages that joined and were not sent yet (at
    /// most the queue's capacity): they are what the queue would hold.
    joined: VecDeque<(u64, usize)>,
    /// Their bytes.
    joined_bytes: usize,
}

/// Entries [`Cursor::take`] examines at most per call, so a filter that
/// matches little never holds the locks for a walk over the whole ring.
pub const MAX_EXAMINED: usize = 4096;

/// What one [`Cursor::take`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Items added (messages and gap events).
    pub items: usize,
    /// Message bytes added.
    pub bytes: usize,
    /// Live messages that joined the replay and that the ring overwrote
    /// before they were sent: overflow drops.
    pub dropped: u64,
    /// Stopped at [`MAX_EXAMINED`] before the batch was full: take again.
    pub capped: bool,
}

impl Cursor {
    /// Replays `after + 1 ..= end` of `upstream` from `history`.
    pub fn new(upstream: Arc<str>, history: Arc<History>, after: u64, end: u64, filter: Filter, events: bool) -> Self {
        let next = after.saturating_add(1);
        Cursor { upstream, history, next, end, filter, events, joining: true, joined: VecDeque::new(), joined_bytes: 0 }
    }

    /// The live message `seq` joins the replay (it is in the history
    /// already: appended before any queue gets it). Seqs skipped on the
    /// way are the upstream's messages this subscriber's filter did not
    /// take; the cursor filters them out again. Joining stops for good
    /// (false, the message and all later ones queue behind the replay under
    /// the overflow policy) once the joined messages waiting unsent would
    /// not fit in `room` (the queue's free items and bytes), or the ring
    /// does not hold `seq` (history off, larger than `history_bytes`).
    pub fn extend(&mut self, seq: u64, size: usize, room: (usize, usize)) -> bool {
        if !self.joining {
            return false;
        }
        self.lose(self.next);
        let full =
            self.joined.len() >= room.0 || (!self.joined.is_empty() && self.joined_bytes.saturating_add(size) > room.1);
        if seq <= self.end || full || !self.history.holds(seq) {
            self.joining = false;
            return false;
        }
        self.end = seq;
        self.joined.push_back((seq, size));
        self.joined_bytes += size;
        true
    }

    /// Live messages no longer join this replay (a filter change, an event
    /// of its upstream queued behind it).
    pub fn stop_joining(&mut self) {
        self.joining = false;
    }

    /// Joined live messages not sent yet.
    pub fn unsent(&self) -> u64 {
        self.joined.iter().filter(|&&(s, _)| s >= self.next).count() as u64
    }

    /// Forgets the joined seqs below `upto`; returns how many were unsent.
    fn lose(&mut self, upto: u64) -> u64 {
        let mut lost = 0;
        while let Some(&(s, size)) = self.joined.front().filter(|&&(s, _)| s < upto) {
            self.joined.pop_front();
            self.joined_bytes -= size;
            lost += u64::from(s >= self.next);
        }
        lost
    }

    /// True when everything is sent.
    pub fn done(&self) -> bool {
        self.next > self.end
    }

    /// Moves the next messages onto `out`: at most `max_items` items and
    /// about `max_bytes` of message bytes, examining at most
    /// [`MAX_EXAMINED`] entries; a `gap` event first for what the ring no
    /// longer holds: reason `history` for the seqs it dropped before they
    /// joined, a plain (overflow) gap for joined live messages.
    pub fn take(&mut self, max_items: usize, max_bytes: usize, out: &mut Vec<Item>) -> Batch {
        let mut b = Batch::default();
        if self.done() {
            return b;
        }
        let history = Arc::clone(&self.history);
        let r = history.lock();
        // What the ring no longer holds (or never held) of next..=end.
        let first = r.first().unwrap_or(u64::MAX).min(self.end + 1);
        if self.next < first {
            let lost = self.lose(first);
            let missed = first - self.next - lost;
            self.next = first;
            self.gap(missed, lost, &mut b, out);
        }
        let Some(base) = r.first() else { return b };
        let mut examined = 0;
        while !self.done() && b.items < max_items.max(1) && (b.items == 0 || b.bytes < max_bytes) {
            if examined >= MAX_EXAMINED {
                b.capped = true;
                break;
            }
            examined += 1;
            let Some(d) = usize::try_from(self.next - base).ok().and_then(|i| r.items.get(i)) else {
                // Not published into the ring (it started over meanwhile).
                let lost = self.lose(u64::MAX);
                let missed = (self.end + 1 - self.next).saturating_sub(lost);
                self.next = self.end + 1;
                self.gap(missed, lost, &mut b, out);
                break;
            };
            self.next += 1;
            if self.filter.matches(&d.msg.upstream, &d.msg.topic) {
                b.bytes += d.size();
                b.items += 1;
                out.push(Item::Message(Arc::clone(d)));
            }
        }
        b
    }

    fn gap(&self, missed: u64, lost: u64, b: &mut Batch, out: &mut Vec<Item>) {
        b.dropped += lost;
        if !self.events {
            return;
        }
        if missed > 0 {
            out.push(Item::Event(Box::new(history_gap_event(&self.upstream, missed))));
            b.items += 1;
        }
        if lost > 0 {
            out.push(Item::Event(Box::new(gap_event(&self.upstream, lost))));
            b.items += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, topic: &str, size: usize) -> Arc<Delivery> {
        Delivery::json_for_test("a", topic, vec![b'1'; size], seq)
    }

    fn seqs(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Message(d) => d.seq.to_string(),
                Item::Event(e) => e.to_string(),
            })
            .collect()
    }

    fn all() -> Filter {
        Filter::from_lists(&[], &[], 1).unwrap()
    }

    /// The ring keeps the newest messages within both bounds, consecutive.
    #[test]
    fn ring_bounds() {
        let h = History::default();
        h.append(&msg(1, "", 1));
        assert!(h.is_empty(), "off until configured");
        h.configure(3, 100);
        for s in 1..=5 {
            h.append(&msg(s, "", 10));
        }
        assert_eq!(h.len(), 3);
        h.append(&msg(6, "", 85));
        assert_eq!(h.len(), 2, "bytes bound: 10 + 85 fits, 10 + 10 + 85 does not");
        h.append(&msg(9, "", 1));
        assert_eq!(h.len(), 1, "a jump empties the ring");
        h.configure(0, 100);
        assert!(h.is_empty() && !h.enabled());
    }

    /// A smaller history on reload gives the ring's room back.
    #[test]
    fn ring_shrinks_with_history() {
        let h = History::default();
        h.configure(1000, usize::MAX);
        for s in 1..=1000 {
            h.append(&msg(s, "", 1));
        }
        assert!(h.capacity() >= 1000);
        h.configure(10, usize::MAX);
        assert_eq!(h.len(), 10);
        assert!(h.capacity() < 100, "{}", h.capacity());
    }

    /// A cursor replays after..=end in bounded batches, filtered, and
    /// announces what the ring lost before (and while) it waited.
    #[test]
    fn cursor_batches_and_gaps() {
        let h = Arc::new(History::default());
        h.configure(10, usize::MAX);
        for s in 1..=12 {
            h.append(&msg(s, if s % 2 == 0 { "even" } else { "odd" }, 10));
        }
        // Held: 3..=12. Ask for 2..=11 (after 1): 2 is gone.
        let mut c = Cursor::new("a".into(), Arc::clone(&h), 1, 11, all(), true);
        let mut out = Vec::new();
        let b = c.take(4, usize::MAX, &mut out);
        assert_eq!((b.items, b.bytes), (4, 30));
        assert_eq!(seqs(&out), [r#"{"event":"gap","upstream":"a","missed":1,"reason":"history"}"#, "3", "4", "5"]);
        out.clear();
        c.take(100, 25, &mut out);
        assert_eq!(seqs(&out), ["6", "7", "8"], "about max_bytes per batch");
        // The ring moves on by 8 meanwhile (it holds 11..=20): 9 and 10 are gone too.
        for s in 13..=20 {
            h.append(&msg(s, "", 10));
        }
        out.clear();
        c.take(100, usize::MAX, &mut out);
        assert_eq!(seqs(&out), [r#"{"event":"gap","upstream":"a","missed":2,"reason":"history"}"#, "11"]);
        assert!(c.done());
        // A filter: only even topics; beyond the end nothing.
        let mut f = Filter::default();
        f.add(super::super::hub::Pair { upstream: None, topic: Some("even".into()) }, 4).unwrap();
        let mut c = Cursor::new("a".into(), Arc::clone(&h), 10, 14, f, false);
        out.clear();
        c.take(100, usize::MAX, &mut out);
        assert_eq!(seqs(&out), ["12"], "11 is odd, 13 and 14 have the topic \"\"");
        let mut c = Cursor::new("a".into(), h, 30, 20, all(), true);
        assert!(c.done());
        out.clear();
        assert_eq!(c.take(100, usize::MAX, &mut out), Batch::default());
    }
}
