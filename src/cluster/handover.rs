//! `seq` across a change of owner (SPEC §15): the old owner stores its
//! last messages before it lets the lease go; the new owner continues from
//! the last `wsgate-seq` stored for the upstream, once its stream reader
//! has passed that message (so its own subscribers miss nothing either).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::relay::Progress;
use crate::fanout::Publisher;
use crate::telemetry::Metrics;
use crate::upstream::{self, Upstream};

/// Longest wait for the last messages of a retired upstream to be stored.
const STORE_WAIT: Duration = Duration::from_secs(2);

/// The last stored message of `upstream`: its `wsgate-seq` and its stream
/// sequence. `Ok(None)`: nothing stored yet.
async fn last_stored(stream: &Stream, prefix: &str, upstream: &str) -> Result<Option<(u64, u64)>, String> {
    match stream.get_last_raw_message_by_subject(&format!("{prefix}.{upstream}.>")).await {
        Ok(last) => {
            let seq = last.headers.get("wsgate-seq").and_then(|v| v.as_str().parse::<u64>().ok()).unwrap_or(0);
            Ok(Some((seq, last.sequence)))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A new owner: moves the hub's counter of `upstream` to the last
/// `wsgate-seq` stored, after the stream reader passed it (at most `limit`).
pub(super) async fn continue_seq(
    stream: &Stream,
    prefix: &str,
    upstream: &str,
    publisher: &Publisher,
    progress: &Progress,
    limit: Duration,
) {
    match last_stored(stream, prefix, upstream).await {
        Ok(Some((seq, at))) => {
            if !progress.reached(at, limit).await {
                warn!(upstream, "The cluster stream reader is behind; continuing seq from the stored one.");
            }
            publisher.advance_to(seq);
            info!(upstream, seq, "Continuing seq from the stream.");
        }
        Ok(None) => {}
        Err(e) => {
            warn!(upstream, error = %e, "Cannot read the last stored message; seq continues from what this replica saw.")
        }
    }
}

/// Closes the link of an upstream this replica no longer holds (1000) and
/// drops its `wsgate_upstream_*` series here: they belong to the owner's
/// replica now (a `stopped` state left behind would look like an outage).
pub(super) async fn retire(addr: Addr<Upstream>, metrics: Arc<Metrics>, upstream: &str) {
    // Handed over, not retired: subscribers here see no `stopped`, the
    // upstream goes on at its new owner (its state is mirrored).
    let _ = addr.send(upstream::HandOver).await;
    metrics.remove_upstream(upstream);
}

/// An owner letting `upstream` go: closes its link (1000), waits until the
/// stream holds its last numbered message (at most 2 s), then reports on
/// `done` so the round loop deletes the lease.
pub(super) async fn hand_over(
    addr: Addr<Upstream>,
    metrics: Arc<Metrics>,
    stream: Stream,
    prefix: String,
    upstream: String,
    publisher: Publisher,
    done: mpsc::Sender<String>,
) {
    retire(addr, metrics, &upstream).await;
    let target = publisher.seq();
    let end = Instant::now() + STORE_WAIT;
    loop {
        match last_stored(&stream, &prefix, &upstream).await {
            Ok(Some((seq, _))) if seq >= target => break,
            Ok(None) if target == 0 => break,
            _ if Instant::now() >= end => {
                warn!(upstream = %upstream, seq = target, "Last messages not seen stored in time; letting the lease go anyway.");
                break;
            }
            _ => actix_rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // At most one hand-over per upstream is under way: room is kept.
    let _ = done.try_send(upstream);
}
