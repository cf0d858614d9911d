//! Heartbeat deadlines, ping/pong matching and the idle clock of one link,
//! as plain data driven by the caller's clock (SPEC §3 `[upstreams.heartbeat]`).
//!
//! The actor feeds it frames and ticks and does what [`Heartbeat::tick`]
//! says; nothing here sleeps, spawns or knows a socket, so every deadline is
//! table-tested with made-up instants.
//!
//! - A ping goes out every `interval`.
//! - The dead-link clock starts at the first ping sent after the last frame
//!   of any kind, so a quiet but healthy feed is never cut before it could
//!   answer: a dead link is found within `interval + timeout`.
//! - `idle_timeout > 0`: no data message within it while live is `idle`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::HeartbeatConfig;

/// Ping payloads remembered for RTT matching.
const PINGS_REMEMBERED: usize = 16;

/// What the link should do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    /// Nothing due.
    Quiet,
    /// Send a ping with this payload (and `app_message`, if any, while live).
    Ping([u8; 8]),
    /// No frame of any kind within `timeout` after a ping: the link is dead.
    Dead(Duration),
    /// No data message within `idle_timeout` while live.
    Idle(Duration),
}

/// The heartbeat state of one link.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// A ping every this long.
    interval: Duration,
    /// After a ping, a frame must come within this long.
    timeout: Duration,
    /// Above zero: a data message must come within this long while live.
    idle_timeout: Duration,
    /// When the last ping went out.
    last_ping: Instant,
    /// When the last data message came (or the link went live).
    last_data: Instant,
    /// The first ping sent after the last frame: the dead-link clock.
    probe_since: Option<Instant>,
    /// Number of the last ping sent; its payload is this in big endian.
    ping_seq: u64,
    /// Pings awaiting their pong, oldest first.
    pings: VecDeque<(u64, Instant)>,
}

impl Heartbeat {
    /// A link that was just upgraded at `now`.
    pub fn new(cfg: &HeartbeatConfig, now: Instant) -> Self {
        Heartbeat {
            interval: cfg.interval.get(),
            timeout: cfg.timeout.get(),
            idle_timeout: cfg.idle_timeout.get(),
            last_ping: now,
            last_data: now,
            probe_since: None,
            ping_seq: 0,
            pings: VecDeque::new(),
        }
    }

