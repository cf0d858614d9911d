//! The cluster's path into the hub (SPEC §15): a message another replica
//! received, read back from the stream, is published here with the seq its
//! owner gave it. A child of `hub`, so the table stays private.

use std::sync::atomic::Ordering;

use super::{Delivery, Incoming, Publisher, Pushed};

impl Publisher {
    /// Queues `msg` with the owner's `seq` for every matching subscriber
    /// except the local-only ones, and advances the counter to `seq`.
    /// A `seq` at or below the counter was delivered already (or is this
    /// replica's own message coming back): skipped, returns false.
    pub fn relay(&self, msg: Incoming, seq: u64) -> bool {
        if self.slot.seq.fetch_max(seq, Ordering::Relaxed) >= seq {
            return false;
        }
        let delivery = Delivery::new(msg, seq);
        let mut slow = Vec::new();
        {
            let t = self.hub.read();
            let (up, topic) = (&*delivery.msg.upstream, &*delivery.msg.topic);
            for s in t.subscribers.iter().filter(|s| !s.filter.local_only && s.filter.matches(up, topic)) {
                if s.queue.push(&delivery) == Pushed::Disconnected {
                    slow.push(s.id);
                }
            }
        }
        for id in slow {
            self.hub.remove(id);
        }
        true
    }

    /// The last seq handed out or relayed.
    pub fn seq(&self) -> u64 {
        self.slot.seq.load(Ordering::Relaxed)
    }

    /// Moves the counter up to `seq` (a new owner continues the cluster's
    /// numbering); never down.
    pub fn advance_to(&self, seq: u64) {
        self.slot.seq.fetch_max(seq, Ordering::Relaxed);
    }
}
