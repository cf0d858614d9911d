//! From a reassembled message to the hub: decode (topic by JSON pointer),
//! intern the topic, publish. The code that touches outside data runs under
//! `catch_unwind`, so a panic restarts this upstream only (reason `panic`).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::decode::{Decoded, Decoder};
use super::freshness::{Change, Freshness};
use super::sequence::{Check, Sequencer};
use crate::config::{OnProblem, UpstreamConfig};
use crate::fanout::{freshness_event, upstream_gap_event, DataKind, Incoming, Publisher};
use crate::telemetry::UpstreamMetrics;
use crate::transport::reassembly::{Kind, Message};

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Numbered and queued for the subscribers.
    Published,
    /// Published after a sequence gap with `on_gap = "reconnect"`: the
    /// caller replaces the link (a resync).
    Resync,
    /// Invalid or a sequence duplicate: dropped (counted).
    Dropped,
    /// Handling it panicked: the caller restarts the upstream.
    Panicked,
}

/// The decoding half of an upstream: its decoder and its topics.
#[derive(Debug)]
pub struct Inbound {
    /// The upstream's name, shared by every message.
    name: Arc<str>,
    /// Topic by JSON pointer, per `[upstreams.decode]`.
    decoder: Decoder,
    /// Topics seen, shared by every message that has them.
    topics: Topics,
    /// `[upstreams.sequence]`, when configured.
    sequence: Option<Sequencer>,
    /// A gap replaces the link.
    resync_on_gap: bool,
    /// The next link follows a resync.
    resync_next: bool,
    /// `[upstreams.freshness]`, when `max_age > 0`.
    freshness: Option<Freshness>,
    /// A stale topic replaces the link.
    reconnect_on_stale: bool,
}

impl Inbound {
    /// The decoder of `cfg`.
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Inbound {
            name: Arc::from(cfg.name.as_str()),
            decoder: Decoder::new(&cfg.decode),
            topics: Topics::default(),
            sequence: cfg.sequence.as_ref().map(Sequencer::new),
            resync_on_gap: cfg.sequence.as_ref().is_some_and(|s| s.on_gap == OnProblem::Reconnect),
            resync_next: false,
            freshness: Freshness::new(&cfg.freshness),
            reconnect_on_stale: cfg.freshness.on_stale == OnProblem::Reconnect,
        }
    }

    /// A link went live at `now` after a time without one: sequence and
    /// freshness start a new link. (A link that goes live beside another,
    /// a rotation or a redundant one, continues the same stream.)
    pub fn new_link(&mut self, now: Instant) {
        if let Some(s) = self.sequence.as_mut() {
            s.new_link(std::mem::take(&mut self.resync_next));
        }
        if let Some(f) = self.freshness.as_mut() {
            f.new_link(now);
        }
    }

    /// The link is paused by a blocking sink: no topic ages meanwhile.
    pub fn suspend(&mut self, now: Instant) {
        if let Some(f) = self.freshness.as_mut() {
            f.new_link(now);
        }
    }

    /// Freshness at `now`: announces the topics that turned stale, updates
    /// the configured topics' gauges; `true` when a stale topic should
    /// replace the link (`on_stale = "reconnect"`).
    pub fn freshness_tick(&mut self, now: Instant, publisher: &Publisher, metrics: &UpstreamMetrics) -> bool {
        let Some(f) = self.freshness.as_mut() else { return false };
        let mut stale = false;
        for change in f.tick(now) {
            if let Change::Stale(topic, age) = change {
                metrics.topic_freshness(&topic, true);
                publisher.announce(freshness_event(&self.name, &topic, Some(age.as_millis())));
                stale = true;
            }
        }
        for (topic, age, is_stale) in f.configured_ages(now) {
            metrics.topic_age(topic, age, is_stale);
        }
        stale && self.reconnect_on_stale
    }

    /// Decodes `msg`, which link `conn` brought, and publishes it; invalid
    /// data is counted (and its log line rate-limited) by `metrics`.
    pub fn deliver(
        &mut self,
        msg: Message,
        conn: u64,
        received: Instant,
        publisher: &Publisher,
        metrics: &UpstreamMetrics,
    ) -> Outcome {
        let received_at = SystemTime::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            test_hook(&msg);
            let mut resync = false;
            if let Some(seq) = self.sequence.as_mut() {
                match seq.check(&msg.data) {
                    Check::Duplicate => {
                        metrics.duplicate();
                        return Outcome::Dropped;
                    }
                    Check::Gap { key, expected, got, across_reconnect } => {
                        metrics.sequence_gap(got - expected, key.as_deref(), across_reconnect);
                        let event = upstream_gap_event(&self.name, key.as_deref(), expected, got, across_reconnect);
                        publisher.announce(event);
                        resync = self.resync_on_gap;
                        self.resync_next = resync;
                    }
                    Check::InOrder | Check::Untracked => {}
                }
            }
            let (topic, kind) = match self.decoder.decode(&msg) {
                Decoded::Ok { topic, kind } => (self.topics.intern(&topic), kind),
                Decoded::Invalid { error, pass } => {
                    metrics.invalid_data(&error);
                    if !pass {
                        return Outcome::Dropped;
                    }
                    (self.topics.intern(""), DataKind::Text)
                }
            };
            if let Some(Change::Fresh(t)) = self.freshness.as_mut().and_then(|f| f.on_message(&topic, received)) {
                metrics.topic_freshness(&t, false);
                publisher.announce(freshness_event(&self.name, &t, None));
            }
            publisher.publish(Incoming {
                upstream: Arc::clone(&self.name),
                topic,
                raw: msg.data,
                raw_is_text: msg.kind == Kind::Text,
                kind,
                received_at,
                received,
                conn,
            });
            if resync {
                Outcome::Resync
            } else {
                Outcome::Published
            }
        }));
        match outcome {
            Ok(o @ (Outcome::Published | Outcome::Resync)) => {
                metrics.message(received_at);
                o
            }
            Ok(other) => other,
            Err(_) => Outcome::Panicked,
        }
    }
}

/// A bounded set of interned topics: feeds reuse a handful, and a repeated
/// topic then costs no allocation per message. Past the bound, topics are
/// allocated per message (a feed with unbounded topics cannot grow it).
#[derive(Debug, Default)]
struct Topics(HashSet<Arc<str>>);

impl Topics {
    const MAX: usize = 1024;

    fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.0.get(topic) {
            return Arc::clone(t);
        }
        let t: Arc<str> = Arc::from(topic);
        if self.0.len() < Self::MAX {
            self.0.insert(Arc::clone(&t));
        }
        t
    }
}

/// Test-only triggers: a message with exactly this text panics the
/// handler, or blocks the actor's thread for 3 s (a stuck mailbox, for the
/// liveness probe).
#[cfg(feature = "test-hooks")]
fn test_hook(msg: &Message) {
    if msg.data.as_ref() == b"__wsgate_test_panic__" {
        panic!("test-only panic trigger");
    }
    if msg.data.as_ref() == b"__wsgate_test_stall__" {
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_hook(_: &Message) {}
