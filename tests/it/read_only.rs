//! A read-only spell of an SQLite file for a test: the database, its `-wal` and its `-shm` made
//! unwritable by the strongest means this process has, and made writable again however the
//! test ends.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How the database was made read-only: the immutable attribute binds root too; permissions
/// bind only an unprivileged user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Immutable,
    Permissions,
}

/// The database file, its `-wal` and `-shm` made read-only for as long as the value lives (or
/// until `undo`); undone on drop as well, so a failing test never leaves files the temp dir's
/// cleanup cannot remove.
pub struct ReadOnlySpell {
    files: Vec<PathBuf>,
    dir: PathBuf,
    mechanism: Option<Mechanism>,
}

impl ReadOnlySpell {
    /// Makes the files read-only with the first mechanism that binds this process, and says
    /// loudly which one; panics (the test fails) if none does.
    pub fn begin(database: &Path) -> Self {
        let files: Vec<PathBuf> = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| PathBuf::from(format!("{}{suffix}", database.display())))
            .filter(|path| path.exists())
            .collect();
        let mut spell = Self {
            files,
            dir: database.parent().expect("a file in a directory").to_owned(),
            mechanism: None,
        };
        let mut tried = Vec::new();
        for mechanism in [Mechanism::Immutable, Mechanism::Permissions] {
            spell.mechanism = Some(mechanism);
            match spell.apply(mechanism) {
                Ok(()) if spell.binds(database) => {
                    eprintln!(
                        "!!!!! read-only spell by {mechanism:?} ({}) on {:?}",
                        spell.describe(),
                        spell.files
                    );
                    return spell;
                }
                Ok(()) => tried.push(format!(
                    "{mechanism:?}: applied, but this process can still write the file"
                )),
                Err(e) => tried.push(format!("{mechanism:?}: {e}")),
            }
            spell.undo();
        }
        panic!(
            "!!!!! no mechanism made {} read-only, so this test cannot test anything: {tried:?}",
            database.display()
        );
    }

    fn apply(&self, mechanism: Mechanism) -> Result<(), String> {
        match mechanism {
            Mechanism::Immutable => {
                for file in &self.files {
                    run("chattr", &["+i"], file)?;
                    let attributes = run("lsattr", &["-d"], file)?;
                    let flags = attributes.split_whitespace().next().unwrap_or_default();
                    if !flags.contains('i') {
                        return Err(format!("lsattr shows no immutable flag: {attributes}"));
                    }
                }
                Ok(())
            }
            Mechanism::Permissions => {
                use std::os::unix::fs::PermissionsExt;
                let set = |path: &Path, mode| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
                };
                self.files.iter().try_for_each(|file| set(file, 0o444))?;
                set(&self.dir, 0o555)
            }
        }
    }

    /// Whether the spell stops this very process from writing the database file. access(2), not
    /// an open: closing a descriptor of the file would drop the test store's SQLite locks.
    fn binds(&self, database: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::CString::new(database.as_os_str().as_bytes()).expect("a path without NUL");
        // SAFETY: `name` is a NUL-terminated path that lives across the call.
        unsafe { libc::access(name.as_ptr(), libc::W_OK) != 0 }
    }

    fn describe(&self) -> &'static str {
        match self.mechanism {
            Some(Mechanism::Immutable) => "chattr +i: binds root too",
            Some(Mechanism::Permissions) => "chmod 0444 files, 0555 directory: chattr was not available",
            None => "none",
        }
    }

    /// Makes everything writable again; safe to call twice.
    pub fn undo(&mut self) {
        match self.mechanism.take() {
            Some(Mechanism::Immutable) => {
                for file in &self.files {
                    if let Err(e) = run("chattr", &["-i"], file) {
                        eprintln!("!!!!! could not undo the read-only spell: {e}");
                    }
                }
            }
            Some(Mechanism::Permissions) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
                for file in &self.files {
                    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644));
                }
            }
            None => {}
        }
    }
}

impl Drop for ReadOnlySpell {
    fn drop(&mut self) {
        self.undo();
    }
}

/// Runs `program args... path`; its stdout, or why it failed.
fn run(program: &str, args: &[&str], path: &Path) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?} {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
