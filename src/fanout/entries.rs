//! The state inside a [`SubQueue`](super::queue::SubQueue): its entries
//! (messages, events, tombstones, replay markers) and the counts, index and
//! holds that go with them, kept right by every removal.

use std::collections::VecDeque;
use std::sync::Arc;

use bytestring::ByteString;

use super::conflate::Conflation;
use super::gate::Gate;
use super::history::Cursor;
use super::message::Delivery;
use super::queue::Closed;

/// One entry of the queue: an [`Item`], or what the queue keeps for itself.
#[derive(Debug)]
pub(super) enum Entry {
    /// A data message.
    Message(Arc<Delivery>),
    /// A control event, already encoded.
    Event(Box<ByteString>),
    /// A message conflated away (`overflow = "conflate"`): skipped.
    Gone,
    /// A replay starts here (SPEC §14): the consumer takes the cursor's
    /// messages from the history before the entries behind it.
    Replay(Box<Cursor>),
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) items: VecDeque<Entry>,
    /// Data messages in `items` (events excluded).
    pub(super) messages: usize,
    /// Bytes of the data messages in `items`, against `max_bytes`.
    pub(super) bytes: usize,
    /// Tombstones in `items`.
    pub(super) gone: usize,
    /// Messages dropped from the head (drop_oldest): older than everything
    /// queued, so their gap event goes before the first queued message.
    pub(super) missed: Vec<(Arc<str>, u64)>,
    /// Messages dropped on arrival (drop_newest): newer than everything
    /// queued, so their gap event goes before the next message pushed.
    pub(super) missed_tail: Vec<(Arc<str>, u64)>,
    pub(super) closed: Option<Closed>,
    /// The consumer has seen `closed` and the stream ended.
    pub(super) finished: bool,
    /// `overflow = "conflate"`: queued positions by key.
    pub(super) conflation: Option<Conflation>,
    /// `overflow = "block"`: the gates of the upstreams this full queue holds shut.
    pub(super) holding: Vec<Gate>,
    /// The replay being taken (its marker was reached).
    pub(super) replay: Option<Box<Cursor>>,
    /// Replay markers still in `items`.
    pub(super) replays: usize,
    /// Per upstream, the last seq a finished replay sent: live messages at
    /// or below it are skipped (SPEC §14a).
    pub(super) replayed: Vec<(Arc<str>, u64)>,
}

