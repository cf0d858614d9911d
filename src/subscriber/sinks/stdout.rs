//! The `stdout` sink: JSON lines on the process's standard output, which
//! this sink owns (logs always go to stderr, SPEC §10a).

use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use super::{discard, BatchError, Lines, OnError};
use crate::fanout::Delivery;

/// Buffer between the envelopes and the stdout pipe; flushed after each batch.
const BUFFER: usize = 64 * 1024;

/// Standard output as a [`Lines`] target.
pub(super) struct StdoutLines {
    /// Batches are assembled here and written with few syscalls (stdout's
    /// own line buffering would make one write per message).
    out: BufWriter<io::Stdout>,
}

impl StdoutLines {
    /// The process's stdout.
    pub(super) fn new() -> Self {
        StdoutLines { out: BufWriter::with_capacity(BUFFER, io::stdout()) }
    }
}

impl Lines for StdoutLines {
    const KIND: &'static str = "stdout";

    fn write_batch(&mut self, batch: &[Arc<Delivery>]) -> Result<(), BatchError> {
        write_lines(&mut self.out, batch).and_then(|()| self.out.flush()).map_err(|error| {
            // Do not repeat a half-written batch in front of the next one.
            // A pipe cannot be cut back, so nothing of it counts as written.
            let fresh = BufWriter::with_capacity(BUFFER, io::stdout());
            discard(std::mem::replace(&mut self.out, fresh));
            BatchError { written: 0, error }
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn on_error(&self, e: &io::Error) -> OnError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader of the pipe is gone; every later write would fail too.
            OnError::Stop
        } else {
            // A retry could repeat lines the pipe already took.
            OnError::Drop
        }
    }
}

/// Writes each envelope followed by `\n`.
pub(super) fn write_lines(out: &mut impl Write, batch: &[Arc<Delivery>]) -> io::Result<()> {
    for d in batch {
        out.write_all(d.envelope().as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
