//! The switch, as table: a driver that does what the actor does with
//! [`Held`] (`rotation.rs`), fed scripts of messages from the old and the
//! new link, checked for what is delivered, in which order, and why the
//! switch happened.

use super::*;
use crate::config::SequenceConfig;
use crate::upstream::dedupe::{Dedupe, Identity};

const OLD: u8 = 0;
const NEW: u8 = 1;

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// The old link brought number N.
    Old(u64),
    /// The new link brought number N.
    New(u64),
    /// `rotate_overlap` passed.
    Timeout,
    /// The old link died.
    OldDies,
}
use Ev::*;

/// The actor's glue around [`Held`], for numbers.
struct Sim {
    ident: Identity,
    dedupe: Dedupe,
    /// The new link brought data.
    started: bool,
    held: Option<Held<u64>>,
    /// The old link is still read.
    old_open: bool,
    max_len: usize,
    max_bytes: usize,
    out: Vec<u64>,
    /// The identity of the old link's latest message.
    old_last: Option<u64>,
    copies: usize,
    why: Option<Why>,
}

impl Sim {
    fn new(by_sequence: bool, max_len: usize, max_bytes: usize) -> Sim {
        let cfg: SequenceConfig = toml::from_str("pointer = \"/seq\"").unwrap();
        let ident = Identity::new(by_sequence.then_some(&cfg));
        Sim {
            ident,
            dedupe: Dedupe::new(64),
            started: false,
            held: None,
            old_open: true,
            max_len,
            max_bytes,
            out: Vec::new(),
            old_last: None,
            copies: 0,
            why: None,
        }
    }

