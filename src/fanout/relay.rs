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
    ///
    /// Like a publish, under the table's read lock: into the replay history
    /// first, then the queues (no gate: the stream reader cannot be paused,
    /// so a blocking sink drops the oldest of relayed messages).
    pub fn relay(&self, msg: Incoming, seq: u64) -> bool {
        let mut slow = Vec::new();
        {
            let t = self.hub.read();
            if self.slot.seq.fetch_max(seq, Ordering::Relaxed) >= seq {
                return false;
            }
            let delivery = Delivery::new(msg, seq);
            self.slot.history.append(&delivery);
            let (up, topic) = (&*delivery.msg.upstream, &*delivery.msg.topic);
            for s in t.subscribers.iter().filter(|s| !s.filter.local_only && s.filter.matches(up, topic)) {
                if s.queue.push_from(&delivery, None) == Pushed::Disconnected {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use super::super::{Filter, Hub, SubQueue};
    use super::*;
    use crate::config::Overflow;
    use crate::model::DataKind;
    use crate::telemetry::Metrics;

    fn msg(upstream: &str) -> Incoming {
        Incoming {
            upstream: upstream.into(),
            topic: "".into(),
            raw: bytes::Bytes::from_static(b"1"),
            raw_is_text: true,
            kind: DataKind::Json,
            received_at: SystemTime::now(),
            received: Instant::now(),
            conn: 1,
        }
    }

    /// Relayed messages keep the owner's seq, advance the counter, are
    /// skipped at or below it, and never reach local-only subscribers;
    /// local publishes continue after the relayed seq.
    #[test]
    fn relays_with_the_owners_seq() {
        let m = Metrics::new();
        let hub = Hub::new();
        let p = hub.publisher("a");
        let all = SubQueue::bounded(100, usize::MAX, Overflow::DropOldest, false, m.subscriber("websocket"));
        let local = SubQueue::bounded(100, usize::MAX, Overflow::DropOldest, false, m.subscriber("nats"));
        let _s1 = hub.subscribe(Arc::clone(&all), Filter::from_lists(&[], &[], 10).unwrap()).unwrap();
        let _s2 = hub.subscribe(Arc::clone(&local), Filter::from_lists(&[], &[], 10).unwrap().local_only()).unwrap();
        assert!(p.relay(msg("a"), 41));
        assert!(!p.relay(msg("a"), 41), "seen");
        assert!(!p.relay(msg("a"), 7), "older");
        assert_eq!((p.seq(), all.len(), local.len()), (41, 1, 0));
        assert_eq!(p.publish(msg("a")), 42, "a local publish continues");
        assert_eq!((all.len(), local.len()), (2, 1));
        assert!(!p.relay(msg("a"), 42), "an own message coming back");
        p.advance_to(100);
        p.advance_to(50);
        assert_eq!(p.publish(msg("a")), 101);
    }
}
