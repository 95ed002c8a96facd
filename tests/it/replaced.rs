//! The SQLite file replaced under a running daemon, as it happens: a new file moved over it
//! (`mv new.db reaper.db`, a restored backup), the file removed and created afresh by the
//! application, the whole directory removed and made again. The real daemon binary on real
//! files: it notices, lets go of the old file without touching the new one's `-wal`, opens (and
//! migrates) the new one, and deletes what is due there within a poll interval and a few seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::{SessionRow, State, Store};

use crate::helpers::{Daemon, daemon, standin, text};
use crate::recovery::{lines_at, message, readyz_becomes, tally, watched_env};

/// The daemon's poll interval here; the lease is the default 30 s, so the heartbeat (every
/// 10 s) plays no part in how soon the daemon notices.
const POLL: Duration = Duration::from_secs(1);
/// "A few seconds" on top of the poll interval.
const FEW: Duration = Duration::from_secs(4);

/// How the file goes away and what comes in its place.
#[derive(Debug, Clone, Copy)]
enum Swap {
    /// A migrated file with a due row, prepared beside it, renamed over it.
    RenamedOver,
    /// The file and its `-wal` and `-shm` removed; the application creates an empty database.
    RemovedAndRecreated,
    /// The directory removed; the application makes it again and creates a migrated database.
    DirectoryRecreated,
}

#[tokio::test]
async fn a_new_file_moved_over_the_sqlite_file_is_taken_up() {
    survives(Swap::RenamedOver).await;
}

#[tokio::test]
async fn a_sqlite_file_removed_and_created_afresh_is_migrated_and_taken_up() {
    survives(Swap::RemovedAndRecreated).await;
}

