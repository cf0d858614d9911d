//! The vocabulary of the link lifecycle (`link.rs`): the [`Event`]s the
//! actor feeds it, the [`Action`]s it returns, and the close frame a link
//! ends with ([`goodbye`], decided here only). Plain data, no actix.

use std::time::{Duration, Instant};

use super::error::LinkError;
use crate::model::{close, LinkState, Reason};

/// What happened, as the actor tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The actor started, or its supervisor restarted it.
    Started {
        /// When.
        now: Instant,
    },
    /// The upgrade of the attempt of `epoch` succeeded.
    Upgraded {
        /// The epoch of the `Dial` it answers.
        epoch: u64,
        /// When.
        now: Instant,
    },
    /// The reply a handshake step waited for came.
    StepDone {
        /// The epoch of the link.
        epoch: u64,
        /// When.
        now: Instant,
    },
    /// The timeout of handshake step `step` passed (armed by `Handshake`).
    StepTimeout {
        /// The epoch of the link.
        epoch: u64,
        /// The step whose reply did not come.
        step: usize,
        /// When.
        now: Instant,
        /// The step's failure (reason `auth` or `handshake`).
        error: LinkError,
    },
    /// The attempt or link of `epoch` failed (connect error, close frame,
    /// EOF, bad frame, dead link, idle, auth reply or timeout).
    Failed {
        /// The epoch of the attempt or link.
        epoch: u64,
        /// When.
        now: Instant,
        /// What went wrong.
        error: LinkError,
    },
    /// The backoff of `epoch` is over.
    BackoffOver {
        /// The epoch of the `Wait`.
        epoch: u64,
    },
    /// The link of `epoch` has been live for `stable_after`.
    Stable {
        /// The epoch of the link.
        epoch: u64,
    },
    /// Handling this upstream's data panicked (caught).
    Panicked {
        /// When.
        now: Instant,
    },
    /// Shutdown or reload: close and stay stopped; also a link retired
    /// after a make-before-break rotation (`Rotate`).
    Stop {
        /// `Shutdown`, `Reload` or `Rotate`.
        error: LinkError,
    },
    /// `break_before_make` at `max_connection_age`: close the live link of
    /// `epoch` with 1000 (reason `rotate`) and dial a new one without a
    /// state change (SPEC §14a: a state event only if the new link fails).
    Rotate {
        /// The epoch of the live link.
        epoch: u64,
    },
}

impl Event {
    /// The epoch an event is tagged with; `None` for events of the whole
    /// upstream (start, panic, stop).
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Event::Upgraded { epoch, .. }
            | Event::StepDone { epoch, .. }
            | Event::StepTimeout { epoch, .. }
            | Event::Failed { epoch, .. }
            | Event::BackoffOver { epoch }
            | Event::Stable { epoch }
            | Event::Rotate { epoch } => Some(*epoch),
            Event::Started { .. } | Event::Panicked { .. } | Event::Stop { .. } => None,
        }
    }
}

/// How a link is closed: the close frame to send before it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// No close frame (the link is gone, or never existed).
    Silent,
    /// A close frame without a code (echoing a server's empty close).
    Empty,
    /// A close frame with this code.
    Code(u16),
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish the new state (status, metrics, hub events).
    State(LinkState),
    /// Start an attempt: read files, dial, upgrade; report with `epoch`.
    /// `retry` is true for every attempt after a backoff.
    Dial {
        /// Tag of the results.
        epoch: u64,
        /// Counted in `/status` `reconnects`.
        retry: bool,
    },
    /// Send handshake step `step` and arm its timeout, tagged `epoch`.
    Handshake {
        /// Tag of the reply and the timeout.
        epoch: u64,
        /// The step.
        step: usize,
    },
    /// The link went live: send `on_connect`, count the connect, arm the
    /// `stable_after` timer with `epoch`.
    Live {
        /// Tag of the stable timer.
        epoch: u64,
        /// The link's number.
        conn: u64,
    },
    /// A connect attempt failed (`live` false) or a link was lost (`live`
    /// true): count, log and record it.
    Report {
        /// What went wrong.
        error: LinkError,
        /// The link was live.
        live: bool,
    },
    /// A live link ended on our side (shutdown, reload): count only.
    Ended(Reason),
    /// Tear the current link down (if any), after sending this.
    Close(Goodbye),
    /// Call back with `BackoffOver { epoch }` after `delay`.
    Wait {
        /// Tag of the timer.
        epoch: u64,
        /// How long.
        delay: Duration,
    },
    /// `reconnect.max_elapsed` passed: log that this upstream gave up.
    GaveUp,
    /// Stop the actor so its supervisor restarts it (after a caught panic).
    Restart,
}

/// The close frame for a link that ends with `error`: decided here only.
pub fn goodbye(error: &LinkError) -> Goodbye {
    match error {
        LinkError::Oversize(_) => Goodbye::Code(close::TOO_BIG),
        LinkError::Protocol(_) => Goodbye::Code(close::PROTOCOL),
        LinkError::InvalidText(_) => Goodbye::Code(close::INVALID_DATA),
        LinkError::Idle(_)
        | LinkError::Auth(_)
        | LinkError::Handshake(_)
        | LinkError::Sequence(_)
        | LinkError::Stale(_)
        | LinkError::Shutdown
        | LinkError::Reload
        | LinkError::Rotate => Goodbye::Code(close::NORMAL),
        LinkError::Panic => Goodbye::Code(close::INTERNAL),
        // Echo the server's close with its own code.
        LinkError::Closed { code: Some(c), .. } => Goodbye::Code(*c),
        LinkError::Closed { code: None, .. } => Goodbye::Empty,
        // Nothing to say to a link that is gone or never was.
        LinkError::DeadLink(_)
        | LinkError::Tcp(_)
        | LinkError::Dns { .. }
        | LinkError::Tls(_)
        | LinkError::Proxy(_)
        | LinkError::Timeout(_)
        | LinkError::Http { .. } => Goodbye::Silent,
    }
}
