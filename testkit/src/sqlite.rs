//! A fresh SQLite file per test or per benchmark run.

use std::path::{Path, PathBuf};

/// An SQLite database file that does not exist yet (the store creates it); it and its `-wal`
/// and `-shm` files are removed when the value is dropped.
#[derive(Debug)]
pub struct SqliteFile {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SqliteFile {
    /// `reaper.db` in a new temporary folder, removed with it.
    pub fn temp() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            path: dir.path().join("reaper.db"),
            _dir: Some(dir),
        })
    }

    /// `name` in `dir`; any old file of that name (and its `-wal` and `-shm`) is removed first.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        let file = Self {
            path: dir.join(name),
            _dir: None,
        };
        file.remove();
        file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The daemon's `database.url` for this file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    /// SQLite's write-ahead log next to the file.
    pub fn wal_path(&self) -> PathBuf {
        self.sidecar("-wal")
    }

    fn sidecar(&self, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}{suffix}", self.path.display()))
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(self.sidecar(suffix));
        }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        self.remove();
    }
}
