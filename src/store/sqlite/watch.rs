//! Whether a pooled connection still reaches the right file and can still write it: the file
//! may be replaced or removed under a running daemon, or turn read-only for a while (a snapshot,
//! a read-only remount, `chattr +i`). Each acquire asks here; a connection that can no longer do
//! its job is closed and the pool opens a new one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Which file the database path names, so that a connection to a file that was replaced or
/// removed since it was opened is never reused: every acquire compares the path's identity
/// (device, inode) with the one seen before, and connections opened before a change are closed.
/// New connections then open whatever the path names now, or fail while nothing is there.
///
/// It also watches whether this process can write the file and its `-wal` and `-shm`: SQLite
/// opens a connection read-only, silently, when one of them cannot be written at that moment,
/// and the connection stays read-only for its life even after the files are writable again. For
/// the `-wal` file `sqlite3_db_readonly` does not even tell. So every writer opened before the
/// files were last seen unwritable is replaced once they are writable again.
#[derive(Debug)]
pub(super) struct FileWatch {
    path: PathBuf,
    seen: Mutex<(Option<(u64, u64)>, Instant)>,
    writability: Mutex<Writability>,
}

/// The database's files as this process last saw them.
#[derive(Debug, Default)]
struct Writability {
    /// They could not be written at the last look (a read-only spell is on).
    spell: bool,
    /// The last look that found them unwritable.
    last_unwritable: Option<Instant>,
}

impl FileWatch {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            seen: Mutex::new((identity(path), Instant::now())),
            writability: Mutex::new(Writability::default()),
        }
    }

    /// Whether a connection opened `age` ago still reaches the file the path names.
    pub(super) fn still_current(&self, age: Duration) -> bool {
        let now = identity(&self.path);
        let mut seen = locked(&self.seen);
        if now != seen.0 {
            match now {
                None => tracing::error!(path = %self.path.display(),
                    "the SQLite database file is gone: its connections are closed; waiting for it to come back"),
                Some(_) => tracing::warn!(path = %self.path.display(),
                    "the SQLite database file was replaced: reopening it"),
            }
            *seen = (now, Instant::now());
        }
        now.is_some() && seen.1.elapsed() >= age
    }

    /// Whether this process can write the database file and its `-wal` and `-shm` (those that
    /// exist) right now; the start and the end of a spell when it cannot are logged once each.
    pub(super) fn writable(&self) -> bool {
        let writable = ["", "-wal", "-shm"].iter().all(|suffix| {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            can_write(Path::new(&path))
        });
        let mut seen = locked(&self.writability);
        if !writable {
            seen.last_unwritable = Some(Instant::now());
        }
        if seen.spell == writable {
            seen.spell = !writable;
            if writable {
                tracing::info!(path = %self.path.display(),
                    "the SQLite database file is writable again: reopening the writer");
            } else {
                tracing::warn!(path = %self.path.display(),
                    "the SQLite database file or its -wal or -shm cannot be written (permissions, the \
                     immutable attribute, a read-only file system): writes may fail until it can");
            }
        }
        writable
    }

    /// Whether the files were seen unwritable since a connection opened `age` ago was opened
    /// (then it may have come up read-only).
    pub(super) fn unwritable_since(&self, age: Duration) -> bool {
        locked(&self.writability)
            .last_unwritable
            .is_some_and(|at| at.elapsed() <= age)
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// access(2) with `W_OK`: it opens nothing (closing any descriptor of the database file would
/// drop every POSIX lock SQLite holds on it) and, unlike the mode bits, it sees what binds root
/// too (the immutable attribute, a read-only mount). A file that does not exist is no obstacle.
fn can_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(name) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: `name` is a NUL-terminated path that lives across the call.
    if unsafe { libc::access(name.as_ptr(), libc::W_OK) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT)
}

/// Whether SQLite opened this connection read-only (it does so silently when the file was not
/// writable at that moment, and stays so for the connection's life).
pub(super) async fn is_read_only(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is a live connection, locked for this call; the name is NUL-terminated.
    let read_only = unsafe { libsqlite3_sys::sqlite3_db_readonly(handle.as_raw_handle().as_ptr(), c"main".as_ptr()) };
    Ok(read_only == 1)
}
