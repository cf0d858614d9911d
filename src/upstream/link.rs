//! The lifecycle of one upstream link as data (SPEC §4, §10a): a [`Phase`]
//! whose variants hold what each state owns, and one function,
//! [`Lifecycle::on`], that takes an [`Event`] and returns the [`Action`]s
//! the actor must carry out. No actix, no sockets, no clock of its own:
//! table-tested in `link_tests.rs`.
//!
//! The actor (`actor.rs`) turns socket results, frames and timers into
//! events and actions into I/O. Every action that starts something that
//! reports back (a dial, a timer) carries the current `epoch`; an event
//! with an older epoch is stale and changes nothing, so a late result of an
//! abandoned attempt can never touch the current one.
//!
//! A link is a value with its own number (`conn`, SPEC §13: successful
//! upgrades per upstream, from 1); an upstream with several links (rotation,
//! redundancy) holds one `Lifecycle` per link slot.

use std::time::{Duration, Instant};

pub use super::link_events::{goodbye, Action, Event, Goodbye};

use super::error::LinkError;
use crate::config::UpstreamConfig;
use crate::model::{LinkState, Reason};
use crate::transport::ReconnectPolicy;

/// Where a link slot is, and what that state owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading files, resolving, dialing, upgrading. `attempt` counts the
    /// attempts since the backoff was last reset (1 = first).
    Connecting {
        /// Attempts since the last reset, this one included.
        attempt: u32,
    },
    /// Upgraded; handshake step `step` (0-based) runs: the auth message today.
    Handshaking {
        /// The link's number.
        conn: u64,
        /// The step waiting for its reply.
        step: usize,
    },
    /// Data flows.
    Live {
        /// The link's number.
        conn: u64,
        /// When it went live.
        since: Instant,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// When the next attempt starts.
        until: Instant,
        /// Why the last attempt or link failed.
        reason: Reason,
    },
    /// No more attempts: `max_elapsed` passed, or shutdown or reload.
    Stopped {
        /// Why.
        why: Reason,
    },
}

impl Phase {
    /// The SPEC §4 state this phase shows as.
    pub fn state(&self) -> LinkState {
        match self {
            Phase::Connecting { .. } => LinkState::Connecting,
            Phase::Handshaking { .. } => LinkState::Authenticating,
            Phase::Live { .. } => LinkState::Connected,
            Phase::Backoff { .. } => LinkState::Backoff,
            Phase::Stopped { .. } => LinkState::Stopped,
        }
    }

