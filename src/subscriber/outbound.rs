//! The write side of a `/ws` session: the HTTP response body.
//!
//! actix-web's HTTP/1 dispatcher polls a response body only while its write
//! buffer holds less than `h1_write_buffer_size` (32 KiB), then writes the
//! buffer to the socket. So [`Outbound`] pulls from the subscriber's hub
//! queue only when polled, in bounded batches, and yields the message's
//! shared frame (`Delivery::frame`, built once for every subscriber): the
//! socket's readiness is what drains the queue, and a session holds at most
//! one batch beside the queue, so memory under any burst is bounded by the
//! queues (`queue_capacity`, `queue_bytes`) and the socket buffers. No lock
//! is held while the dispatcher writes; it writes many frames per syscall.
//!
//! Control frames (pongs, pings, acks, errors, the close) come from the
//! [`Session`](super::session::Session) actor through the [`Outbox`]; both
//! run on the same worker thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix::Recipient;
use bytes::Bytes;
use futures_core::Stream;

use super::session::BodyEnded;
use crate::fanout::frame;
use crate::fanout::{Closed, Item, SubQueue, Taken};
use crate::model::close;
use crate::telemetry::{Left, SubscriberMetrics};

/// Items taken from the queue per batch at most.
const BATCH_ITEMS: usize = 256;
/// Message bytes taken from the queue per batch, about (the dispatcher's
/// write buffer is 32 KiB).
const BATCH_BYTES: usize = 32 * 1024;
/// Control frames (pongs, acks, errors) waiting for the socket before the
/// session stops reading the client's frames (each frame is answered by at
/// most one): a client that sends without reading the answers is held back
/// by TCP, like any reader that stops reading.
pub const MAX_CONTROL: usize = 256;
/// Frames the outbox takes at most: [`MAX_CONTROL`] answers plus room for
/// the session's own pings; past it the session is closed as slow.
const MAX_OUTBOX: usize = MAX_CONTROL + 16;

/// Control frames from the session actor to the body, on one thread.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Pongs, pings, acks, errors, in order; at most [`MAX_CONTROL`].
    frames: VecDeque<Bytes>,
    /// The close frame: written after `frames`, then the body ends.
    close: Option<Bytes>,
    /// The session stopped without a close frame (the client is gone): end.
    end: bool,
    /// The body, waiting for a frame.
    waker: Option<Waker>,
    /// The client's frame reader, waiting for room (see [`MAX_CONTROL`]).
    reader: Option<Waker>,
    /// Messages taken from the queue but never written (the body was
    /// dropped first), to be counted once the session knows why it ended.
    unsent: u64,
    /// Why the session ended, once its actor stopped.
    left: Option<Left>,
    /// Upstreams the client resumed (SPEC §14): their messages still in
    /// the body's batch are not written (the replay sends them in order).
    resumed: Vec<Arc<str>>,
}

/// The outbox as the actor and the body share it.
pub type SharedOutbox = Rc<RefCell<Outbox>>;

impl Outbox {
    /// Queues a control frame; false when the outbox is full.
    pub fn push(&mut self, frame: Bytes) -> bool {
        if self.frames.len() >= MAX_OUTBOX {
            return false;
        }
        self.frames.push_back(frame);
        self.wake();
        true
    }

    /// The client resumed `upstream`: what the body took of it before is
    /// not written (the replay sends it again, in order).
    pub fn resumed(&mut self, upstream: &str) {
        self.resumed.push(Arc::from(upstream));
    }

    /// The last frame; later frames and data are not written.
    pub fn close(&mut self, frame: Bytes) {
        if self.close.is_none() {
            self.close = Some(frame);
        }
        self.wake();
    }

