//! The stream reader of one replica (SPEC §15): every message the owners
//! published to the cluster stream is read back by an ordered, ephemeral
//! JetStream consumer and handed to the hub with the owner's `seq`
//! ([`Publisher::relay`]), so `/ws` subscribers of every replica get every
//! upstream with the same envelope. The hub skips what it has already
//! delivered (`seq` at or below its counter): this replica's own messages
//! coming back, and anything seen before a consumer was created again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::warn;

use crate::fanout::{Incoming, Publisher};
use crate::model::DataKind;

/// The hub handles of the configured upstreams, by name; kept current by
/// the node at a reload. Names the config does not have are skipped.
pub type Publishers = Arc<RwLock<HashMap<String, Publisher>>>;

/// Pause before a consumer is created again after an error.
const RETRY: Duration = Duration::from_secs(1);

/// What the reader has handled so far, shared with the node: a new owner
/// waits until the reader has passed the last stored message of an
/// upstream before it continues that upstream's `seq`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest stream sequence handled (or the stream's last one when the
    /// reader started: nothing before it is read).
    handled: AtomicU64,
}

impl Progress {
    /// Highest stream sequence handled.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Waits until the reader has handled stream sequence `seq`, at most
    /// `limit`; returns whether it did.
    pub async fn reached(&self, seq: u64, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.handled() < seq {
            if Instant::now() >= end {
                return false;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Reads `stream` (subjects `{prefix}.>`) from its end, for ever: a
/// consumer that fails is created again from the next unread sequence.
pub async fn run(stream: Stream, prefix: String, publishers: Publishers, progress: Arc<Progress>) {
    // From the end: what was stored before this replica started is not
    // delivered (its subscribers were not there).
    if let Ok(info) = stream.get_info().await {
        progress.handled.fetch_max(info.state.last_sequence, Ordering::Relaxed);
    }
    loop {
        let deliver_policy = match progress.handled() {
            0 => DeliverPolicy::New,
            n => DeliverPolicy::ByStartSequence { start_sequence: n + 1 },
        };
        let config = OrderedConfig { filter_subject: format!("{prefix}.>"), deliver_policy, ..Default::default() };
        let messages = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match messages {
            Ok(mut messages) => {
                while let Some(next) = messages.next().await {
                    let message = match next {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "Cluster stream reader failed; it starts again.");
                            break;
                        }
                    };
                    let Ok(info) = message.info().map(|i| i.stream_sequence) else { continue };
                    if let Some((msg, seq)) = incoming(message.headers.as_ref(), &message.payload) {
                        let publisher =
                            publishers.read().unwrap_or_else(|p| p.into_inner()).get(&*msg.upstream).cloned();
                        if let Some(publisher) = publisher {
                            publisher.relay(msg, seq);
                        }
                    }
                    progress.handled.fetch_max(info, Ordering::Relaxed);
                }
            }
            Err(e) => warn!(error = %e, "Cannot read the cluster stream; trying again."),
        }
        actix_rt::time::sleep(RETRY).await;
    }
}

/// The envelope as the owner wrote it (SPEC §5).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    upstream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    seq: u64,
    #[serde(default)]
    conn: u64,
    #[serde(borrow)]
    received_at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// The message a stream entry carries, and its `seq`: the envelope read
/// back so that it encodes again byte for byte (`wsgate-kind` says how
/// `data` was written). None for anything else in the stream (a raw-format
/// sink's entries, foreign publishes).
pub fn incoming(headers: Option<&HeaderMap>, payload: &Bytes) -> Option<(Incoming, u64)> {
    let kind =
        headers.and_then(|h| h.get("wsgate-kind")).map_or(Some(DataKind::Json), |k| DataKind::from_text(k.as_str()))?;
    let env: Envelope<'_> = serde_json::from_slice(payload).ok()?;
    let data = env.data.get();
    let raw = match kind {
        DataKind::Json => payload.slice_ref(data.as_bytes()),
        DataKind::Text => Bytes::from(serde_json::from_str::<String>(data).ok()?),
        DataKind::Binary => {
            let b64: &str = serde_json::from_str(data).ok()?;
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(b64).ok()?)
        }
    };
    let received_at = humantime::parse_rfc3339(&env.received_at).unwrap_or_else(|_| SystemTime::now());
    let msg = Incoming {
        upstream: Arc::from(&*env.upstream),
        topic: Arc::from(&*env.topic),
        raw,
        raw_is_text: kind != DataKind::Binary,
        kind,
        received_at,
        received: Instant::now(),
        conn: env.conn,
    };
    Some((msg, env.seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::Delivery;

    fn message(kind: DataKind, raw: &[u8]) -> Incoming {
        Incoming {
            upstream: Arc::from("btc"),
            topic: Arc::from("trade"),
            raw: Bytes::copy_from_slice(raw),
            raw_is_text: kind != DataKind::Binary,
            kind,
            received_at: SystemTime::now(),
            received: Instant::now(),
            conn: 3,
        }
    }

    /// An envelope read back from the stream encodes again byte for byte,
    /// for every kind, and keeps the owner's seq and raw bytes.
    #[test]
    fn envelopes_round_trip() {
        for (kind, raw) in [
            (DataKind::Json, &br#"{"p": 1.5, "q":"a\"b"}"#[..]),
            (DataKind::Text, &b"line \"one\"\n\ttwo \x01"[..]),
            (DataKind::Binary, &[0u8, 255, 1, 2, 3][..]),
        ] {
            let d = Delivery::new(message(kind, raw), 41);
            let mut headers = HeaderMap::new();
            headers.insert("wsgate-kind", kind.as_str());
            let payload = d.envelope().clone().into_bytes();
            let (back, seq) = incoming(Some(&headers), &payload).expect("an envelope");
            assert_eq!(seq, 41);
            assert_eq!(back.raw, Bytes::copy_from_slice(raw), "{kind:?}");
            let again = Delivery::new(back, seq);
            assert_eq!(again.envelope(), d.envelope(), "{kind:?}");
        }
    }

    /// Entries that are not envelopes are skipped.
    #[test]
    fn foreign_entries_are_skipped() {
        assert!(incoming(None, &Bytes::from_static(b"raw bytes")).is_none());
        let mut headers = HeaderMap::new();
        headers.insert("wsgate-kind", "other");
        let env = Bytes::from_static(br#"{"upstream":"a","topic":"","seq":1,"received_at":"x","data":1}"#);
        assert!(incoming(Some(&headers), &env).is_none());
        assert!(incoming(None, &env).is_some(), "no header: json");
    }
}