    /// Number N's payload, the same on both links.
    fn raw(n: u64) -> Vec<u8> {
        format!(r#"{{"seq":{n},"t":{n}}}"#).into_bytes()
    }

    fn switch(&mut self, why: Why) {
        if let Some(held) = self.held.take() {
            let f = held.flush(&mut self.dedupe);
            self.out.extend(f.deliver);
            self.copies += f.copies;
            self.why = Some(why);
            self.old_open = false;
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Old(n) if self.old_open => {
                let id = self.ident.of(&Self::raw(n));
                self.old_last = Some(id);
                match self.dedupe.observe(id, OLD, true) {
                    Verdict::First => self.out.push(n),
                    Verdict::Copy { .. } => {
                        self.copies += 1;
                        self.old_open = self.held.is_some(); // overlap: the old link is closed
                    }
                }
                if self.held.as_ref().is_some_and(|h| h.meets(id)) {
                    self.switch(Why::Met);
                }
            }
            Old(_) => {}
            New(n) => {
                let raw = Self::raw(n);
                let id = self.ident.of(&raw);
                if !self.started {
                    self.started = true;
                    self.held = Held::begin(&self.dedupe, id, NEW, self.max_len, self.max_bytes);
                }
                if let Some(h) = self.held.as_mut() {
                    match h.push(id, raw.len(), n) {
                        Ok(()) => return,
                        Err(_) => self.switch(Why::Full),
                    }
                }
                match self.dedupe.observe(id, NEW, self.old_open) {
                    Verdict::First => self.out.push(n),
                    Verdict::Copy { .. } => {
                        self.copies += 1;
                        // Caught up with the old link's latest: it is closed.
                        self.old_open &= self.old_last != Some(id);
                    }
                }
            }
            Timeout => self.switch(Why::Overlap),
            OldDies => {
                self.switch(Why::OldGone);
                self.old_open = false;
            }
        }
    }
}

/// (name, by sequence, max messages held, script, delivered, why, copies)
type Case = (&'static str, bool, usize, &'static [Ev], &'static [u64], Option<Why>, usize);

const CASES: &[Case] = &[
    (
        "new link ahead, met by sequence",
        true,
        16,
        &[Old(1), Old(2), New(5), Old(3), New(6), Old(4), New(7), Old(5), Old(6), New(8)],
        &[1, 2, 3, 4, 5, 6, 7, 8],
        Some(Why::Met),
        1,
    ),
    (
        "new link ahead, met by payload hash",
        false,
        16,
        &[Old(1), New(4), Old(2), New(5), Old(3), Old(4), New(6)],
        &[1, 2, 3, 4, 5, 6],
        Some(Why::Met),
        1,
    ),
    (
        "level, the new copy first: held until the old copy",
        true,
        16,
        &[Old(1), New(2), Old(2), New(3)],
        &[1, 2, 3],
        Some(Why::Met),
        1,
    ),
    (
        "level, the old copy first: first copy wins, no hold",
        true,
        16,
        &[Old(1), Old(2), New(2), New(3), Old(3)],
        &[1, 2, 3],
        None,
        1,
    ),
    (
        "new link behind: first copy wins, no hold",
        false,
        16,
        &[Old(1), Old(2), Old(3), Old(4), New(2), New(3), Old(5), New(4), New(5), New(6), Old(6)],
        &[1, 2, 3, 4, 5, 6],
        None,
        4,
    ),
    (
        "rotate_overlap passes before the streams meet",
        true,
        16,
        &[Old(1), New(10), New(11), Old(2), Timeout, New(12), Old(3)],
        &[1, 2, 10, 11, 12],
        Some(Why::Overlap),
        0,
    ),
    (
        "the old link dies before the streams meet",
        true,
        16,
        &[Old(1), New(4), Old(2), New(5), Old(3), OldDies, New(6), Old(4)],
        &[1, 2, 3, 4, 5, 6],
        Some(Why::OldGone),
        0,
    ),
    (
        "the buffer fills before the streams meet",
        true,
        2,
        &[Old(1), New(10), New(11), Old(2), New(12), New(13), Old(3)],
        &[1, 2, 10, 11, 12, 13],
        Some(Why::Full),
        0,
    ),
    (
        "held before the meeting point and never brought by the old link: delivered, not dropped",
        true,
        16,
        &[Old(1), New(7), New(3), Old(2), Old(3), New(4)],
        &[1, 2, 3, 7, 4],
        Some(Why::Met),
        1,
    ),
];

#[test]
fn switch_table() {
    for &(name, by_sequence, max_len, script, delivered, why, copies) in CASES {
        let mut sim = Sim::new(by_sequence, max_len, MAX_HELD_BYTES);
        for &ev in script {
            sim.step(ev);
        }
        assert_eq!(sim.out, delivered, "{name}: delivered");
        assert_eq!(sim.why, why, "{name}: why");
        assert_eq!(sim.copies, copies, "{name}: copies");
    }
}

/// The byte bound holds as the message bound does; one message is always held.
#[test]
fn bytes_are_bounded() {
    let d = Dedupe::new(8);
    let mut h: Held<u32> = Held::begin(&d, 1, NEW, 100, 10).expect("unknown: held");
    assert_eq!(h.push(1, 25, 1), Ok(()), "a first message larger than the bound is still held");
    assert_eq!(h.push(2, 1, 2), Err(2));
    assert_eq!((h.count(), h.bytes()), (1, 25));
    let mut h: Held<u32> = Held::begin(&d, 1, NEW, 100, 10).unwrap();
    for i in 0..5 {
        assert_eq!(h.push(i, 2, i as u32), Ok(()));
    }
    assert_eq!(h.push(9, 1, 9), Err(9));
    assert!(h.meets(3) && !h.meets(9));
}

/// A first message another link already brought starts no hold.
#[test]
fn known_first_message_starts_no_hold() {
    let mut d = Dedupe::new(8);
    d.observe(5, OLD, false);
    assert!(Held::<u8>::begin(&d, 5, NEW, 8, 1024).is_none());
    assert!(Held::<u8>::begin(&d, 6, NEW, 8, 1024).is_some());
    assert!(Held::<u8>::begin(&d, 5, OLD, 8, 1024).is_some(), "its own lane's record is not another link's");
}
