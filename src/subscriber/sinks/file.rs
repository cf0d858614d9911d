//! The `file` sink: JSON lines appended to `path`. The file is opened in
//! append mode (created if missing), written through a buffer flushed after
//! each batch, reopened on SIGHUP so logrotate can move it away, and synced
//! to disk at shutdown.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::stdout::write_lines;
use super::{discard, Lines};
use crate::fanout::Delivery;

/// Buffer between the envelopes and the file; flushed after each batch.
const BUFFER: usize = 64 * 1024;

/// An append-only file as a [`Lines`] target.
pub(super) struct FileLines {
    /// The configured path, opened again on SIGHUP and after a write error.
    path: PathBuf,
    /// The open file; `None` after a write error until the next batch
    /// reopens the path (the disk may have room again, the file may be back).
    out: Option<BufWriter<File>>,
}

fn open_append(path: &Path) -> io::Result<BufWriter<File>> {
    let file = OpenOptions::new().append(true).create(true).open(path)?;
    Ok(BufWriter::with_capacity(BUFFER, file))
}

impl FileLines {
    /// Opens `path` for appending, creating it if missing.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        Ok(FileLines { path: path.to_path_buf(), out: Some(open_append(path)?) })
    }

    /// Flushes and fsyncs the open file, if any.
    fn sync(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => {
                out.flush()?;
                out.get_ref().sync_all()
            }
            None => Ok(()),
        }
    }
}

impl Lines for FileLines {
    const KIND: &'static str = "file";

    fn write_batch(&mut self, batch: &[Arc<Delivery>]) -> io::Result<()> {
        let out = match &mut self.out {
            Some(out) => out,
            None => self.out.insert(open_append(&self.path)?),
        };
        let result = write_lines(out, batch).and_then(|()| out.flush());
        if result.is_err() {
            // Drop the half-written buffer and the handle; the next batch reopens.
            if let Some(out) = self.out.take() {
                discard(out);
            }
        }
        result
    }

    fn finish(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn reopen(&mut self) {
        if let Err(e) = self.sync() {
            warn!(sink = "file", path = %self.path.display(), error = %e, "Cannot flush the file before reopening it.");
        }
        match open_append(&self.path) {
            Ok(out) => {
                self.out = Some(out);
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
}
