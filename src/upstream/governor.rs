//! The reconnect governor (SPEC §13 `[reconnect_governor]`): across all
//! upstreams, at most `max_in_flight` connects run at once (from the dial to
//! the end of the upgrade), and each host:port gets new connects at
//! `per_host_rate` (a token bucket whose burst is the rate), so a network
//! blip that drops 200 upstreams of one venue never becomes one burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::GovernorConfig;

/// Shared by every upstream actor.
#[derive(Debug)]
pub struct Governor {
    /// Connects in flight.
    slots: Arc<Semaphore>,
    /// Tokens per second per host.
    rate: f64,
    /// Tokens at most (the burst).
    burst: f64,
    /// Per host:port: when the bucket was last filled, and its tokens
    /// (negative: connects already promised to waiters).
    buckets: Mutex<HashMap<String, (Instant, f64)>>,
}

/// The right to run one connect; the slot is free again when it is dropped.
#[derive(Debug)]
pub struct Permit {
    /// Held, never read: dropping it frees the slot. (`None` only if the
    /// semaphore were closed, which it never is.)
    _slot: Option<OwnedSemaphorePermit>,
}

impl Governor {
    /// A governor for `cfg` (validated: the rate parses, max_in_flight >= 1).
    pub fn new(cfg: &GovernorConfig) -> Arc<Self> {
        let rate = cfg.rate_per_second().unwrap_or(10.0);
        Arc::new(Governor {
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            rate,
            burst: rate.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// How long a connect to `host` must wait for its token, taking it now
    /// (a token promised to an earlier waiter is not given twice).
    fn reserve(&self, host: &str, now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (at, tokens) = buckets.entry(host.to_string()).or_insert((now, self.burst));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst) - 1.0;
        *at = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    /// Waits for a token of `host` and a free slot; returns the slot and how
    /// long it waited.
    pub async fn admit(self: Arc<Self>, host: String) -> (Permit, Duration) {
        let started = Instant::now();
        let wait = self.reserve(&host, started);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let slot = Arc::clone(&self.slots).acquire_owned().await.ok();
        (Permit { _slot: slot }, started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor(max_in_flight: usize, rate: &str) -> Arc<Governor> {
        Governor::new(&GovernorConfig { max_in_flight, per_host_rate: rate.into() })
    }

    /// A burst of the rate goes at once, then one per 1/rate; hosts are apart.
    #[test]
    fn token_bucket_table() {
        let g = governor(16, "10/s");
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..13).map(|_| g.reserve("h:1", t0)).collect();
        assert!(waits[..10].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[10], Duration::from_millis(100));
        assert_eq!(waits[12], Duration::from_millis(300));
        assert_eq!(g.reserve("other:1", t0), Duration::ZERO, "per host");
        // Refill: a second later there are ten tokens again, minus the three promised.
        let later = t0 + Duration::from_secs(2);
        let waits: Vec<Duration> = (0..8).map(|_| g.reserve("h:1", later)).collect();
        assert!(waits[..7].iter().all(Duration::is_zero), "{waits:?}");
        assert_eq!(waits[7], Duration::ZERO, "refilled to the burst, promised tokens taken off");
    }

    /// At most max_in_flight permits at once.
    #[actix_rt::test]
    async fn slots_bound_in_flight() {
        let g = governor(2, "1000/s");
        let (a, _) = Arc::clone(&g).admit("h:1".into()).await;
        let (_b, _) = Arc::clone(&g).admit("h:1".into()).await;
        let third = actix_rt::spawn(Arc::clone(&g).admit("h:1".into()));
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third waits while two are in flight");
        drop(a);
        let (_c, waited) = third.await.unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
    }
}
