//! The switch of a make-before-break rotation (SPEC §14, §14a): plain
//! data, table-tested, no actix. Delivery moves from the old link to the
//! new one without a gap, a duplicate or a reordering.
//!
//! When the new link's first data message is already known (another link
//! brought it: the new link starts behind or level), first copy wins and
//! delivery switches at once. Otherwise the new link may be ahead of an
//! old link with a backlog: its messages are held here, in order, while
//! the old link keeps delivering. When the old link brings a message the
//! buffer holds, the streams have met: the buffer is flushed (each held
//! message delivered unless another link brought it already) and delivery
//! continues on the new link. If `rotate_overlap` passes, the old link
//! dies, or the buffer fills first, the switch happens anyway, with the
//! same de-duplicated flush.
//!
//! The buffer is bounded in messages (`dedupe_window`) and in bytes.

use std::collections::VecDeque;

use super::dedupe::{Dedupe, Verdict};

/// Bytes held at most while a switch waits (besides `dedupe_window` messages).
pub const MAX_HELD_BYTES: usize = 32 << 20;

/// Why the switch happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The old link brought a message the buffer holds.
    Met,
    /// `rotate_overlap` passed before the streams met.
    Overlap,
    /// The old link died before the streams met.
    OldGone,
    /// The buffer filled before the streams met.
    Full,
}

impl Why {
    /// For log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Met => "met",
            Why::Overlap => "rotate_overlap",
            Why::OldGone => "old_link_gone",
            Why::Full => "buffer_full",
        }
    }
}

/// The new link's messages held while the switch waits for the streams to meet.
#[derive(Debug)]
pub struct Held<T> {
    /// The new link's lane in the de-duplicator.
    lane: u8,
    /// Identity, size and message, in arrival order.
    buf: VecDeque<(u64, usize, T)>,
    /// Bytes held.
    bytes: usize,
    /// Messages held at most.
    max_len: usize,
    /// Bytes held at most.
    max_bytes: usize,
}

/// What a flush gives: the messages to deliver, in order, and the copies
/// removed (another link brought them already).
#[derive(Debug)]
pub struct Flush<T> {
    /// Delivered in this order.
    pub deliver: Vec<T>,
    /// Held messages removed as copies.
    pub copies: usize,
}

impl<T> Held<T> {
    /// The new link (`lane`) brought its first data message `id`: a hold
    /// starts unless another link brought `id` already (the new link is
    /// behind or level: first copy wins, no hold).
    pub fn begin(dedupe: &Dedupe, id: u64, lane: u8, max_len: usize, max_bytes: usize) -> Option<Held<T>> {
        if dedupe.known(id, lane) {
            return None;
        }
        Some(Held { lane, buf: VecDeque::new(), bytes: 0, max_len: max_len.max(1), max_bytes: max_bytes.max(1) })
    }

    /// Holds message `id` (`bytes` long) of the new link; gives it back when
    /// the buffer is full (the caller switches, then delivers it as usual).
    pub fn push(&mut self, id: u64, bytes: usize, msg: T) -> Result<(), T> {
        let over = self.buf.len() >= self.max_len || self.bytes.saturating_add(bytes) > self.max_bytes;
        if over && !self.buf.is_empty() {
            return Err(msg);
        }
        self.bytes = self.bytes.saturating_add(bytes);
        self.buf.push_back((id, bytes, msg));
        Ok(())
    }

    /// Another link brought `id`: whether the streams meet there.
    pub fn meets(&self, id: u64) -> bool {
        self.buf.iter().any(|(held, _, _)| *held == id)
    }

    /// Messages held now.
    pub fn count(&self) -> usize {
        self.buf.len()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The switch: every held message in order, recorded as the new link's,
    /// and delivered unless another link already brought it.
    pub fn flush(self, dedupe: &mut Dedupe) -> Flush<T> {
        let mut out = Flush { deliver: Vec::with_capacity(self.buf.len()), copies: 0 };
        for (id, _, msg) in self.buf {
            match dedupe.observe(id, self.lane, true) {
                Verdict::First => out.deliver.push(msg),
                Verdict::Copy { .. } => out.copies += 1,
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
