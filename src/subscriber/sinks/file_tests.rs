//! Tests of the file sink's write path and its retry in `LineSink`, with a
//! real file in a temporary directory behind an injected fault.

use std::fs;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;

use super::super::{start_lines, Abandon, Flush, LineSink, LINE_QUEUE_CAPACITY};
use super::*;
use crate::config::Overflow;
use crate::fanout::{Closed, Filter, Hub, SubQueue};
use crate::telemetry::{DropReason, Metrics};

/// What the injected fault does to the next writes.
#[derive(Debug, Default)]
struct Fault {
    /// `Some(n)`: accept `n` more bytes, then fail every write with
    /// "no space left" until the test sets `None` (room made).
    accept: Option<u64>,
    /// The next `set_len` fails once.
    cut_fails: bool,
    /// Writes refused so far.
    refused: usize,
}

/// A real file behind a [`Fault`].
struct Faulty {
    /// The real file, opened for appending.
    file: File,
    /// Shared with the test, which clears it.
    fault: Arc<Mutex<Fault>>,
}

impl Write for Faulty {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut f = self.fault.lock().unwrap();
        match f.accept {
            None => self.file.write(data),
            Some(0) => {
                f.refused += 1;
                Err(io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device"))
            }
            Some(n) => {
                let took = self.file.write(&data[..data.len().min(n as usize)])?;
                f.accept = Some(n - took as u64);
                Ok(took)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Target for Faulty {
    fn len(&self) -> io::Result<u64> {
        Target::len(&self.file)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if std::mem::take(&mut self.fault.lock().unwrap().cut_fails) {
            return Err(io::Error::other("injected: cannot truncate"));
        }
        self.file.set_len(len)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

fn faulty(path: &Path, fault: &Arc<Mutex<Fault>>) -> FileLines<Faulty> {
    let fault = Arc::clone(fault);
    let open: Opener<Faulty> = Box::new(move |p| Ok(Faulty { file: open_append(p)?, fault: Arc::clone(&fault) }));
    FileLines::with_opener(path, open).unwrap()
}

fn delivery(n: u64) -> Arc<Delivery> {
    Delivery::json_for_test("u", "t", format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(n as usize * 7)), n)
}

/// The file's lines, each checked to be a whole JSON document.
fn lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line: {text:?}");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"))).collect()
}

/// The `seq` of each line after the first (a line that was there before).
fn seqs(path: &Path) -> Vec<u64> {
    let all = lines(path);
    assert_eq!(all[0], serde_json::json!({ "before": true }));
    all[1..].iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

fn series(m: &Metrics, name: &str) -> f64 {
    let text = String::from_utf8(m.encode()).unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// A short write anywhere in a batch (first line, mid-line, at a line end,
/// the last byte) leaves only whole lines after the file's earlier content,
/// reports how many are in; writing the rest then gives every line once.
#[test]
fn short_write_leaves_only_whole_lines() {
    let batch: Vec<Arc<Delivery>> = (1..=5).map(delivery).collect();
    let len = |i: usize| batch[i].envelope().len() as u64 + 1;
    let total: u64 = (0..5).map(len).sum();
    let cases = [(0, 0), (5, 0), (len(0), 1), (len(0) + 3, 1), (len(0) + len(1) + len(2) / 2, 2), (total - 1, 4)];
    for (accept, whole) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        fs::write(&path, "{\"before\":true}\n").unwrap();
        let fault = Arc::new(Mutex::new(Fault { accept: Some(accept), ..Fault::default() }));
        let mut out = faulty(&path, &fault);
        let err = out.write_batch(&batch).unwrap_err();
        assert_eq!(err.written, whole, "accept {accept}");
        assert_eq!(err.error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(seqs(&path), (1..=whole as u64).collect::<Vec<_>>(), "accept {accept}");
        fault.lock().unwrap().accept = None;
        out.write_batch(&batch[whole..]).unwrap();
        assert_eq!(seqs(&path), [1, 2, 3, 4, 5], "accept {accept}");
    }
}

/// A partial line that cannot be cut at once is cut before the next write.
#[test]
fn failed_cut_is_mended_before_the_next_write() {
    let batch: Vec<Arc<Delivery>> = (1..=3).map(delivery).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    fs::write(&path, "{\"before\":true}\n").unwrap();
    let first = batch[0].envelope().len() as u64 + 1;
    let fault = Arc::new(Mutex::new(Fault { accept: Some(first + 4), cut_fails: true, refused: 0 }));
    let mut out = faulty(&path, &fault);
    assert_eq!(out.write_batch(&batch).unwrap_err().written, 1);
    assert_eq!(out.torn, 4);
    fault.lock().unwrap().accept = None;
    out.write_batch(&batch[1..]).unwrap();
    assert_eq!(seqs(&path), [1, 2, 3]);
}

/// Polls `cond` every 10 ms until it holds, failing after 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a test holds of a running sink.
struct Running {
    /// The sink actor.
    addr: Addr<LineSink<FileLines<Faulty>>>,
    /// Its counters.
    metrics: Arc<Metrics>,
    /// Its queue, to see what it has not taken.
    queue: Arc<SubQueue>,
    /// Publishes more messages (seq continues).
    publisher: crate::fanout::Publisher,
}

/// A sink over a faulty file, started with `n` messages already queued.
fn sink_with(path: &Path, fault: &Arc<Mutex<Fault>>, n: u64) -> Running {
    let metrics = Metrics::new();
    let hub = Hub::new();
    let publisher = hub.publisher("u");
    let queue = SubQueue::new(LINE_QUEUE_CAPACITY, Overflow::DropOldest, false, metrics.subscriber("file"));
    let sub = hub.subscribe(Arc::clone(&queue), Filter::from_lists(&[], &[], usize::MAX).unwrap()).unwrap();
    for d in (1..=n).map(delivery) {
        publisher.publish(d.msg.clone());
    }
    // Queued before the sink starts: its first drain is one batch of `n`.
    let addr = start_lines(LineSink::new(faulty(path, fault), Arc::clone(&queue), sub));
    Running { addr, metrics, queue, publisher }
}

const DROPPED_ERROR: &str = r#"wsgate_subscriber_dropped_total{kind="file",reason="error"}"#;
const DROPPED_SHUTDOWN: &str = r#"wsgate_subscriber_dropped_total{kind="file",reason="shutdown"}"#;
const WRITTEN: &str = r#"wsgate_subscriber_messages_total{kind="file"}"#;

/// Disk full in the middle of a batch of 5: the file holds only whole
/// lines while the fault lasts (retries included) and the sink takes
/// nothing more from its queue; once there is room the retry writes the
/// rest, then what was queued meanwhile, every line exactly once and in
/// order, nothing counted as dropped.
#[actix_rt::test]
async fn sink_retries_the_rest_after_a_short_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    fs::write(&path, "{\"before\":true}\n").unwrap();
    let first_two = (1..=2).map(|n| delivery(n).envelope().len() as u64 + 1).sum::<u64>();
    let fault = Arc::new(Mutex::new(Fault { accept: Some(first_two + 5), ..Fault::default() }));
    let Running { addr, metrics, queue, publisher } = sink_with(&path, &fault, 5);

    // The first failure and one failed retry (100 ms later) leave 2 whole lines.
    until("a failed retry", || fault.lock().unwrap().refused >= 2).await;
    assert_eq!(seqs(&path), [1, 2]);
    assert_eq!(series(&metrics, WRITTEN), 2.0);
    assert_eq!(series(&metrics, DROPPED_ERROR), 0.0);

    // Queued during the backoff: left in the queue by the next failed retry.
    for n in 6..=8 {
        publisher.publish(delivery(n).msg.clone());
    }
    until("a second failed retry", || fault.lock().unwrap().refused >= 3).await;
    assert_eq!(queue.len(), 3);
    assert_eq!(seqs(&path), [1, 2]);

    fault.lock().unwrap().accept = None;
    until("all lines written", || series(&metrics, WRITTEN) == 8.0).await;
    assert_eq!(seqs(&path), [1, 2, 3, 4, 5, 6, 7, 8]);
    addr.send(Flush(Closed::Shutdown)).await.unwrap();
    assert_eq!(seqs(&path), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(series(&metrics, DROPPED_ERROR), 0.0);
}

/// Stopped while a batch waits for its retry (the disk stays full), the
/// sink counts exactly the unwritten messages as dropped (reason `shutdown`).
#[actix_rt::test]
async fn abandon_counts_only_the_unwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    fs::write(&path, "{\"before\":true}\n").unwrap();
    let first = delivery(1).envelope().len() as u64 + 1;
    let fault = Arc::new(Mutex::new(Fault { accept: Some(first + 1), ..Fault::default() }));
    let Running { addr, metrics, .. } = sink_with(&path, &fault, 4);
    until("the first failure", || fault.lock().unwrap().refused >= 1).await;
    addr.send(Abandon(DropReason::Shutdown)).await.unwrap();
    until("the loss counted", || series(&metrics, DROPPED_SHUTDOWN) == 3.0).await;
    assert_eq!(seqs(&path), [1]);
    assert_eq!(series(&metrics, WRITTEN), 1.0);
}