impl Inner {
    /// Removes the first entry, keeping the counts and the index right.
    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        let e = self.items.pop_front()?;
        match &e {
            Entry::Message(d) => {
                self.messages -= 1;
                self.bytes -= d.size();
            }
            Entry::Gone => self.gone -= 1,
            Entry::Replay(_) => self.replays -= 1,
            Entry::Event(_) => {}
        }
        if let Some(c) = self.conflation.as_mut() {
            c.popped_front(match &e {
                Entry::Message(d) => Some(d),
                _ => None,
            });
        }
        Some(e)
    }

    /// Replaces the message at `at` by a tombstone; returns it.
    pub(super) fn tombstone(&mut self, at: usize) -> Option<Arc<Delivery>> {
        let slot = self.items.get_mut(at)?;
        if !matches!(slot, Entry::Message(_)) {
            return None;
        }
        let Entry::Message(d) = std::mem::replace(slot, Entry::Gone) else { return None };
        self.messages -= 1;
        self.bytes -= d.size();
        self.gone += 1;
        Some(d)
    }

    /// Removes the oldest data message, leaving events where they are (a
    /// state event is never displaced). Returns it, or `None` when only
    /// events are queued.
    pub(super) fn pop_oldest_message(&mut self) -> Option<Arc<Delivery>> {
        let at = self.items.iter().position(|i| matches!(i, Entry::Message(_)))?;
        if at == 0 {
            return match self.pop_front() {
                Some(Entry::Message(d)) => Some(d),
                _ => None,
            };
        }
        if self.conflation.is_some() {
            let d = self.tombstone(at)?;
            if let Some(c) = self.conflation.as_mut() {
                c.removed_at(&d, at);
            }
            return Some(d);
        }
        let Some(Entry::Message(d)) = self.items.remove(at) else { return None };
        self.messages -= 1;
        self.bytes -= d.size();
        Some(d)
    }

    /// Drops the tombstones once they outnumber the messages.
    pub(super) fn compact(&mut self) {
        if self.gone <= self.messages.max(64) {
            return;
        }
        self.items.retain(|e| !matches!(e, Entry::Gone));
        self.gone = 0;
        if let Some(c) = self.conflation.as_mut() {
            let held = self.items.iter().enumerate().filter_map(|(i, e)| match e {
                Entry::Message(d) => Some((i, &**d)),
                _ => None,
            });
            c.rebuild(0, held);
        }
    }

    /// Empties the queue; returns how many data messages it held (the
    /// live messages that joined a replay and were not sent included).
    pub(super) fn clear(&mut self) -> u64 {
        let joined: u64 = self.replay.iter().map(|c| c.unsent()).sum::<u64>()
            + self.items.iter().map(|e| if let Entry::Replay(c) = e { c.unsent() } else { 0 }).sum::<u64>();
        let n = self.messages as u64 + joined;
        let len = self.items.len();
        self.items.clear();
        self.messages = 0;
        self.bytes = 0;
        self.gone = 0;
        self.replay = None;
        self.replays = 0;
        if let Some(c) = self.conflation.as_mut() {
            c.rebuild(len, std::iter::empty());
        }
        n
    }

    /// A live message of an upstream that is being replayed (or waits for
    /// its replay) joins the replay instead of the queue: the cursor reads
    /// it from the history in its turn, and replay turns into live without
    /// a seam once the cursor caught up. The joined messages waiting unsent
    /// and the queued ones stay within the queue's bounds together
    /// (`capacity`, `max_bytes`); past that, or once anything
    /// else stopped the joining, live messages queue behind the replay
    /// under the overflow policy. True when `d` was taken that way.
    pub(super) fn absorb(&mut self, d: &Delivery, capacity: usize, max_bytes: usize) -> bool {
        if self.replay.is_none() && self.replays == 0 {
            return false;
        }
        let room = (capacity.saturating_sub(self.messages), max_bytes.saturating_sub(self.bytes));
        let up = &d.msg.upstream;
        let replays = self.replays;
        let cursor = match self.replay.as_mut() {
            Some(c) if c.upstream == *up => Some(c),
            _ if replays == 0 => None,
            _ => self.items.iter_mut().rev().find_map(|e| match e {
                Entry::Replay(c) if c.upstream == *up => Some(c),
                _ => None,
            }),
        };
        cursor.is_some_and(|c| c.extend(d.seq, d.size(), room))
    }

    /// Live messages of `upstream` (`None`: of every upstream) no longer
    /// join its replays, active or waiting: what comes next queues behind.
    pub(super) fn stop_joining(&mut self, upstream: Option<&str>) {
        let of = |c: &Cursor| upstream.is_none_or(|u| *c.upstream == *u);
        if let Some(c) = self.replay.as_mut().filter(|c| of(c)) {
            c.stop_joining();
        }
        if self.replays > 0 {
            for e in self.items.iter_mut() {
                if let Entry::Replay(c) = e {
                    if of(c) {
                        c.stop_joining();
                    }
                }
            }
        }
    }

    /// Drops every replay of `upstream`, active or waiting (a new one
    /// replaces them, or the upstream is gone); returns how many joined
    /// live messages they had not sent.
    pub(super) fn drop_replays(&mut self, upstream: &str) -> u64 {
        let mut unsent = 0;
        if self.replay.as_ref().is_some_and(|c| &*c.upstream == upstream) {
            unsent += self.replay.take().map_or(0, |c| c.unsent());
        }
        for e in self.items.iter_mut() {
            if matches!(e, Entry::Replay(c) if &*c.upstream == upstream) {
                if let Entry::Replay(c) = std::mem::replace(e, Entry::Gone) {
                    unsent += c.unsent();
                }
                self.replays -= 1;
                self.gone += 1;
            }
        }
        unsent
    }

    /// Data entries and events, tombstones excluded: against [`MAX_EVENTS`](super::queue::MAX_EVENTS).
    pub(super) fn events(&self) -> usize {
        self.items.len() - self.messages - self.gone
    }
}