    /// The number of the link this phase holds, if any.
    pub fn conn(&self) -> Option<u64> {
        match self {
            Phase::Handshaking { conn, .. } | Phase::Live { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}

/// One link slot's lifecycle.
#[derive(Debug)]
pub struct Lifecycle {
    /// Where it is.
    phase: Phase,
    /// Tags actions that report back; moves at every dial and teardown.
    epoch: u64,
    /// The last `conn` handed out (successful upgrades).
    conns: u64,
    /// Attempts since the backoff was last reset.
    attempts: u32,
    /// The handshake steps run after the upgrade: whether each waits for a
    /// reply (`expect`) or lets the next follow at once.
    expects: Vec<bool>,
    /// When backoff delays are due.
    policy: ReconnectPolicy,
    /// Set when a live link is lost; the next data message observes downtime.
    down_since: Option<Instant>,
    /// A caught panic stopped the actor: at the restart, back off first.
    after_panic: bool,
    /// A `break_before_make` rotation runs: `connecting` and
    /// `authenticating` are not shown until the new link is live or fails.
    quiet: bool,
}

impl Lifecycle {
    /// A slot for `cfg`, before its first attempt.
    pub fn new(cfg: &UpstreamConfig) -> Self {
        Self::with(ReconnectPolicy::new(&cfg.reconnect), super::handshake::Plan::new(cfg).expects())
    }

    /// A slot with this policy and handshake steps (`true`: the step waits
    /// for its reply).
    pub fn with(policy: ReconnectPolicy, expects: Vec<bool>) -> Self {
        Lifecycle {
            phase: Phase::Connecting { attempt: 0 },
            epoch: 0,
            conns: 0,
            attempts: 0,
            expects,
            policy,
            down_since: None,
            after_panic: false,
            quiet: false,
        }
    }

    /// The lifecycle of link slot `slot` of an upstream with several: its
    /// epochs start at `slot << 32`, so an epoch names its slot.
    pub fn for_slot(cfg: &UpstreamConfig, slot: u32) -> Self {
        let mut life = Self::new(cfg);
        life.epoch = u64::from(slot) << 32;
        life
    }

    /// The slot an epoch belongs to (see [`Lifecycle::for_slot`]).
    pub fn slot_of(epoch: u64) -> u32 {
        (epoch >> 32) as u32
    }

    /// The last link number handed out.
    pub fn conns(&self) -> u64 {
        self.conns
    }

    /// Continues the numbering of the upstream's other slots (SPEC §14a:
    /// `conn` is shared by all links of an upstream).
    pub fn set_conns(&mut self, last: u64) {
        self.conns = last;
    }

    /// Where the slot is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The state this slot shows: during a `break_before_make` rotation
    /// still `connected` until the new link is live or fails.
    pub fn shown(&self) -> LinkState {
        match self.phase {
            Phase::Connecting { .. } | Phase::Handshaking { .. } if self.quiet => LinkState::Connected,
            ref p => p.state(),
        }
    }

    /// A `break_before_make` rotation runs unseen (see [`Lifecycle::shown`]).
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The current epoch: results tagged otherwise are stale.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The first data message after a lost link: how long it was down.
    pub fn first_message(&mut self, now: Instant) -> Option<Duration> {
        self.down_since.take().map(|since| now.saturating_duration_since(since))
    }

    /// The one transition function.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        let mut actions = self.step(event);
        if self.quiet {
            actions.retain(|a| !matches!(a, Action::State(LinkState::Connecting | LinkState::Authenticating)));
        }
        actions
    }

    fn step(&mut self, event: Event) -> Vec<Action> {
        if matches!(self.phase, Phase::Stopped { .. }) {
            return Vec::new();
        }
        match event {
            Event::Started { now } => {
                if std::mem::take(&mut self.after_panic) {
                    self.retry(now, Reason::Panic, None)
                } else {
                    self.dial(false)
                }
            }
            Event::Upgraded { epoch, now } => {
                if epoch != self.epoch || !matches!(self.phase, Phase::Connecting { .. }) {
                    return Vec::new();
                }
                self.conns += 1;
                self.advance(self.conns, 0, now)
            }
            Event::StepDone { epoch, now } => {
                let Phase::Handshaking { conn, step } = self.phase else { return Vec::new() };
                if epoch != self.epoch {
                    return Vec::new();
                }
                self.advance(conn, step + 1, now)
            }
            Event::StepTimeout { epoch, step, now, error } => {
                if !matches!(self.phase, Phase::Handshaking { step: s, .. } if s == step) {
                    return Vec::new();
                }
                self.on(Event::Failed { epoch, now, error })
            }
            Event::Failed { epoch, now, error } => {
                if epoch != self.epoch || matches!(self.phase, Phase::Backoff { .. }) {
                    return Vec::new();
                }
                let live = matches!(self.phase, Phase::Live { .. });
                if live {
                    self.down_since.get_or_insert(now);
                }
                self.quiet = false;
                let reason = error.reason();
                let (retryable, at_least) = (error.is_retryable(), error.retry_after());
                let mut actions = vec![Action::Close(self.goodbye(&error)), Action::Report { error, live }];
                self.epoch += 1;
                if retryable {
                    actions.extend(self.retry(now, reason, at_least));
                } else {
                    actions.extend(self.stop(reason));
                }
                actions
            }
            Event::BackoffOver { epoch } => {
                if epoch != self.epoch || !matches!(self.phase, Phase::Backoff { .. }) {
                    return Vec::new();
                }
                self.dial(true)
            }
            Event::Stable { epoch } => {
                if epoch == self.epoch && matches!(self.phase, Phase::Live { .. }) {
                    self.policy.reset();
                    self.attempts = 0;
                }
                Vec::new()
            }
            Event::Panicked { now } => {
                let live = matches!(self.phase, Phase::Live { .. });
                if live {
                    self.down_since.get_or_insert(now);
                }
                let bye = self.goodbye(&LinkError::Panic);
                self.epoch += 1;
                self.after_panic = true;
                self.phase = Phase::Connecting { attempt: 0 };
                vec![Action::Close(bye), Action::Report { error: LinkError::Panic, live }, Action::Restart]
            }
            Event::Rotate { epoch } => {
                if epoch != self.epoch || !matches!(self.phase, Phase::Live { .. }) {
                    return Vec::new();
                }
                let actions = vec![Action::Ended(Reason::Rotate), Action::Close(goodbye(&LinkError::Rotate))];
                self.quiet = true;
                [actions, self.dial(false)].concat()
            }
            Event::Stop { error } => {
                let reason = error.reason();
                let mut actions = Vec::new();
                if matches!(self.phase, Phase::Live { .. }) {
                    actions.push(Action::Ended(reason));
                }
                actions.push(Action::Close(self.goodbye(&error)));
                self.epoch += 1;
                actions.extend(self.stop(reason));
                actions
            }
        }
    }

    /// The close frame for the current link ending with `error`; none when
    /// there is no link yet (connecting) or any more (backoff).
    fn goodbye(&self, error: &LinkError) -> Goodbye {
        if self.phase.conn().is_some() {
            goodbye(error)
        } else {
            Goodbye::Silent
        }
    }

    fn dial(&mut self, retry: bool) -> Vec<Action> {
        self.attempts += 1;
        self.epoch += 1;
        self.phase = Phase::Connecting { attempt: self.attempts };
        vec![Action::State(LinkState::Connecting), Action::Dial { epoch: self.epoch, retry }]
    }

    /// Runs the handshake from step `from`: steps that wait for no reply are
    /// sent one after the other; the first that waits holds the slot in
    /// `Handshaking`; after the last, the link is live.
    fn advance(&mut self, conn: u64, from: usize, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for step in from..self.expects.len() {
            if self.expects[step] {
                if !matches!(self.phase, Phase::Handshaking { .. }) {
                    actions.push(Action::State(LinkState::Authenticating));
                }
                self.phase = Phase::Handshaking { conn, step };
                actions.push(Action::Handshake { epoch: self.epoch, step });
                return actions;
            }
            actions.push(Action::Handshake { epoch: self.epoch, step });
        }
        actions.extend(self.go_live(conn, now));
        actions
    }

    fn go_live(&mut self, conn: u64, now: Instant) -> Vec<Action> {
        self.quiet = false;
        self.phase = Phase::Live { conn, since: now };
        vec![Action::Live { epoch: self.epoch, conn }, Action::State(LinkState::Connected)]
    }

    fn retry(&mut self, now: Instant, reason: Reason, at_least: Option<Duration>) -> Vec<Action> {
        let Some(delay) = self.policy.next_delay() else {
            let mut actions = vec![Action::GaveUp];
            actions.extend(self.stop(reason));
            return actions;
        };
        let delay = delay.max(at_least.unwrap_or_default());
        self.phase = Phase::Backoff { until: now + delay, reason };
        vec![Action::State(LinkState::Backoff), Action::Wait { epoch: self.epoch, delay }]
    }

    fn stop(&mut self, why: Reason) -> Vec<Action> {
        self.phase = Phase::Stopped { why };
        vec![Action::State(LinkState::Stopped)]
    }
}
