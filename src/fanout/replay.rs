//! Replay requests (SPEC §14): `/ws?since=a:1234,b:99&run=ID` and the
//! `resume` op, and how the hub starts one for a subscriber.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::history::Cursor;
use super::hub::{Filter, Table};
use super::message::reset_event;
use super::queue::{Entry, SubQueue};
use crate::telemetry::DropReason;

/// Replay `upstream` after seq `after`; `run` is the run the subscriber saw
/// those seqs in (`None`: this run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The upstream's name.
    pub upstream: String,
    /// The last seq the subscriber has.
    pub after: u64,
    /// The run id from its `hello` event.
    pub run: Option<String>,
}

/// Parses the `since` query value (`a:1234,b:99`), every pair with `run`.
/// The error names the parameter and what is wrong.
pub fn parse_since(text: &str, run: Option<&str>) -> Result<Vec<Resume>, String> {
    text.split(',')
        .map(|pair| {
            let (upstream, seq) = pair.rsplit_once(':').filter(|(u, _)| !u.is_empty()).ok_or_else(|| {
                format!("since: expected upstream:seq pairs separated by commas (e.g. since=a:1234,b:99), got {pair:?}")
            })?;
            let after =
                seq.parse::<u64>().map_err(|_| format!("since: invalid seq {seq:?} for upstream {upstream:?}"))?;
            Ok(Resume { upstream: upstream.to_string(), after, run: run.map(str::to_string) })
        })
        .collect::<Result<Vec<_>, String>>()
        .and_then(|pairs| check_since(&pairs).map(|()| pairs))
}

/// Refuses a `since` that names an upstream twice (it would replay twice).
pub fn check_since(pairs: &[Resume]) -> Result<(), String> {
    for (i, r) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|p| p.upstream == r.upstream) {
            return Err(format!("since: upstream {:?} named more than once", r.upstream));
        }
    }
    Ok(())
}

impl Table {
    /// Starts the replay `r` for a subscriber (under the write lock, so the
    /// replay ends exactly where its live messages begin): a `reset` event
    /// for another run; nothing for an upstream it does not follow or a
    /// seq at or beyond the current one; else a replay marker in its queue.
    ///
    /// For a `resume` on a live subscription (`live`), the messages of that
    /// upstream still queued leave the queue first (the replay sends them
    /// again in order); returns true when that happened.
    ///
    /// With replay off (`history = 0`) it does nothing: no replay, no gap.
    pub(super) fn start_replay(&self, queue: &Arc<SubQueue>, filter: &Filter, r: &Resume, live: bool) -> bool {
        if self.history.0 == 0 {
            return false;
        }
        let Some((slot, _)) = self.upstreams.iter().find(|(s, _)| *s.name == *r.upstream) else { return false };
        if !filter.follows(&slot.name) {
            return false;
        }
        let this_run = self.run.as_ref().map(|run| run.as_str());
        if r.run.as_deref().is_some_and(|run| Some(run) != this_run) {
            queue.push_event(reset_event(&slot.name));
            return false;
        }
        if live {
            queue.forget_upstream(&slot.name);
        }
        let end = slot.seq.load(Ordering::Relaxed);
        if r.after >= end {
            return live;
        }
        let cursor =
            Cursor::new(Arc::clone(&slot.name), Arc::clone(&slot.history), r.after, end, filter.clone(), queue.events);
        queue.push_replay(cursor);
        live
    }
}

impl SubQueue {
    /// Queues the start of a replay (envelope or raw subscribers): what the
    /// cursor replays comes at this point of the stream. Counts as an event.
    pub(super) fn push_replay(&self, cursor: Cursor) -> bool {
        self.push_entry(Entry::Replay(Box::new(cursor)), None)
    }

    /// A resume (SPEC §14): the queued messages of `upstream` (all at or
    /// below the replay's end) leave the queue, uncounted: the replay sends
    /// them again, or its gap event counts them. Their pending gap counts go too.
    pub(super) fn forget_upstream(&self, upstream: &str) {
        let mut g = self.lock();
        let g = &mut *g;
        g.missed.retain(|(u, _)| &**u != upstream);
        g.missed_tail.retain(|(u, _)| &**u != upstream);
        g.replayed.retain(|(u, _)| &**u != upstream);
        g.drop_replays(upstream);
        let mut removed = false;
        for at in 0..g.items.len() {
            if matches!(&g.items[at], Entry::Message(d) if &*d.msg.upstream == upstream) {
                g.tombstone(at);
                removed = true;
            }
        }
        if removed {
            if let Some(c) = g.conflation.as_mut() {
                let held = g.items.iter().enumerate().filter_map(|(i, e)| match e {
                    Entry::Message(d) => Some((i, &**d)),
                    _ => None,
                });
                c.rebuild(0, held);
            }
            g.compact();
        }
    }

    /// `upstream` was removed (reload): its replays go (their unsent live
    /// messages counted as dropped for the reload) and so do the marks of
    /// what its replays sent: a re-added upstream's seqs are new.
    pub(super) fn forget_removed(&self, upstream: &str) {
        let unsent = {
            let mut g = self.lock();
            g.replayed.retain(|(u, _)| &**u != upstream);
            g.drop_replays(upstream)
        };
        self.metrics().dropped(DropReason::Reload, unsent);
    }

    /// A filter change: live messages join no replay any more (the replays
    /// filter with the filter they started with).
    pub(super) fn stop_joining(&self) {
        self.lock().stop_joining(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `since` takes upstream:seq pairs; anything else names the parameter.
    #[test]
    fn since_syntax() {
        let got = parse_since("a:12,b-c:0", Some("r1")).unwrap();
        assert_eq!(got[0], Resume { upstream: "a".into(), after: 12, run: Some("r1".into()) });
        assert_eq!(got[1].upstream, "b-c");
        for bad in ["", "a", "a:", ":5", "a:x", "a:1,", "a:-1", "a:10,a:10", "a:1,b:2,a:3"] {
            let e = parse_since(bad, None).unwrap_err();
            assert!(e.starts_with("since: "), "{bad:?}: {e}");
        }
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod hub_tests;
