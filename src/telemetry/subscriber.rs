//! The subscriber side of telemetry: bounded drop and disconnect reasons,
//! and the counters one subscriber kind moves.

use std::time::Instant;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

/// Why a subscriber or sink did not get a message (SPEC §11): the bounded
/// `reason` label of `wsgate_subscriber_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (or the subscriber was closed for being slow).
    Overflow,
    /// Writing or sending failed.
    Error,
    /// The process shut down before the message was written.
    Shutdown,
    /// A reload replaced the sink before the message was written.
    Reload,
}

impl DropReason {
    /// The label value.
    pub const fn code(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::Error => "error",
            DropReason::Shutdown => "shutdown",
            DropReason::Reload => "reload",
        }
    }
}
/// Why a subscriber or sink went away: the bounded `reason` label of
/// `wsgate_subscriber_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The client closed or hung up.
    Client,
    /// Closed for being slow (overflow policy `disconnect`).
    Slow,
    /// The process shut down (or a reload replaced a sink).
    Shutdown,
    /// A protocol error, a timeout, or an output that is gone.
    Error,
}

impl Left {
    /// The label value.
    pub const fn code(self) -> &'static str {
        match self {
            Left::Client => "client",
            Left::Slow => "slow",
            Left::Shutdown => "shutdown",
            Left::Error => "error",
        }
    }

    /// How the messages a subscriber leaves queued are counted; a client
    /// that left by its own choice loses nothing it asked for.
    pub const fn leftovers(self) -> Option<DropReason> {
        match self {
            Left::Client => None,
            Left::Slow => Some(DropReason::Overflow),
            Left::Shutdown => Some(DropReason::Shutdown),
            Left::Error => Some(DropReason::Error),
        }
    }
}

/// The counters of one subscriber kind.
#[derive(Clone)]
pub struct SubscriberMetrics {
    pub(super) current: IntGauge,
    pub(super) messages: IntCounter,
    /// One counter per [`DropReason`], in [`DROP_REASONS`](super::DROP_REASONS) order.
    pub(super) dropped: [IntCounter; 4],
    pub(super) disconnects: IntCounterVec,
    pub(super) fanout_latency: Histogram,
}

impl SubscriberMetrics {
    /// A subscriber of this kind joined.
    pub fn joined(&self) {
        self.current.inc();
    }

    /// A subscriber of this kind left, for `reason`.
    pub fn left(&self, reason: Left) {
        self.current.dec();
        self.disconnects.with_label_values(&[reason.code()]).inc();
    }

    /// Messages were written: one per `received` instant (each message's
    /// monotonic receive time), each observed in the fan-out latency
    /// histogram, so its count is the number of deliveries (SPEC §11).
    pub fn delivered(&self, received: impl IntoIterator<Item = Instant>) {
        let now = Instant::now();
        let received = received.into_iter();
        let mut n = 0;
        if received.size_hint().1.is_some_and(|most| most <= 8) {
            // A few: observed directly (a local histogram allocates its
            // buckets, which cost more than it saves for a paced feed's
            // one-message batches).
            for at in received {
                self.fanout_latency.observe(now.saturating_duration_since(at).as_secs_f64());
                n += 1;
            }
        } else {
            let local = self.fanout_latency.local();
            for at in received {
                local.observe(now.saturating_duration_since(at).as_secs_f64());
                n += 1;
            }
            local.flush();
        }
        self.messages.inc_by(n);
    }

    /// `n` messages were not delivered, for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped[reason as usize].inc_by(n);
        }
    }

    /// `n` messages were dropped because the subscriber's queue was full.
    pub fn dropped_overflow(&self, n: u64) {
        self.dropped(DropReason::Overflow, n);
    }

    /// `n` messages were dropped because writing them failed.
    pub fn dropped_error(&self, n: u64) {
        self.dropped(DropReason::Error, n);
    }
}
