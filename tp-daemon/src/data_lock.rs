//! One daemon per data directory: `serve` holds an exclusive `flock` on
//! `DATA_DIR/tp-daemon.lock` for its whole life, with its pid written in it.
//!
//! Why: the journal has a single writer that chains every record onto the
//! one before. Two daemons on one journal fork the chain, and each then
//! rolls back the other's batches: both answer `Unavailable` at random. A
//! `flock` is released by the kernel when the process dies, however it
//! dies, so a crash never leaves a stale lock behind (the pid in the file
//! is only for the message).
//!
//! Operator commands do not take this lock: they write only the key ring,
//! the audit log and the subscribers, each change one SQLite transaction,
//! and never append to the chain, so they are safe beside a running daemon
//! (which picks their changes up on SIGHUP). They use [`DataDirLock::holder`]
//! to name the daemon to reload.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "tp-daemon.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another tp-daemon{} is serving data directory {} (it holds {}): stop it first, or give \
         this one a data_dir of its own",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display(),
        lock.display()
    )]
    Busy {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot lock data directory {}: {what} {}: {error}", dir.display(), lock.display())]
    Io {
        dir: PathBuf,
        lock: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
}

/// A daemon holding a data directory; `pid` unless it was not written yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(p) => write!(f, "tp-daemon (pid {p})"),
            None => f.write_str("a tp-daemon"),
        }
    }
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor this process owns, no pointers.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn read_pid(f: &mut File) -> Option<u32> {
    let mut text = String::new();
    f.seek(SeekFrom::Start(0)).ok()?;
    f.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl DataDirLock {
    /// Take the lock for this process (creating the directory if needed) and
    /// write our pid into it; refuse at once if another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |what, error| LockError::Io {
            dir: data_dir.to_owned(),
            lock: path.clone(),
            what,
            error,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| io("cannot create the directory of", e))?;
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("cannot open", e))?;
        if !flock(&f, libc::LOCK_EX).map_err(|e| io("flock failed on", e))? {
            return Err(LockError::Busy {
                dir: data_dir.to_owned(),
                lock: path.clone(),
                holder: read_pid(&mut f),
            });
        }
        f.set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(f, "{}", std::process::id()))
            .and_then(|()| f.sync_data())
            .map_err(|e| io("cannot write the pid into", e))?;
        Ok(DataDirLock { _file: f, path })
    }

    /// The daemon serving `data_dir` now, if one is. Opens the lock
    /// read-only and creates nothing, so it works on read-only copies.
    pub fn holder(data_dir: &Path) -> Option<Holder> {
        let mut f = File::open(data_dir.join(LOCK_FILE)).ok()?;
        match flock(&f, libc::LOCK_SH) {
            Ok(false) => Some(Holder {
                pid: read_pid(&mut f),
            }),
            // Free (our shared lock is released with the file) or unknown.
            Ok(true) | Err(_) => None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_free_again_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DataDirLock::holder(dir.path()), None);
        let held = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file: a second open in this
        // process conflicts like another process would.
        let e = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("(pid {})", std::process::id())) && e.contains(LOCK_FILE),
            "{e}"
        );
        assert_eq!(
            DataDirLock::holder(dir.path()),
            Some(Holder {
                pid: Some(std::process::id())
            })
        );
        drop(held);
        assert_eq!(DataDirLock::holder(dir.path()), None);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
