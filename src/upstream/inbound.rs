//! From a reassembled message to the hub: decode (topic by JSON pointer),
//! intern the topic, publish. The code that touches outside data runs under
//! `catch_unwind`, so a panic restarts this upstream only (reason `panic`).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::decode::{Decoded, Decoder};
use crate::config::UpstreamConfig;
use crate::fanout::{DataKind, Incoming, Publisher};
use crate::telemetry::UpstreamMetrics;
use crate::transport::reassembly::{Kind, Message};

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Numbered and queued for the subscribers.
    Published,
    /// Invalid and dropped (counted).
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
}

impl Inbound {
    /// The decoder of `cfg`.
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Inbound { name: Arc::from(cfg.name.as_str()), decoder: Decoder::new(&cfg.decode), topics: Topics::default() }
    }

    /// Decodes `msg` and publishes it; invalid data is counted (and its log
    /// line rate-limited) by `metrics`.
    pub fn deliver(
        &mut self,
        msg: Message,
        received: Instant,
        publisher: &Publisher,
        metrics: &UpstreamMetrics,
    ) -> Outcome {
        let received_at = SystemTime::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            test_hook(&msg);
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
            publisher.publish(Incoming {
                upstream: Arc::clone(&self.name),
                topic,
                raw: msg.data,
                raw_is_text: msg.kind == Kind::Text,
                kind,
                received_at,
                received,
            });
            Outcome::Published
        }));
        match outcome {
            Ok(Outcome::Published) => {
                metrics.message(received_at);
                Outcome::Published
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
