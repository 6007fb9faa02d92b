//! An exclusive advisory lock on a journal directory (`flock` on `<dir>/LOCK`), so two writers
//! (or a writer and a repairing recovery) never work on the same journal. The kernel releases it
//! when the process dies, SIGKILL included.

use crate::{JournalError, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Name of the lock file inside a journal directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Held while alive.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails at once with `Locked`.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "open lock file", e))?;
        // SAFETY: flock on a file descriptor we own and keep open for the call; no memory is
        // passed to the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(JournalError::Locked(dir.to_path_buf()));
            }
            return Err(JournalError::io(&path, "lock", err));
        }
        Ok(DirLock { _file: file })
    }
}