    /// How often the actor should call [`Heartbeat::tick`]: a tenth of the
    /// shortest deadline (10 ms to 1 s), so detection stays within
    /// `interval + timeout` (and `idle_timeout`).
    pub fn period(cfg: &HeartbeatConfig) -> Duration {
        let mut period = cfg.interval.get().min(cfg.timeout.get());
        if !cfg.idle_timeout.is_zero() {
            period = period.min(cfg.idle_timeout.get());
        }
        (period / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// A frame of any kind arrived: the link is alive.
    pub fn on_frame(&mut self) {
        self.probe_since = None;
    }

    /// A data message arrived (or the link just went live): the idle clock restarts.
    pub fn on_data(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// A pong arrived; returns the round-trip time when it answers one of
    /// our pings (older unanswered pings are forgotten).
    pub fn on_pong(&mut self, payload: &[u8], now: Instant) -> Option<Duration> {
        let seq = u64::from_be_bytes(<[u8; 8]>::try_from(payload).ok()?);
        while let Some(&(s, sent)) = self.pings.front() {
            if s > seq {
                return None;
            }
            self.pings.pop_front();
            if s == seq {
                return Some(now.saturating_duration_since(sent));
            }
        }
        None
    }

    /// The link is not read (a blocking sink holds the upstream back):
    /// every deadline starts again from `now`, and no ping goes out.
    pub fn suspend(&mut self, now: Instant) {
        self.probe_since = None;
        self.last_data = now;
        self.last_ping = now;
    }

    /// What is due at `now`; `live` says whether data is expected (the idle
    /// clock runs only then).
    pub fn tick(&mut self, now: Instant, live: bool) -> Beat {
        if self.probe_since.is_some_and(|p| now.saturating_duration_since(p) >= self.timeout) {
            return Beat::Dead(self.timeout);
        }
        if live && !self.idle_timeout.is_zero() && now.saturating_duration_since(self.last_data) >= self.idle_timeout {
            return Beat::Idle(self.idle_timeout);
        }
        if now.saturating_duration_since(self.last_ping) >= self.interval {
            self.ping_seq += 1;
            self.probe_since.get_or_insert(now);
            self.pings.push_back((self.ping_seq, now));
            if self.pings.len() > PINGS_REMEMBERED {
                self.pings.pop_front();
            }
            self.last_ping = now;
            return Beat::Ping(self.ping_seq.to_be_bytes());
        }
        Beat::Quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg(interval: u64, timeout: u64, idle: u64) -> HeartbeatConfig {
        HeartbeatConfig {
            interval: Dur::ms(interval),
            timeout: Dur::ms(timeout),
            idle_timeout: Dur::ms(idle),
            app_message: String::new(),
        }
    }

    /// One script step: at `t` ms, something happens, and the tick says `want`.
    enum Step {
        Tick(u64, bool, Beat),
        Frame,
        Data(u64),
    }

    fn run(c: HeartbeatConfig, steps: &[Step]) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut hb = Heartbeat::new(&c, t0);
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Tick(t, live, want) => assert_eq!(&hb.tick(at(*t), *live), want, "step {i} at {t} ms"),
                Step::Frame => hb.on_frame(),
                Step::Data(t) => {
                    hb.on_frame();
                    hb.on_data(at(*t));
                }
            }
        }
    }

    fn ping(n: u64) -> Beat {
        Beat::Ping(n.to_be_bytes())
    }

    /// Pings every interval; a link that answers is never dead; one that
    /// goes silent is dead `timeout` after the first unanswered ping, so
    /// within interval + timeout of its last frame.
    #[test]
    fn dead_link_table() {
        use Step::*;
        run(
            cfg(100, 50, 0),
            &[
                Tick(50, true, Beat::Quiet),
                Tick(100, true, ping(1)),
                Frame,
                Tick(149, true, Beat::Quiet),
                Tick(200, true, ping(2)),
                Frame,
                Tick(300, true, ping(3)),
                // Silent from here: the clock runs from the ping at 300.
                Tick(349, true, Beat::Quiet),
                Tick(350, true, Beat::Dead(Duration::from_millis(50))),
            ],
        );
        // A timeout longer than the interval: later pings do not move the clock.
        run(
            cfg(100, 250, 0),
            &[
                Tick(100, true, ping(1)),
                Tick(200, true, ping(2)),
                Tick(300, true, ping(3)),
                Tick(349, true, Beat::Quiet),
                Tick(350, true, Beat::Dead(Duration::from_millis(250))),
            ],
        );
    }

    /// The idle clock runs only while live and restarts with every data
    /// message; control frames do not reset it.
    #[test]
    fn idle_table() {
        use Step::*;
        run(
            cfg(1000, 1000, 300),
            &[
                Tick(299, true, Beat::Quiet),
                Data(250),
                Tick(500, true, Beat::Quiet),
                Frame,
                Tick(549, true, Beat::Quiet),
                Tick(550, true, Beat::Idle(Duration::from_millis(300))),
            ],
        );
        run(cfg(1000, 1000, 300), &[Tick(900, false, Beat::Quiet)]);
    }

    /// Pongs match their ping by payload; stale and foreign pongs give no RTT.
    #[test]
    fn pong_matching() {
        let c = cfg(100, 1000, 0);
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&c, t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(hb.tick(ms(100), true), ping(1));
        assert_eq!(hb.tick(ms(200), true), ping(2));
        assert_eq!(hb.on_pong(&2u64.to_be_bytes(), ms(230)), Some(Duration::from_millis(30)));
        assert_eq!(hb.on_pong(&1u64.to_be_bytes(), ms(240)), None, "ping 1 was forgotten with 2");
        assert_eq!(hb.on_pong(b"junk", ms(240)), None);
        assert_eq!(hb.on_pong(&9u64.to_be_bytes(), ms(240)), None);
        for n in 3..=40 {
            hb.tick(ms(100 * n), true);
        }
        assert!(hb.pings.len() <= PINGS_REMEMBERED);
    }

    /// The tick period is a tenth of the shortest deadline, 10 ms to 1 s.
    #[test]
    fn period_table() {
        for (i, t, idle, want) in
            [(20_000, 20_000, 0, 1000), (1000, 500, 0, 50), (1000, 1000, 200, 20), (50, 50, 0, 10)]
        {
            assert_eq!(Heartbeat::period(&cfg(i, t, idle)), Duration::from_millis(want), "{i} {t} {idle}");
        }
    }

    /// While suspended (a blocking sink pauses the link) no deadline runs:
    /// an unanswered ping and a silent feed are judged from the end of the
    /// pause, not its start.
    #[test]
    fn suspend_restarts_the_deadlines() {
        let c = cfg(100, 50, 300);
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(&c, t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(hb.tick(ms(100), true), ping(1));
        for t in (110..=2000).step_by(10) {
            hb.suspend(ms(t));
        }
        assert_eq!(hb.tick(ms(2040), true), Beat::Quiet, "no dead link for the ping before the pause");
        assert_eq!(hb.tick(ms(2100), true), ping(2));
        assert_eq!(hb.tick(ms(2149), true), Beat::Quiet);
        assert_eq!(hb.tick(ms(2150), true), Beat::Dead(Duration::from_millis(50)));
    }
}
