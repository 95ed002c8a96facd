//! The command line: one subcommand per job, each with its own `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "session-reaper",
    version,
    about = "Deletes stale Zoho Office Integrator sessions recorded in a database table."
)]
pub struct Cli {
    /// TOML configuration file; defaults, then this file, then SESSION_REAPER_* variables.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: claim due sessions, delete them, record every outcome.
    Run {
        /// Process what is due now, then exit (for cron and Kubernetes Jobs).
        #[arg(long)]
        once: bool,
    },
    /// Create or update the database tables, then exit.
    Migrate,
    /// Read session ids from stdin, one per line, and mark them due now.
    Enqueue,
    /// Counts per state, backlog age and last success.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move rows back to `pending` with fresh attempts: every `failed` row, or the listed ids.
    Requeue {
        /// Requeue every `failed` row.
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        failed: bool,
        /// Session ids to requeue (any final state).
        ids: Vec<String>,
    },
    /// Delete finished rows older than a duration, in batches.
    Prune {
        /// Finished longer ago than this, like `30d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
    /// Print the effective configuration (apikey redacted); exit 78 if it is invalid.
    CheckConfig,
    /// See the whole job without a Zoho account: a local stand-in API, a SQLite file of
    /// sessions of every kind, the daemon until all are done, then `status`.
    Demo {
        /// SQLite file to create (replaced if it exists).
        #[arg(long, default_value = "session-reaper-demo.db")]
        database: PathBuf,
        /// How many sessions to seed.
        #[arg(long, default_value_t = 300)]
        sessions: usize,
    },
    /// Serve the stand-in API alone, for manual runs against a real database.
    StandIn {
        /// Address to listen on (keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:8099")]
        listen: SocketAddr,
        /// The apikey the stand-in accepts.
        #[arg(
            long,
            env = "SESSION_REAPER_STANDIN_APIKEY",
            default_value = "demo-key",
            hide_env_values = true
        )]
        apikey: String,
        /// Delay before every answer, like `100ms`.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        latency: std::time::Duration,
        /// Faults to inject, as JSON (see `Faults`), e.g. '{"html_502_percent": 10}'; changeable
        /// later with `POST /__standin/faults`.
        #[arg(long, value_name = "JSON")]
        faults: Option<String>,
    },
}
