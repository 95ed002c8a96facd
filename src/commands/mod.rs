//! What each subcommand does; `main.rs` only parses and hands over.

mod demo;
mod enqueue;
mod maintenance;
mod progress;
mod run;
pub(crate) mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{self, Config, EXIT_CONFIG, Sources, database_label};
use crate::runtime::Flavor;
use crate::store::Store;

/// sysexits `EX_DATAERR`: some of the input (enqueued lines, requeued ids) could not be used.
pub const EXIT_DATAERR: u8 = 65;

/// Loads the configuration the command needs, builds the runtime fit for it (`runtime`: one
/// thread for `run` at a low budget) and runs the command on it; returns the exit code.
pub fn main(cli: Cli) -> ExitCode {
    let needs_apikey = matches!(cli.command, Command::Run { .. } | Command::CheckConfig);
    let config = match cli.command {
        // The stand-in reads no configuration of the daemon's.
        Command::StandIn { .. } => None,
        _ => {
            let sources = Sources::from_process(cli.config.clone(), needs_apikey);
            for warning in config::ignored_variables(&sources.env) {
                eprintln!("session-reaper: warning: {warning}");
            }
            match load_or_exit(|| config::load(&sources)) {
                Ok(config) => Some(config),
                Err(code) => return code,
            }
        }
    };
    let flavor = Flavor::for_command(matches!(cli.command, Command::Run { .. }), config.as_ref());
    match flavor.build() {
        Ok(runtime) => runtime.block_on(execute(cli.command, config)),
        Err(e) => {
            eprintln!("session-reaper: error: could not start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command (with its configuration, loaded by `main`: `None` only for the stand-in)
/// and turns its result into the process's exit code.
async fn execute(command: Command, config: Option<Config>) -> ExitCode {
    let result = match (command, config) {
        (
            Command::StandIn {
                listen,
                apikey,
                latency,
                faults,
            },
            _,
        ) => demo::stand_in(listen, &apikey, latency, faults.as_deref()).await,
        (Command::Demo { database, sessions }, Some(config)) => demo::demo(config, &database, sessions).await,
        (Command::CheckConfig, Some(config)) => match check_source(&config, true).await {
            Ok(()) => {
                println!("{}", config.render());
                Ok(())
            }
            Err(e) => Err(e),
        },
        (command, Some(config)) => {
            let _logs = crate::telemetry::init(&config.log);
            match command {
                Command::Run { once } => run::run(config, once).await,
                Command::Migrate => migrate(&config).await,
                Command::Enqueue { editor } => enqueue::enqueue(&config, editor).await,
                Command::Status { json, watch } => status::status(&config, json, watch).await,
                Command::Requeue { failed, ids, dry_run } => maintenance::requeue(&config, failed, &ids, dry_run).await,
                Command::Prune { older_than, dry_run } => maintenance::prune(&config, older_than, dry_run).await,
                _ => unreachable!("handled above"),
            }
        }
        (_, None) => unreachable!("`main` loads the configuration of every command but the stand-in"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<Exit>() {
                return ExitCode::from(exit.0);
            }
            eprintln!("session-reaper: error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs `source.query` (when set) with `LIMIT 0` against `source.url`: a query the database
/// refuses (syntax, a missing table or column) is bad configuration (exit 78), reported in the
/// database's own words. A database that cannot be reached is that too for `check-config`
/// (`strict`); `run` warns and goes on, its source task retries every interval.
pub async fn check_source(config: &Config, strict: bool) -> anyhow::Result<()> {
    let Some(query) = &config.source.query else {
        return Ok(());
    };
    let url = config.source_url();
    if let Err(e) = crate::worker::source::check(url, query).await {
        let refused = e
            .chain()
            .any(|cause| matches!(cause.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Database(_))));
        if !strict && !refused {
            eprintln!(
                "session-reaper: warning: source.query: could not be checked: {} (database {}); retried every source.interval",
                describe(&e),
                database_label(url)
            );
            return Ok(());
        }
        eprintln!(
            "session-reaper: config: source.query: {} (database {}, {})",
            describe(&e),
            database_label(url),
            config.provenance.of("source.query")
        );
        return Err(Exit(EXIT_CONFIG as u8).into());
    }
    Ok(())
}

/// An exit code a command chose after reporting its problem itself.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

fn load_or_exit(load: impl FnOnce() -> Result<Config, config::ConfigErrors>) -> Result<Config, ExitCode> {
    load().map_err(|errors| {
        for line in &errors.0 {
            eprintln!("session-reaper: config: {line}");
        }
        ExitCode::from(EXIT_CONFIG as u8)
    })
}

/// An error as one line: each context, then the cause in words. A database error is cut to the
/// database's own message: sqlx's display repeats its source, and PostgreSQL's adds the line of
/// the server's C source it came from.
pub fn describe(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let part = if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            Some(describe_sqlx(e))
        } else {
            cause.downcast_ref::<std::io::Error>().map(describe_io)
        };
        match part {
            Some(part) => {
                parts.push(part);
                break;
            }
            None => parts.push(cause.to_string()),
        }
    }
    parts.dedup();
    parts.join(": ")
}

fn describe_sqlx(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(e) => e.message().to_owned(),
        sqlx::Error::Io(e) => describe_io(e),
        sqlx::Error::PoolTimedOut => "no connection within the pool's timeout".to_owned(),
        sqlx::Error::Tls(e) => format!("TLS: {e}"),
        sqlx::Error::Configuration(e) => e.to_string(),
        sqlx::Error::Protocol(e) => e.clone(),
        other => other.to_string(),
    }
}

fn describe_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::TimedOut => "timed out".to_owned(),
        ErrorKind::PermissionDenied => "permission denied".to_owned(),
        ErrorKind::NotFound => "not found".to_owned(),
        _ => error.to_string(),
    }
}

/// Opens the configured database and brings its schema up to date. A failure says what failed
/// in words (a pool timeout is replaced by the reason one direct connection gives, a SQLite file
/// in a missing directory says so); callers name the database.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = &config.database.url;
    let opened = async {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        anyhow::Ok(store)
    }
    .await;
    match opened {
        Ok(store) => Ok(store),
        Err(e) => Err(explain_open_failure(url, e).await),
    }
}

/// [`open_store`] with the database named in its error, for the operator commands.
pub async fn open_named(config: &Config) -> anyhow::Result<Store> {
    open_store(config).await.map_err(|e| name_database(config, e))
}

/// Prefixes an error with the database it concerns (path, or host:port/name; no password).
pub fn name_database(config: &Config, error: anyhow::Error) -> anyhow::Error {
    error.context(format!("database {}", database_label(&config.database.url)))
}

async fn explain_open_failure(url: &str, error: anyhow::Error) -> anyhow::Error {
    let timed_out = error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut)));
    if timed_out && let Some(cause) = Store::connect_error(url).await {
        return cause;
    }
    if url.starts_with("sqlite:") {
        let file = database_label(url);
        if let Some(dir) = std::path::Path::new(&file).parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return anyhow::anyhow!(
                "Failed to open the SQLite database: the directory {} does not exist",
                dir.display()
            );
        }
    }
    error
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_named(config).await?;
    tracing::info!(backend = store.backend(), "migrations applied");
    Ok(())
}
