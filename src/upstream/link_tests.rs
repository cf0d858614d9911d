//! Table tests of the link lifecycle (`link.rs`): every SPEC §4 / §10a
//! transition and reason, without actix, sockets or sleeps.

use std::time::{Duration, Instant};

use super::error::LinkError;
use super::link::{goodbye, Action, Event, Goodbye, Lifecycle, Phase};
use crate::config::{Dur, ReconnectConfig};
use crate::model::{LinkState, Reason};
use crate::transport::ReconnectPolicy;

/// No jitter: delays are exact (500 ms, x2, up to 4 s).
fn policy(max_elapsed_ms: u64) -> ReconnectPolicy {
    ReconnectPolicy::new(&ReconnectConfig {
        initial: Dur::ms(500),
        max: Dur::secs(4),
        multiplier: 2.0,
        jitter: 0.0,
        max_elapsed: Dur::ms(max_elapsed_ms),
        stable_after: Dur::secs(30),
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A lifecycle that has dialed once (epoch 1).
fn dialing(steps: usize) -> (Lifecycle, Instant) {
    let mut l = Lifecycle::with(policy(0), vec![true; steps]);
    let now = Instant::now();
    assert_eq!(
        l.on(Event::Started { now }),
        [Action::State(LinkState::Connecting), Action::Dial { epoch: 1, retry: false }]
    );
    (l, now)
}

/// A lifecycle with a live link (conn 1, epoch 1).
fn live() -> (Lifecycle, Instant) {
    let (mut l, now) = dialing(0);
    l.on(Event::Upgraded { epoch: 1, now });
    (l, now)
}

fn failed(epoch: u64, now: Instant, error: LinkError) -> Event {
    Event::Failed { epoch, now, error }
}

/// Start, upgrade, live; with a handshake step, authenticating first.
#[test]
fn connect_to_live() {
    let (mut l, now) = dialing(0);
    assert_eq!(
        l.on(Event::Upgraded { epoch: 1, now }),
        [Action::Live { epoch: 1, conn: 1 }, Action::State(LinkState::Connected)]
    );
    assert_eq!(l.phase(), &Phase::Live { conn: 1, since: now });

    let (mut l, now) = dialing(1);
    assert_eq!(
        l.on(Event::Upgraded { epoch: 1, now }),
        [Action::State(LinkState::Authenticating), Action::Handshake { epoch: 1, step: 0 }]
    );
    assert_eq!(l.phase().state(), LinkState::Authenticating);
    assert_eq!(
        l.on(Event::StepDone { epoch: 1, now }),
        [Action::Live { epoch: 1, conn: 1 }, Action::State(LinkState::Connected)]
    );

    let (mut l, now) = dialing(2);
    l.on(Event::Upgraded { epoch: 1, now });
    assert_eq!(l.on(Event::StepDone { epoch: 1, now }), [Action::Handshake { epoch: 1, step: 1 }]);
    assert_eq!(l.phase(), &Phase::Handshaking { conn: 1, step: 1 });
}

/// Steps that wait for no reply are sent at once; the slot is
/// `authenticating` only while a step waits; after the last, live.
#[test]
fn steps_with_and_without_replies() {
    let mut l = Lifecycle::with(policy(0), vec![false, true, false]);
    let now = Instant::now();
    l.on(Event::Started { now });
    assert_eq!(
        l.on(Event::Upgraded { epoch: 1, now }),
        [
            Action::Handshake { epoch: 1, step: 0 },
            Action::State(LinkState::Authenticating),
            Action::Handshake { epoch: 1, step: 1 }
        ]
    );
    assert_eq!(
        l.on(Event::StepDone { epoch: 1, now }),
        [
            Action::Handshake { epoch: 1, step: 2 },
            Action::Live { epoch: 1, conn: 1 },
            Action::State(LinkState::Connected)
        ]
    );
    // Only fire-and-forget steps (on_connect): never authenticating.
    let mut l = Lifecycle::with(policy(0), vec![false, false]);
    l.on(Event::Started { now });
    assert_eq!(
        l.on(Event::Upgraded { epoch: 1, now }),
        [
            Action::Handshake { epoch: 1, step: 0 },
            Action::Handshake { epoch: 1, step: 1 },
            Action::Live { epoch: 1, conn: 1 },
            Action::State(LinkState::Connected)
        ]
    );
}

/// Every connect failure reason: no close frame on a link that never was,
/// reported as a connect failure (not live), then backoff.
#[test]
fn connect_failures_back_off() {
    let cases = [
        (LinkError::Dns { host: "h".into(), detail: "x".into() }, Reason::Dns),
        (LinkError::Tcp("refused".into()), Reason::Tcp),
        (LinkError::Tls("bad cert".into()), Reason::Tls),
        (LinkError::Timeout(ms(10)), Reason::Timeout),
        (LinkError::Http { status: 404, retry_after: None }, Reason::Http4xx),
        (LinkError::Http { status: 502, retry_after: None }, Reason::Http5xx),
        (LinkError::Http { status: 401, retry_after: None }, Reason::Auth),
        (LinkError::Http { status: 200, retry_after: None }, Reason::Protocol),
        (LinkError::Protocol("subprotocol".into()), Reason::Protocol),
    ];
    for (error, reason) in cases {
        let (mut l, now) = dialing(0);
        assert_eq!(error.reason(), reason);
        let actions = l.on(failed(1, now, error.clone()));
        assert_eq!(
            actions,
            [
                Action::Close(Goodbye::Silent),
                Action::Report { error, live: false },
                Action::State(LinkState::Backoff),
                Action::Wait { epoch: 2, delay: ms(500) },
            ],
            "{reason:?}"
        );
        assert_eq!(l.phase(), &Phase::Backoff { until: now + ms(500), reason });
    }
}

/// A live link lost for every reason: closed with the code that fits,
/// reported as lost (live), then backoff.
#[test]
fn live_links_lost() {
    let cases = [
        (LinkError::Closed { code: Some(1012), reason: "restart".into() }, Goodbye::Code(1012), Reason::Closed),
        (LinkError::Closed { code: None, reason: String::new() }, Goodbye::Empty, Reason::Closed),
        (LinkError::DeadLink(ms(20)), Goodbye::Silent, Reason::DeadLink),
        (LinkError::Idle(ms(20)), Goodbye::Code(1000), Reason::Idle),
        (LinkError::Oversize("big".into()), Goodbye::Code(1009), Reason::Oversize),
        (LinkError::Protocol("rsv".into()), Goodbye::Code(1002), Reason::Protocol),
        (LinkError::InvalidText("utf-8".into()), Goodbye::Code(1007), Reason::Protocol),
        (LinkError::Tcp("eof".into()), Goodbye::Silent, Reason::Tcp),
    ];
    for (error, bye, reason) in cases {
        let (mut l, now) = live();
        assert_eq!(goodbye(&error), bye);
        let actions = l.on(failed(1, now, error.clone()));
        assert_eq!(actions[..2], [Action::Close(bye), Action::Report { error, live: true }], "{reason:?}");
        assert_eq!(actions[2], Action::State(LinkState::Backoff));
        assert_eq!(l.first_message(now + ms(300)), Some(ms(300)), "downtime runs from the loss");
        assert_eq!(l.first_message(now + ms(400)), None, "observed once");
    }
}

/// An auth reply that fails, or no reply in time, during the handshake:
/// close 1000, reason auth, a connect failure.
#[test]
fn handshake_failure() {
    let (mut l, now) = dialing(1);
    l.on(Event::Upgraded { epoch: 1, now });
    let error = LinkError::Auth("rejected".into());
    let actions = l.on(failed(1, now, error.clone()));
    assert_eq!(actions[..2], [Action::Close(Goodbye::Code(1000)), Action::Report { error, live: false }]);
    assert_eq!(l.phase().state(), LinkState::Backoff);
}

/// A step's timeout fails the link only while that step still waits.
#[test]
fn step_timeouts() {
    let (mut l, now) = dialing(1);
    l.on(Event::Upgraded { epoch: 1, now });
    let error = LinkError::Auth("step \"login\": no reply within 5ms".into());
    let timeout = |step| Event::StepTimeout { epoch: 1, step, now, error: error.clone() };
    assert_eq!(l.on(timeout(1)), [], "not the step that waits");
    let actions = l.on(timeout(0));
    assert_eq!(actions[1], Action::Report { error: error.clone(), live: false });

    let (mut l, now) = dialing(1);
    l.on(Event::Upgraded { epoch: 1, now });
    l.on(Event::StepDone { epoch: 1, now });
    let late = Event::StepTimeout { epoch: 1, step: 0, now, error: LinkError::Handshake("late".into()) };
    assert_eq!(l.on(late), [], "answered in time");
    assert_eq!(l.phase().state(), LinkState::Connected);
}

/// Results of an older epoch change nothing: a late upgrade, failure,
/// timer or step reply of an abandoned attempt.
#[test]
fn stale_events_are_ignored() {
    let (mut l, now) = live();
    l.on(failed(1, now, LinkError::Tcp("eof".into())));
    let phase = l.phase().clone();
    for stale in [
        Event::Upgraded { epoch: 1, now },
        failed(1, now, LinkError::DeadLink(ms(1))),
        Event::StepDone { epoch: 1, now },
        Event::BackoffOver { epoch: 1 },
        Event::Stable { epoch: 1 },
    ] {
        assert_eq!(l.on(stale.clone()), [], "{stale:?}");
        assert_eq!(l.phase(), &phase);
    }
    // The current timer goes on to the next attempt, counted as a retry.
    assert_eq!(
        l.on(Event::BackoffOver { epoch: 2 }),
        [Action::State(LinkState::Connecting), Action::Dial { epoch: 3, retry: true }]
    );
    assert_eq!(l.phase(), &Phase::Connecting { attempt: 2 });
}

/// Backoff grows per failure, is honoured at least as long as Retry-After,
/// resets only after the link was stable, and a failed dial takes no `conn`.
#[test]
fn backoff_growth_reset_and_conn_numbers() {
    let (mut l, now) = dialing(0);
    let mut delays = Vec::new();
    for _ in 0..5 {
        let e = l.epoch();
        let actions = l.on(failed(e, now, LinkError::Tcp("refused".into())));
        let Some(Action::Wait { delay, epoch }) = actions.last().cloned() else { panic!("{actions:?}") };
        delays.push(delay);
        l.on(Event::BackoffOver { epoch });
    }
    assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(4000), ms(4000)]);

    let e = l.epoch();
    assert_eq!(
        l.on(Event::Upgraded { epoch: e, now })[0],
        Action::Live { epoch: e, conn: 1 },
        "failed dials take no number"
    );
    // Lost before stable: the delay keeps growing.
    let actions = l.on(failed(e, now, LinkError::Tcp("eof".into())));
    assert_eq!(actions.last(), Some(&Action::Wait { epoch: e + 1, delay: ms(4000) }));
    l.on(Event::BackoffOver { epoch: e + 1 });
    let e = l.epoch();
    assert_eq!(l.on(Event::Upgraded { epoch: e, now })[0], Action::Live { epoch: e, conn: 2 });
    assert_eq!(l.on(Event::Stable { epoch: e }), []);
    let actions = l.on(failed(e, now, LinkError::Http { status: 429, retry_after: Some(Duration::from_secs(7)) }));
    assert_eq!(actions.last(), Some(&Action::Wait { epoch: e + 1, delay: Duration::from_secs(7) }), "Retry-After wins");
    l.on(Event::BackoffOver { epoch: e + 1 });
    let e = l.epoch();
    let actions = l.on(failed(e, now, LinkError::Tcp("refused".into())));
    assert_eq!(actions.last(), Some(&Action::Wait { epoch: e + 1, delay: ms(1000) }), "reset to initial, then x2");
}

/// `max_elapsed` passed: the upstream gives up and stays stopped; nothing
/// after that moves it.
#[test]
fn gives_up_after_max_elapsed() {
    let mut l = Lifecycle::with(policy(100), vec![]);
    let now = Instant::now();
    l.on(Event::Started { now });
    let actions = l.on(failed(1, now, LinkError::Tcp("refused".into())));
    assert_eq!(
        actions,
        [
            Action::Close(Goodbye::Silent),
            Action::Report { error: LinkError::Tcp("refused".into()), live: false },
            Action::GaveUp,
            Action::State(LinkState::Stopped),
        ]
    );
    assert_eq!(l.phase(), &Phase::Stopped { why: Reason::Tcp });
    assert_eq!(l.on(Event::BackoffOver { epoch: 2 }), []);
    assert_eq!(l.on(Event::Started { now }), []);
}

/// Shutdown and reload: a live link is counted as ended and closed 1000;
/// in any other phase the slot just stops. Not retried.
#[test]
fn stop_for_shutdown_and_reload() {
    let (mut l, _) = live();
    assert_eq!(
        l.on(Event::Stop { error: LinkError::Shutdown }),
        [Action::Ended(Reason::Shutdown), Action::Close(Goodbye::Code(1000)), Action::State(LinkState::Stopped)]
    );
    assert_eq!(l.phase(), &Phase::Stopped { why: Reason::Shutdown });

    let (mut l, now) = dialing(0);
    l.on(failed(1, now, LinkError::Tcp("refused".into())));
    assert_eq!(
        l.on(Event::Stop { error: LinkError::Reload }),
        [Action::Close(Goodbye::Silent), Action::State(LinkState::Stopped)]
    );
    assert_eq!(l.on(Event::BackoffOver { epoch: 2 }), [], "the backoff timer of before the stop is stale");
}

/// A caught panic closes 1011, reports reason panic, restarts the actor;
/// the restarted actor backs off before it dials again.
#[test]
fn panic_restarts_then_backs_off() {
    let (mut l, now) = live();
    assert_eq!(
        l.on(Event::Panicked { now }),
        [Action::Close(Goodbye::Code(1011)), Action::Report { error: LinkError::Panic, live: true }, Action::Restart]
    );
    let actions = l.on(Event::Started { now });
    assert_eq!(actions[0], Action::State(LinkState::Backoff));
    assert!(matches!(actions[1], Action::Wait { .. }));
    assert_eq!(l.phase(), &Phase::Backoff { until: now + ms(500), reason: Reason::Panic });
}

/// `break_before_make`: the live link closes 1000 (reason `rotate`) and a
/// new one is dialed; `connecting` and `authenticating` are not shown
/// until the new link is live, but a failure of it is.
#[test]
fn break_before_make_rotation_is_quiet_until_it_fails() {
    let (mut l, now) = live();
    assert_eq!(l.on(Event::Rotate { epoch: 2 }), [], "a stale rotation changes nothing");
    assert_eq!(
        l.on(Event::Rotate { epoch: 1 }),
        [Action::Ended(Reason::Rotate), Action::Close(Goodbye::Code(1000)), Action::Dial { epoch: 2, retry: false }]
    );
    assert_eq!(l.shown(), LinkState::Connected, "still shown connected");
    assert_eq!(l.phase().state(), LinkState::Connecting);
    assert_eq!(
        l.on(Event::Upgraded { epoch: 2, now }),
        [Action::Live { epoch: 2, conn: 2 }, Action::State(LinkState::Connected)]
    );

    let (mut l, now) = live();
    l.on(Event::Rotate { epoch: 1 });
    let actions = l.on(failed(2, now, LinkError::Tcp("refused".into())));
    assert!(actions.contains(&Action::State(LinkState::Backoff)), "{actions:?}");
    assert_eq!(l.shown(), LinkState::Backoff);
}

/// Slots of one upstream have disjoint epochs and share the link numbers.
#[test]
fn slots_have_their_own_epochs_and_share_conns() {
    let cfg = crate::config::UpstreamConfig::new("a", "ws://h/");
    let mut l = Lifecycle::for_slot(&cfg, 3);
    assert_eq!(Lifecycle::slot_of(l.epoch()), 3);
    let now = Instant::now();
    let dial = l.on(Event::Started { now });
    let Some(Action::Dial { epoch, .. }) = dial.last().cloned() else { panic!("{dial:?}") };
    assert_eq!(Lifecycle::slot_of(epoch), 3);
    l.set_conns(7);
    assert_eq!(l.on(Event::Upgraded { epoch, now })[0], Action::Live { epoch, conn: 8 });
    assert_eq!(l.conns(), 8);
    assert_eq!(Event::Rotate { epoch }.epoch(), Some(epoch));
    assert_eq!(Event::Started { now }.epoch(), None);
}