    /// The session stopped for `left`: the body ends after what is queued
    /// here, and messages it took but never wrote are counted now (or when
    /// it drops, if it still runs).
    pub fn session_stopped(&mut self, left: Left, metrics: &SubscriberMetrics) {
        self.end = true;
        self.left = Some(left);
        count_unsent(&mut self.unsent, left, metrics);
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// True when the client's next frame may be read: fewer than
    /// [`MAX_CONTROL`] answers wait. Otherwise `reader` is woken once the
    /// body has written some.
    pub fn poll_room(&mut self, reader: &Waker) -> bool {
        if self.frames.len() < MAX_CONTROL {
            return true;
        }
        self.reader = Some(reader.clone());
        false
    }
}

fn count_unsent(unsent: &mut u64, left: Left, metrics: &SubscriberMetrics) {
    if let Some(reason) = left.leftovers() {
        metrics.dropped(reason, *unsent);
    }
    *unsent = 0;
}

/// The response body of one `/ws` session.
pub struct Outbound {
    queue: Arc<SubQueue>,
    outbox: SharedOutbox,
    /// `format=raw`: the raw frame of each message, else the envelope frame.
    raw: bool,
    /// Taken from the queue, written up to `next`; at most one batch.
    batch: Vec<Item>,
    next: usize,
    metrics: SubscriberMetrics,
    /// Told once when the queue closed or the body is gone.
    session: Option<Recipient<BodyEnded>>,
    /// The close frame was yielded: the body ends.
    done: bool,
}

impl Outbound {
    /// The body for a session whose actor is `session`.
    pub fn new(
        queue: Arc<SubQueue>,
        outbox: SharedOutbox,
        raw: bool,
        metrics: SubscriberMetrics,
        session: Recipient<BodyEnded>,
    ) -> Self {
        Outbound { queue, outbox, raw, batch: Vec::new(), next: 0, metrics, session: Some(session), done: false }
    }

    /// The frame of the next item of the batch, if any is left.
    fn next_frame(&mut self) -> Option<Bytes> {
        let item = self.batch.get(self.next)?;
        self.next += 1;
        let frame = match item {
            Item::Message(d) => d.frame(self.raw).clone(),
            Item::Event(e) => frame::frame(frame::TEXT, e.as_bytes()),
        };
        if self.next == self.batch.len() {
            // The batch is in the dispatcher's buffer: delivered.
            let received = self.batch.iter().filter_map(|i| match i {
                Item::Message(d) => Some(d.msg.received),
                Item::Event(_) => None,
            });
            self.metrics.delivered(received);
            // Capacity kept: no allocation per batch.
            self.batch.clear();
            self.next = 0;
        }
        Some(frame)
    }

    /// Drops the unwritten messages of `upstreams` from the batch.
    fn forget(&mut self, upstreams: &[Arc<str>]) {
        let stale = |i: &Item| matches!(i, Item::Message(d) if upstreams.contains(&d.msg.upstream));
        let mut at = self.next;
        while at < self.batch.len() {
            if stale(&self.batch[at]) {
                self.batch.remove(at);
            } else {
                at += 1;
            }
        }
    }

