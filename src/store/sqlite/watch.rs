//! Whether a pooled connection still reaches the right file and can still write it: the file
//! may be replaced or removed under a running daemon, or turn read-only for a while (a snapshot,
//! a read-only remount, `chattr +i`). Each acquire asks here; a connection that can no longer do
//! its job is closed and the pool opens a new one.
//!
//! A replaced file is let go of without touching the new one's files. SQLite names a database's
//! `-wal` and `-shm` by path: a connection closing last would delete whatever the path names
//! then (the new file's, while the application writes it), and a connection to the new file
//! would share the old file's if they were still there. So every connection keeps its WAL file
//! on close (`SQLITE_FCNTL_PERSIST_WAL`; the journal size limit makes SQLite truncate it, by its
//! descriptor, once checkpointed), and when the path names another file, the `-wal` and `-shm`
//! this process holds open (the old file's) are unlinked before any connection to the new one
//! opens; files it does not hold (the new file's) are left alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The companions SQLite keeps beside a WAL-mode database, named by appending to its path.
const SIDECARS: [&str; 2] = ["-wal", "-shm"];

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
    seen: Mutex<Seen>,
    writability: Mutex<Writability>,
    /// Counts the changes of the file the path names: rows claimed before the last change came
    /// from a file this process no longer writes.
    generation: AtomicU64,
    /// SQLite opened the writer's connection read-only (`sqlite3_db_readonly` when it opened;
    /// it stays so for the connection's life). The writer pool holds one connection.
    writer_read_only: AtomicBool,
}

