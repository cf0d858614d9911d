//! A tiny actor on the arbiter that runs the upstream actors. `/healthz`
//! sends it a [`Probe`]: if that arbiter is blocked or gone, the probe times
//! out and the process reports itself unhealthy.

use actix::prelude::*;

/// A liveness probe.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Probe;

/// Answers probes.
#[derive(Debug, Default)]
pub struct Watchdog;

impl Actor for Watchdog {
    type Context = Context<Self>;
}

impl Handler<Probe> for Watchdog {
    type Result = ();

    fn handle(&mut self, _: Probe, _: &mut Self::Context) {}
}
