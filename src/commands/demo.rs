//! `demo` and `stand-in`: the whole job on one machine, without a Zoho account.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::config::Config;
use crate::editor::Editor;
use crate::standin::StandIn;
use crate::store::Store;
use crate::worker::{Reaper, RunMode};

/// How often the demo looks whether every row is final.
const DONE_POLL: Duration = Duration::from_millis(250);
/// The key the demo's stand-in accepts; it never leaves loopback.
const DEMO_APIKEY: &str = "demo-key";
/// `PRAGMA application_id` of a database the demo created ("SRDm"): the mark that lets a later
/// `demo` replace the file, and nothing else. It lives in the file header (bytes 68..72).
const DEMO_APPLICATION_ID: u32 = 0x5352_446d;

/// Scenario prefixes (see `standin`) and the share of seeded sessions each gets, in percent.
const MIX: [(&str, usize); 8] = [
    ("", 50),
    ("gone-", 10),
    ("expired-", 10),
    ("flaky2-", 8),
    ("busy1-", 7),
    ("limited1-", 5),
    ("bad-", 5),
    ("bad id/", 5),
];

pub async fn demo(mut config: Config, database: &Path, sessions: usize) -> anyhow::Result<()> {
    let standin = StandIn::start(SocketAddr::from(([127, 0, 0, 1], 0)), DEMO_APIKEY, false)
        .await
        .context("Failed to start the stand-in API")?;
    replace_demo_database(database)?;
    config.database.url = format!("sqlite://{}", database.display());
    config.api.base_url = standin.base_url().parse().expect("a loopback URL");
    config.api.apikey = Some(SecretString::from(DEMO_APIKEY));
    config.worker.rate_per_second = config.worker.rate_per_second.max(200);
    config.worker.burst = config.worker.burst.max(20);
    config.retry.base_delay = Duration::from_millis(200);
    config.retry.max_delay = Duration::from_secs(2);
    let _logs = crate::telemetry::init(&config.log);

    mark_as_demo(database).await?;
    let store = super::open_named(&config).await?;
    let seeded = seed_ids(sessions);
    let mut total = 0;
    for (editor, ids) in &seeded {
        store.enqueue_editor(ids, *editor, Utc::now()).await?;
        total += ids.len();
    }
    let shares: Vec<String> = seeded.iter().map(|(e, ids)| format!("{e} {}", ids.len())).collect();
    eprintln!(
        "demo: stand-in API on {}, {total} sessions seeded into {} ({})",
        standin.base_url(),
        database.display(),
        shares.join(", ")
    );
    let api = ApiClient::new(&config.api)?;
    let shutdown = crate::shutdown::on_signals().context("Failed to install signal handlers")?;
    let stale_after = config.worker.stale_after;
    // The daemon as deployed; the demo ends it itself once every row is final.
    let watcher = tokio::spawn(stop_when_done(store.clone(), stale_after, shutdown.clone()));
    Reaper::new(config, store.clone(), api, Default::default(), Default::default())
        .run(RunMode::Daemon, shutdown)
        .await?;
    watcher.abort();
    print_status(&store, stale_after).await?;
    store.close().await;
    let stats = standin.state.stats();
    let per_editor: Vec<String> = stats.per_editor.iter().map(|(e, n)| format!("{e} {n}")).collect();
    println!(
        "stand-in: {} requests ({}), {} off the contract path",
        stats.requests,
        per_editor.join(", "),
        stats.off_contract
    );
    println!(
        "inspect: sqlite3 {} 'SELECT session_id, state, attempts, last_http_status, last_api_code, last_error FROM reaper_sessions LIMIT 20'",
        database.display()
    );
    Ok(())
}

/// Removes an earlier demo's database (and its `-wal`/`-shm`), so the demo starts afresh; any
/// other file at that path is left alone and is an error: `--database` may point anywhere.
fn replace_demo_database(database: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::symlink_metadata(database) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("Failed to look at {}", database.display())),
    };
    if !metadata.is_file() || !is_demo_database(database) {
        anyhow::bail!(
            "{} exists and is not a database an earlier `demo` created; the demo replaces only \
             its own files: pick another --database, or remove this one yourself",
            database.display()
        );
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", database.display());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("Failed to remove {path}")),
        }
    }
    Ok(())
}

/// Whether the file is a SQLite database whose header carries the demo's application id. Read
/// from the header directly: opening a stranger's file with SQLite could already change it.
fn is_demo_database(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 72];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut header));
    read.is_ok()
        && header.starts_with(b"SQLite format 3\0")
        && u32::from_be_bytes([header[68], header[69], header[70], header[71]]) == DEMO_APPLICATION_ID
}

/// Creates the demo's file with its mark, before the store switches it to WAL (so the mark is
/// in the main file's header at once, not only in the write-ahead log).
async fn mark_as_demo(database: &Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(database)
        .create_if_missing(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("Failed to create the demo database {}", database.display()))?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA application_id = {DEMO_APPLICATION_ID}"
    )))
    .execute(&mut connection)
    .await
    .with_context(|| format!("Failed to mark {} as the demo's", database.display()))?;
    connection.close().await.context("Failed to close the demo database")?;
    Ok(())
}

/// Cancels `shutdown` once no row is open (pending or retrying) any more.
async fn stop_when_done(store: Store, stale_after: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DONE_POLL) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Ok(status) = store.status(Utc::now(), stale_after).await
            && status.open() == 0
        {
            shutdown.cancel();
            return;
        }
    }
}

async fn print_status(store: &Store, stale_after: Duration) -> anyhow::Result<()> {
    let report = store.status(Utc::now(), stale_after).await?;
    print!("{}", super::status::to_text(&report));
    Ok(())
}

/// Scenarios whose answers mean the same for every editor (success, proxy pages, busy, 429), so
/// their sessions are spread over all four editors. Gone, expired and permanently bad answers
/// are documented for Writer only (other editors retry them), so those sessions are Writer's.
const EVERY_EDITOR: [&str; 4] = ["", "flaky2-", "busy1-", "limited1-"];

/// `n` session ids spread over the scenarios of `MIX`, hex like the real ones, grouped by editor:
/// the scenarios of `EVERY_EDITOR` in turn to each editor, the rest Writer's.
fn seed_ids(n: usize) -> Vec<(Editor, Vec<String>)> {
    let mut by_editor: Vec<(Editor, Vec<String>)> = Editor::ALL.map(|e| (e, Vec::new())).into();
    let mut count = 0;
    for (prefix, percent) in MIX {
        for i in 0..(n * percent).div_ceil(100) {
            if count < n {
                let editor = if EVERY_EDITOR.contains(&prefix) {
                    i % Editor::ALL.len()
                } else {
                    0
                };
                by_editor[editor]
                    .1
                    .push(format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
                count += 1;
            }
        }
    }
    by_editor
}

pub async fn stand_in(listen: SocketAddr, apikey: &str, latency: Duration, faults: Option<&str>) -> anyhow::Result<()> {
    let standin = StandIn::start(listen, apikey, false)
        .await
        .context("Failed to start the stand-in API")?;
    if let Some(faults) = faults {
        standin
            .state
            .set_faults(serde_json::from_str(faults).context("--faults is not valid fault JSON")?);
    }
    if !latency.is_zero() {
        standin.state.set_latency(latency);
    }
    eprintln!(
        "stand-in API listening on {} (stats at {}/__standin/stats); Ctrl-C stops it",
        standin.base_url(),
        standin.base_url()
    );
    tokio::signal::ctrl_c().await.context("Failed to wait for Ctrl-C")?;
    Ok(())
}
