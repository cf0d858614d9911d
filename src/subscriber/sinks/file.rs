//! The `file` sink: JSON lines appended to `path`. The file is opened in
//! append mode (created if missing), written in chunks of up to [`BUFFER`]
//! bytes so each batch reaches the kernel, reopened on SIGHUP so logrotate
//! can move it away, and synced to disk at shutdown.
//!
//! No torn line (SPEC §11): the bytes of a batch the file accepted are
//! counted, so after a failed write (disk full) the incomplete last line is
//! cut off again (`set_len`) and the sink is told how many messages are
//! whole lines in the file; it retries the rest. This assumes the sink is
//! the file's only writer, as two appenders could interleave lines anyway.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::{BatchError, Lines, OnError};
use crate::fanout::Delivery;

/// Bytes gathered before one `write`: few syscalls for small lines.
const BUFFER: usize = 64 * 1024;

/// What the file sink needs of an open file; a test wraps a real file to
/// inject a short write followed by ENOSPC.
pub(super) trait Target: Write + Send + Unpin + 'static {
    /// The file's length now, to find where a partial line starts.
    fn len(&self) -> io::Result<u64>;
    /// Cuts the file to `len` bytes (removes a partial line).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fsync at shutdown and before a reopen.
    fn sync_all(&self) -> io::Result<()>;
}

impl Target for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

/// Opens a path for appending: [`open_append`], or a test's wrapper.
type Opener<T> = Box<dyn Fn(&Path) -> io::Result<T> + Send>;

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// An append-only file as a [`Lines`] target.
pub(super) struct FileLines<T: Target = File> {
    /// The configured path, opened again on SIGHUP and after a write error.
    path: PathBuf,
    /// How `path` is opened (injectable for tests).
    open: Opener<T>,
    /// The open file; `None` after a write error until the next batch
    /// reopens the path (the disk may have room again, the file may be back).
    out: Option<T>,
    /// Lines gathered for the next `write`; kept to reuse its allocation.
    buf: Vec<u8>,
    /// Bytes of a partial line at the end of `out` that could not be cut
    /// off yet: cut before anything else is written there.
    torn: u64,
}

impl FileLines<File> {
    /// Opens `path` for appending, creating it if missing.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        FileLines::with_opener(path, Box::new(open_append))
    }
}

impl<T: Target> FileLines<T> {
    /// Opens `path` with `open` (tests inject faults through it).
    fn with_opener(path: &Path, open: Opener<T>) -> io::Result<Self> {
        let out = open(path)?;
        Ok(FileLines { path: path.to_path_buf(), open, out: Some(out), buf: Vec::new(), torn: 0 })
    }

    /// Cuts a partial line left by an earlier failure, if any.
    fn mend(&mut self) -> io::Result<()> {
        if let (Some(out), true) = (&self.out, self.torn > 0) {
            cut(out, self.torn)?;
            self.torn = 0;
        }
        Ok(())
    }

    /// Writes every line of `batch`, adding to `sent` the bytes the file took.
    fn write_all_lines(&mut self, batch: &[Arc<Delivery>], sent: &mut u64) -> io::Result<()> {
        let out = match &mut self.out {
            Some(out) => out,
            None => self.out.insert((self.open)(&self.path)?),
        };
        self.buf.clear();
        for d in batch {
            let line = d.envelope().as_bytes();
            if self.buf.len() + line.len() + 1 > BUFFER && !self.buf.is_empty() {
                write_counted(out, &self.buf, sent)?;
                self.buf.clear();
            }
            if line.len() + 1 > BUFFER {
                write_counted(out, line, sent)?;
                write_counted(out, b"\n", sent)?;
            } else {
                self.buf.extend_from_slice(line);
                self.buf.push(b'\n');
            }
        }
        write_counted(out, &self.buf, sent)?;
        self.buf.clear();
        Ok(())
    }

    /// Flushes and fsyncs the open file, if any, after cutting a partial line.
    fn sync(&mut self) -> io::Result<()> {
        self.mend()?;
        match &mut self.out {
            Some(out) => {
                out.flush()?;
                out.sync_all()
            }
            None => Ok(()),
        }
    }
}

/// `write_all` that counts what the file accepted, also when it fails.
fn write_counted(out: &mut impl Write, mut data: &[u8], sent: &mut u64) -> io::Result<()> {
    while !data.is_empty() {
        match out.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *sent += n as u64;
                data = &data[n.min(data.len())..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How many lines of `batch` are whole within its first `sent` bytes, and
/// how many bytes of the next line follow them.
fn whole_lines(batch: &[Arc<Delivery>], sent: u64) -> (usize, u64) {
    let mut end = 0u64;
    for (i, d) in batch.iter().enumerate() {
        let next = end + d.envelope().len() as u64 + 1;
        if next > sent {
            return (i, sent - end);
        }
        end = next;
    }
    (batch.len(), sent.saturating_sub(end))
}

/// Removes the last `partial` bytes of `out`. If the file is shorter than
/// that, someone truncated it since (copytruncate): nothing of ours is left.
fn cut(out: &impl Target, partial: u64) -> io::Result<()> {
    let len = out.len()?;
    if len >= partial {
        out.set_len(len - partial)?;
    }
    Ok(())
}

impl<T: Target> Lines for FileLines<T> {
    const KIND: &'static str = "file";

    fn write_batch(&mut self, batch: &[Arc<Delivery>]) -> Result<(), BatchError> {
        self.mend().map_err(|error| BatchError { written: 0, error })?;
        let mut sent = 0;
        let Err(error) = self.write_all_lines(batch, &mut sent) else {
            return Ok(());
        };
        let (written, partial) = whole_lines(batch, sent);
        self.torn = partial;
        match self.mend() {
            // Drop the handle; the next attempt reopens the path.
            Ok(()) => self.out = None,
            Err(e) => warn!(
                sink = "file",
                path = %self.path.display(),
                error = %e,
                "Cannot cut a partial line yet; will try again before the next write."
            ),
        }
        Err(BatchError { written, error })
    }

    fn finish(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn reopen(&mut self) {
        if let Err(e) = self.sync() {
            warn!(sink = "file", path = %self.path.display(), error = %e, "Cannot flush the file before reopening it.");
        }
        match (self.open)(&self.path) {
            Ok(out) => {
                self.out = Some(out);
                // A partial line that could not be cut stays in the old file.
                self.torn = 0;
                info!(sink = "file", path = %self.path.display(), "File sink reopened its path.");
            }
            // Keep writing to the old file rather than losing lines; the
            // next SIGHUP (or write error) tries again.
            Err(e) => warn!(
                sink = "file",
                path = %self.path.display(),
                error = %e,
                "Cannot reopen the file; still writing to the old one."
            ),
        }
    }

    fn on_error(&self, _e: &io::Error) -> OnError {
        // Disk full, quota, I/O errors: the file may work again (room made,
        // path back after a reopen). Meanwhile the queue bounds the backlog.
        OnError::Retry
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