#[tokio::test]
async fn a_sqlite_directory_removed_and_made_again_is_taken_up() {
    survives(Swap::DirectoryRecreated).await;
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The application's store on `path` (it creates the file, and migrates it when asked).
async fn app_store(path: &Path, migrate: bool) -> Store {
    let store = Store::connect(&sqlite_url(path)).await.expect("open SQLite");
    if migrate {
        store.migrate().await.expect("migrate SQLite");
    }
    store
}

/// Waits (at most `limit`) until the stand-in has seen a DELETE for `session`.
async fn deleted_at_api(api: &session_reaper::standin::StandIn, session: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if api.state.count_for(session) > 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The rows of `reaper_sessions`, read by a fresh read-only store.
async fn rows_of(path: &Path) -> Vec<SessionRow> {
    let store = Store::open_read_only(&sqlite_url(path)).await.expect("open read-only");
    let rows = store.rows().await.expect("read rows");
    store.close().await;
    rows
}

/// `PRAGMA integrity_check` of the file at `path`.
async fn integrity(path: &Path) -> String {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .expect("open for the integrity check");
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity check");
    sqlx::Connection::close(conn).await.ok();
    verdict
}

async fn survives(swap: Swap) {
    // Arrange: a daemon that has deleted a row of the old file; a hard link keeps the old file
    // reachable (in a directory of its own) so that the test can look at it afterwards.
    let dir = tempfile::tempdir().expect("temp dir");
    let keep = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reaper.db");
    let kept = keep.path().join("old.db");
    let app = app_store(&path, true).await;
    let api = standin().await;
    let (port, env) = watched_env(&sqlite_url(&path), &api, "30s");
    let child = Daemon::start(&mut daemon(&["run"], &env));
    app.enqueue(&["before1".into()], Utc::now()).await.unwrap();
    assert!(
        deleted_at_api(&api, "before1", Duration::from_secs(20)).await.is_some(),
        "the row before the swap was never deleted"
    );
    assert!(
        readyz_becomes(port, 200, Duration::from_secs(10)).await.is_some(),
        "never ready"
    );
    // Its outcome written, the daemon is idle; the application lets go of the old file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.rows().await.unwrap().iter().all(|r| r.state == State::Deleted) {
        assert!(Instant::now() < deadline, "the outcome of before1 was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_rows = app.rows().await.unwrap();
    app.close().await;
    std::fs::hard_link(&path, &kept).expect("hard link to the old file");

    // Act: the swap.
    let swapped = Instant::now();
    let app = match swap {
        Swap::RenamedOver => {
            let staged = dir.path().join("new.db");
            let new = app_store(&staged, true).await;
            new.enqueue(&["backup1".into()], Utc::now()).await.unwrap();
            new.close().await;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", staged.display()));
            }
            std::fs::rename(&staged, &path).expect("rename over");
            // The application opens the new file once the daemon has let go of the old one
            // (its row deleted: see the README on moving a file into place).
            assert!(
                deleted_at_api(&api, "backup1", POLL + FEW).await.is_some(),
                "the due row of the file moved into place was not deleted within {:?}",
                POLL + FEW
            );
            app_store(&path, false).await
        }
        Swap::RemovedAndRecreated => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            assert!(
                readyz_becomes(port, 503, POLL + FEW).await.is_some(),
                "/readyz did not say 503 while the file was gone"
            );
            // An empty database, as an application's first connection leaves it.
            let empty = app_store(&path, false).await;
            empty.close().await;
            // It gets the daemon's tables from the daemon.
            assert!(
                readyz_becomes(port, 200, POLL + FEW).await.is_some(),
                "/readyz did not say 200 again"
            );
            app_store(&path, false).await
        }
        Swap::DirectoryRecreated => {
            std::fs::remove_dir_all(dir.path()).expect("remove the directory");
            assert!(
                readyz_becomes(port, 503, POLL + FEW).await.is_some(),
                "/readyz did not say 503 while the directory was gone"
            );
            std::fs::create_dir(dir.path()).expect("make the directory again");
            app_store(&path, true).await
        }
    };
    let ready_again = readyz_becomes(port, 200, POLL + FEW).await.map(|_| swapped.elapsed());
    // A row not due for an hour: it must still be there at the end (its commit sits in the new
    // file's -wal, which the daemon must not delete).
    app.enqueue(&["later1".into()], Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    let inserted = Instant::now();
    app.enqueue(&["after1".into()], Utc::now()).await.unwrap();
    let deleted_after = deleted_at_api(&api, "after1", POLL + FEW).await;
    let insert_to_delete = deleted_after.map(|_| inserted.elapsed());
    tokio::time::sleep(POLL * 2).await;
    child.signal("-TERM");
    let output = child.finish().await;
    // The application's own connection still open: a fresh one must see what it committed.
    let new_rows = rows_of(&path).await;
    app.close().await;

    // Assert
    let logs = text(&output);
    let troubles: Vec<String> = lines_at(&logs, &["WARN", "ERROR"]).iter().map(message).collect();
    let infos: Vec<String> = lines_at(&logs, &["INFO"]).iter().map(message).collect();
    eprintln!(
        "{swap:?}: /readyz 200 {ready_again:?} after the swap; after1 deleted at the stand-in \
         {insert_to_delete:?} after its insert"
    );
    eprintln!("WARN/ERROR lines: {:?}", tally(&troubles));
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(output.status.success(), format!("exit {:?}", output.status));
    check(!logs.contains("panicked"), "a panic".to_owned());
    check(
        ready_again.is_some(),
        "/readyz never said 200 after the swap".to_owned(),
    );
    check(
        insert_to_delete.is_some(),
        format!("after1 was not deleted within {:?} of its insert", POLL + FEW),
    );
    let state_of = |rows: &[SessionRow], id: &str| rows.iter().find(|r| r.session_id == id).map(|r| r.state);
    check(
        state_of(&new_rows, "after1") == Some(State::Deleted),
        format!("after1 in the new file: {:?}", state_of(&new_rows, "after1")),
    );
    check(
        state_of(&new_rows, "later1") == Some(State::Pending),
        format!(
            "later1, committed by the application, is {:?} in the new file (its -wal deleted?)",
            state_of(&new_rows, "later1")
        ),
    );
    check(
        integrity(&path).await == "ok",
        "the new file fails its integrity check".to_owned(),
    );
    // The old file: as the daemon left it at the swap, and sound.
    let kept_rows = rows_of(&kept).await;
    check(
        kept_rows == old_rows,
        format!("the old file changed after the swap: {old_rows:?} then {kept_rows:?}"),
    );
    check(
        integrity(&kept).await == "ok",
        "the old file fails its integrity check".to_owned(),
    );
    // The condition: its start once, its end once; no warning or error twice.
    let starts = troubles
        .iter()
        .filter(|m| m.contains("database file was replaced") || m.contains("database file is gone"))
        .count();
    check(
        starts == 1,
        format!("{starts} lines, not one, say the file was replaced or is gone"),
    );
    let ends = infos.iter().filter(|m| m.contains("open and migrated")).count();
    check(ends == 1, format!("{ends} lines, not one, say the new file is open"));
    for (message, count) in tally(&troubles) {
        check(count == 1, format!("logged {count} times, not once: {message:?}"));
    }
    assert!(failures.is_empty(), "{failures:#?}\n{logs}");
}
