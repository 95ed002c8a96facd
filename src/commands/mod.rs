//! What each subcommand does; `main.rs` only parses and hands over.

mod demo;
mod enqueue;
mod maintenance;
mod run;
pub(crate) mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{self, Config, EXIT_CONFIG, Sources};
use crate::store::Store;

/// Runs one command and turns its result into the process's exit code.
pub async fn execute(cli: Cli) -> ExitCode {
    let needs_apikey = matches!(cli.command, Command::Run { .. } | Command::CheckConfig);
    let load = || config::load(&Sources::from_process(cli.config.clone(), needs_apikey));
    let result = match cli.command {
        Command::StandIn {
            listen,
            apikey,
            latency,
            faults,
        } => demo::stand_in(listen, &apikey, latency, faults.as_deref()).await,
        Command::Demo { database, sessions } => match load_or_exit(load) {
            Ok(config) => demo::demo(config, &database, sessions).await,
            Err(code) => return code,
        },
        Command::CheckConfig => match load_or_exit(load) {
            Ok(config) => {
                println!("{}", config.render());
                Ok(())
            }
            Err(code) => return code,
        },
        command => {
            let config = match load_or_exit(load) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let _logs = crate::telemetry::init(&config.log);
            match command {
                Command::Run { once } => run::run(config, once).await,
                Command::Migrate => migrate(&config).await,
                Command::Enqueue => enqueue::enqueue(&config).await,
                Command::Status { json } => status::status(&config, json).await,
                Command::Requeue { failed, ids } => maintenance::requeue(&config, failed, &ids).await,
                Command::Prune { older_than } => maintenance::prune(&config, older_than).await,
                _ => unreachable!("handled above"),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<Exit>() {
                return ExitCode::from(exit.0);
            }
            eprintln!("session-reaper: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

/// Opens the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database.url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    tracing::info!(backend = store.backend(), "migrations applied");
    Ok(())
}