    fn tell_session(&mut self, closed: Option<Closed>) {
        if let Some(s) = self.session.take() {
            s.do_send(BodyEnded(closed));
        }
    }
}

impl Stream for Outbound {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let resumed = std::mem::take(&mut this.outbox.borrow_mut().resumed);
        if !resumed.is_empty() {
            this.forget(&resumed);
        }
        {
            let mut out = this.outbox.borrow_mut();
            if let Some(f) = out.frames.pop_front() {
                if out.frames.len() < MAX_CONTROL / 2 {
                    if let Some(r) = out.reader.take() {
                        r.wake();
                    }
                }
                return Poll::Ready(Some(Ok(f)));
            }
            if let Some(f) = out.close.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(f)));
            }
            if out.end {
                this.done = true;
                return Poll::Ready(None);
            }
        }
        if let Some(f) = this.next_frame() {
            return Poll::Ready(Some(Ok(f)));
        }
        match this.queue.poll_take(cx, BATCH_ITEMS, BATCH_BYTES, &mut this.batch) {
            Poll::Ready(Taken::Items) => match this.next_frame() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                // Unreachable (Items moves at least one item); end cleanly.
                None => Poll::Ready(None),
            },
            Poll::Ready(Taken::Closed(why)) => {
                this.done = true;
                this.tell_session(Some(why));
                let f = match why {
                    Closed::Slow => frame::close(close::POLICY, "slow consumer"),
                    Closed::Shutdown | Closed::Reload => frame::close(close::GOING_AWAY, ""),
                };
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Taken::Finished) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.outbox.borrow_mut().waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // The connection is gone (or the close was written): what was taken
        // and not written is lost; the session counts it by why it ended.
        let unsent = self.batch[self.next..].iter().filter(|i| matches!(i, Item::Message(_))).count() as u64;
        {
            let mut out = self.outbox.borrow_mut();
            let out = &mut *out;
            out.unsent += unsent;
            if let Some(left) = out.left {
                count_unsent(&mut out.unsent, left, &self.metrics);
            }
        }
        self.tell_session(None);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;
    use crate::config::Overflow;
    use crate::fanout::Delivery;
    use crate::telemetry::Metrics;

    /// Stands in for the session actor: records what the body told it.
    struct Witness(Rc<RefCell<Vec<Option<Closed>>>>);
    impl actix::Actor for Witness {
        type Context = actix::Context<Self>;
    }
    impl actix::Handler<BodyEnded> for Witness {
        type Result = ();
        fn handle(&mut self, ended: BodyEnded, _: &mut Self::Context) {
            self.0.borrow_mut().push(ended.0);
        }
    }

    fn delivery(seq: u64) -> Arc<Delivery> {
        Delivery::json_for_test("feed", "", format!("{{\"n\":{seq}}}"), seq)
    }

    /// The body takes one bounded batch per pull and yields each message's
    /// shared frame (the very buffer in the Delivery, no copy); control
    /// frames go first; the queue's close becomes a 1001 close frame, the
    /// last thing written, and the session is told.
    #[actix_rt::test]
    async fn pulls_bounded_batches_of_shared_frames() {
        use actix::Actor as _;
        let metrics = Metrics::new().subscriber("websocket");
        let queue = SubQueue::new(10_000, Overflow::DropOldest, false, metrics.clone());
        let sent: Vec<_> = (1..=1000).map(delivery).collect();
        for d in &sent {
            queue.push(d);
        }
        let told = Rc::new(RefCell::new(Vec::new()));
        let witness = Witness(Rc::clone(&told)).start();
        let outbox = SharedOutbox::default();
        let mut body = Outbound::new(Arc::clone(&queue), Rc::clone(&outbox), false, metrics, witness.recipient());
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut next = |body: &mut Outbound| match Pin::new(body).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(f))) => Some(f),
            Poll::Ready(None) => None,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => panic!("pending"),
        };

        let first = next(&mut body).expect("a frame");
        assert_eq!(first.as_ptr(), sent[0].frame(false).as_ptr(), "the shared frame, not a copy");
        assert_eq!(queue.len(), 1000 - BATCH_ITEMS, "one batch taken, the rest still queued");
        assert!(outbox.borrow_mut().push(Bytes::from_static(b"pong")));
        assert_eq!(&next(&mut body).expect("the control frame")[..], b"pong");
        for d in &sent[1..] {
            assert_eq!(next(&mut body).expect("a frame").as_ptr(), d.frame(false).as_ptr());
        }
        queue.close(Closed::Shutdown);
        assert_eq!(&next(&mut body).expect("the close")[..], &frame::close(close::GOING_AWAY, "")[..]);
        assert!(next(&mut body).is_none());
        drop(body);
        let told_soon = async {
            while told.borrow().is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), told_soon).await.expect("the session was told");
        assert_eq!(told.borrow()[0], Some(Closed::Shutdown));
    }
}
