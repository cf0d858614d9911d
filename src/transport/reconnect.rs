//! The reconnect policy: exponential backoff with jitter from the `backoff`
//! crate, plus the two rules the crate does not know: reset only after a
//! stable period, and start the `max_elapsed` clock at the first failure
//! after a reset. The `backoff` crate stays behind this one module
//! (RUSTSEC-2025-0012: unmaintained, no vulnerability).

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::ExponentialBackoff;

use crate::config::ReconnectConfig;

/// Decides how long to wait before the next attempt.
#[derive(Debug)]
pub struct ReconnectPolicy {
    inner: ExponentialBackoff,
    /// True after a reset: the next failure restarts the elapsed clock.
    fresh: bool,
}

impl ReconnectPolicy {
    /// A policy from validated config.
    pub fn new(cfg: &ReconnectConfig) -> Self {
        let inner = ExponentialBackoff {
            current_interval: cfg.initial.get(),
            initial_interval: cfg.initial.get(),
            randomization_factor: cfg.jitter,
            multiplier: cfg.multiplier,
            max_interval: cfg.max.get(),
            max_elapsed_time: (!cfg.max_elapsed.is_zero()).then(|| cfg.max_elapsed.get()),
            ..ExponentialBackoff::default()
        };
        ReconnectPolicy { inner, fresh: true }
    }

    /// The delay before the next attempt, or `None` when `max_elapsed` has
    /// passed since the first failure after the last reset: give up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.fresh {
            self.inner.reset();
            self.fresh = false;
        }
        self.inner.next_backoff()
    }

    /// The link was stable for `stable_after`: back to `initial`.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.fresh = true;
    }

    /// The bounds `[lo, hi]` of the `n`th delay (0-based) after a reset, for tests.
    pub fn bounds(cfg: &ReconnectConfig, n: u32) -> (Duration, Duration) {
        let base = (cfg.initial.get().as_secs_f64() * cfg.multiplier.powi(n as i32)).min(cfg.max.get().as_secs_f64());
        (Duration::from_secs_f64(base * (1.0 - cfg.jitter)), Duration::from_secs_f64(base * (1.0 + cfg.jitter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg(jitter: f64) -> ReconnectConfig {
        ReconnectConfig {
            initial: Dur::ms(100),
            max: Dur::ms(1000),
            multiplier: 2.0,
            jitter,
            max_elapsed: Dur::secs(0),
            stable_after: Dur::secs(1),
        }
    }

    /// Delays grow by the multiplier, stay within jitter bounds, cap at max, reset to initial.
    #[test]
    fn delays_within_bounds() {
        for jitter in [0.0, 0.5] {
            let c = cfg(jitter);
            let mut p = ReconnectPolicy::new(&c);
            for n in 0..8 {
                let d = p.next_delay().unwrap();
                let (lo, hi) = ReconnectPolicy::bounds(&c, n);
                assert!(
                    d >= lo.saturating_sub(Duration::from_millis(1)) && d <= hi + Duration::from_millis(1),
                    "n={n} d={d:?} not in [{lo:?}, {hi:?}]"
                );
            }
            p.reset();
            let d = p.next_delay().unwrap();
            assert!(d <= Duration::from_millis(151), "after reset {d:?}");
        }
    }

    /// With max_elapsed set, the policy gives up once that much time has passed.
    #[test]
    fn gives_up_after_max_elapsed() {
        let mut c = cfg(0.0);
        c.max_elapsed = Dur::ms(300);
        let mut p = ReconnectPolicy::new(&c);
        assert!(p.next_delay().is_some());
        std::thread::sleep(Duration::from_millis(320));
        assert!(p.next_delay().is_none());
    }
}
