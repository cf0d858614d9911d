//! Replay requests (SPEC §14): `/ws?since=a:1234,b:99&run=ID` and the
//! `resume` op, and how the hub starts one for a subscriber.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::history::Cursor;
use super::hub::{Filter, Table};
use super::message::reset_event;
use super::queue::SubQueue;

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
        .collect()
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
    pub(super) fn start_replay(&self, queue: &Arc<SubQueue>, filter: &Filter, r: &Resume, live: bool) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `since` takes upstream:seq pairs; anything else names the parameter.
    #[test]
    fn since_syntax() {
        let got = parse_since("a:12,b-c:0", Some("r1")).unwrap();
        assert_eq!(got[0], Resume { upstream: "a".into(), after: 12, run: Some("r1".into()) });
        assert_eq!(got[1].upstream, "b-c");
        for bad in ["", "a", "a:", ":5", "a:x", "a:1,", "a:-1"] {
            let e = parse_since(bad, None).unwrap_err();
            assert!(e.starts_with("since: "), "{bad:?}: {e}");
        }
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod hub_tests;