/// The file the path named at the last look.
#[derive(Debug)]
struct Seen {
    identity: Option<(u64, u64)>,
    /// When this identity was first seen: connections older than that reach another file.
    since: Instant,
    /// The file was replaced or removed at this moment, and the writer has not opened the one
    /// the path names now (the condition, logged once when it starts and once when it ends).
    away: Option<Instant>,
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
            seen: Mutex::new(Seen {
                identity: identity(path),
                since: Instant::now(),
                away: None,
            }),
            writability: Mutex::new(Writability::default()),
            generation: AtomicU64::new(0),
            writer_read_only: AtomicBool::new(false),
        }
    }

    /// Whether a connection opened `age` ago still reaches the file the path names. The first
    /// look after a change logs it (once per condition: a removed file that comes back is the
    /// same condition) and unlinks the old file's `-wal` and `-shm` if the path still names them.
    pub(super) fn still_current(&self, age: Duration) -> bool {
        let now = identity(&self.path);
        let mut seen = locked(&self.seen);
        if now != seen.identity {
            if seen.away.is_none() {
                match now {
                    None => tracing::error!(path = %self.path.display(),
                        "the SQLite database file is gone: its connections are closed; waiting for it to come back"),
                    Some(_) => tracing::warn!(path = %self.path.display(),
                        "the SQLite database file was replaced: letting go of the old one and reopening"),
                }
                seen.away = Some(Instant::now());
            }
            // Done while the lock is held: no connection to the new file opens before it.
            if seen.identity.is_some() {
                unlink_held_sidecars(&self.path);
            }
            seen.identity = now;
            seen.since = Instant::now();
            self.generation.fetch_add(1, Relaxed);
        }
        now.is_some() && seen.since.elapsed() >= age
    }

    /// Looks at the path now (the idle poll's look, no query): whether the file was replaced or
    /// came back and the writer has yet to open it.
    pub(super) fn reopen_due(&self) -> bool {
        self.still_current(Duration::ZERO);
        let seen = locked(&self.seen);
        seen.away.is_some() && seen.identity.is_some()
    }

    /// Whether a connection just opened is the writer's first to the file the path names since
    /// it was replaced or came back: then the migrations run on it before anything else.
    pub(super) fn opened_after_change(&self) -> bool {
        let seen = locked(&self.seen);
        seen.away.is_some() && seen.identity.is_some() && identity(&self.path) == seen.identity
    }

    /// The writer works on the file the path names again (`had_tables`: it held the daemon's
    /// tables before the migrations ran): the end of the condition, logged once.
    pub(super) fn reopened(&self, had_tables: bool) {
        if let Some(since) = locked(&self.seen).away.take() {
            let away_s = (since.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            tracing::info!(path = %self.path.display(), away_s, had_tables,
                "the SQLite database file the path names now is open and migrated: work goes on there");
        }
    }

    /// How many times the path has named another file (or none) since the start.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// Whether this process can write the database file and its `-wal` and `-shm` (those that
    /// exist) right now; the start and the end of a spell when it cannot are logged once each.
    pub(super) fn writable(&self) -> bool {
        self.look().0
    }

    /// Whether a read-only spell began at this look (access(2) only, no query): the idle poll
    /// asks, so that readiness turns within a poll interval, not at the next heartbeat.
    pub(super) fn spell_began(&self) -> bool {
        let (writable, changed) = self.look();
        !writable && changed
    }

    /// Whether the files can be written, and whether that changed at this look.
    fn look(&self) -> (bool, bool) {
        let writable = ["", SIDECARS[0], SIDECARS[1]]
            .iter()
            .all(|suffix| can_write(&with_suffix(&self.path, suffix)));
        let mut seen = locked(&self.writability);
        if !writable {
            seen.last_unwritable = Some(Instant::now());
        }
        let changed = seen.spell == writable;
        if changed {
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
        (writable, changed)
    }

    /// Notes how SQLite opened the writer's (new) connection.
    pub(super) fn writer_opened(&self, read_only: bool) {
        self.writer_read_only.store(read_only, Relaxed);
    }

    /// Whether SQLite opened the writer's current connection read-only.
    pub(super) fn writer_read_only(&self) -> bool {
        self.writer_read_only.load(Relaxed)
    }

    /// Whether the files were seen unwritable since a connection opened `age` ago was opened
    /// (then it may have come up read-only).
    pub(super) fn unwritable_since(&self, age: Duration) -> bool {
        locked(&self.writability)
            .last_unwritable
            .is_some_and(|at| at.elapsed() <= age)
    }
}

impl super::SqliteStore {
    /// The idle poll's look at the file, without a query: a file that replaced the database (or
    /// came back) is opened and migrated by the writer now rather than at the next heartbeat.
    /// Returns whether a read-only spell began at this look (`/readyz` then says so at once).
    pub async fn idle_look(&self) -> bool {
        let Some(file) = &self.file else { return false };
        if file.watch.reopen_due() {
            // Acquiring the writer replaces its old connection; a failure (the file is gone
            // again) shows in the poll's own query.
            drop(self.writer.acquire().await);
        }
        file.watch.spell_began()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Unlinks the `-wal` and `-shm` beside `database` that this process holds open: right after the
/// path changed files, before any connection to the new file opens, those are the old file's
/// (its connections here still hold them). Ones it does not hold are the new file's, left alone.
/// The old connections go on with their descriptors until they close; they checkpoint into the
/// old file, by descriptor, if they close last.
fn unlink_held_sidecars(database: &Path) {
    let held = held_files();
    for suffix in SIDECARS {
        let path = with_suffix(database, suffix);
        if identity(&path).is_some_and(|file| held.contains(&file)) {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(),
                    "removed the replaced database's own companion file, so the new file does not share it"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "could not remove the replaced database's companion file"),
            }
        }
    }
}

/// (device, inode) of every file this process has open (Linux: `/proc/self/fd`; elsewhere none,
/// so nothing is unlinked).
fn held_files() -> Vec<(u64, u64)> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten().filter_map(|fd| identity(&fd.path())).collect()
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

/// Makes the connection keep its WAL file when it closes last (`SQLITE_FCNTL_PERSIST_WAL`):
/// SQLite would otherwise unlink `<db>-wal` and `<db>-shm` by name, whichever file they are by
/// then. With a journal size limit set, SQLite truncates the kept WAL to zero bytes, through its
/// own descriptor, after the closing checkpoint, so nothing stale is left for the next opener.
pub(super) async fn keep_wal_on_close(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is a live connection, locked for this call; the name is NUL-terminated
    // and the argument an int, as SQLITE_FCNTL_PERSIST_WAL takes.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_file_control(
            handle.as_raw_handle().as_ptr(),
            c"main".as_ptr(),
            libsqlite3_sys::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Io(std::io::Error::other(format!(
            "SQLITE_FCNTL_PERSIST_WAL failed with SQLite code {rc}"
        ))))
    }
}
