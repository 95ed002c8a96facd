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
    Enqueue {
        /// Whose sessions they are: writer, sheet, show or pdf (where each DELETE goes).
        #[arg(long, default_value = "writer", value_name = "NAME")]
        editor: crate::editor::Editor,
    },
    /// Counts per state, backlog age and last success. Only reads: it never creates, migrates
    /// or writes the database (a missing file or table is an error).
    Status {
        /// One JSON object instead of text (with --watch, one object per line).
        #[arg(long)]
        json: bool,
        /// Show it again every SECS seconds (default 2) until Ctrl-C; on a terminal the screen
        /// is redrawn.
        #[arg(
            long,
            value_name = "SECS",
            num_args = 0..=1,
            default_missing_value = "2",
            value_parser = clap::value_parser!(u64).range(1..=3600)
        )]
        watch: Option<u64>,
    },
    /// Move final rows back to `pending` with fresh attempts: every `failed` row, or the listed
    /// ids. Ids without a row, or whose row is not final, are reported (exit 65).
    Requeue {
        /// Requeue every `failed` row.
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        failed: bool,
        /// Print which rows would move (row ids and 8-character session prefixes); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Session ids to requeue (any final state).
        ids: Vec<String>,
    },
    /// Delete finished rows older than a duration, in batches.
    Prune {
        /// Finished longer ago than this, like `30d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Print how many rows would be deleted, per state; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the effective configuration (apikey redacted); exit 78 if it is invalid.
    CheckConfig,
    /// See the whole job without a Zoho account: a local stand-in API, a SQLite file of
    /// sessions of every kind, the daemon until all are done, then `status`.
    Demo {
        /// SQLite file to create. An existing file is replaced only if an earlier `demo` made it;
        /// any other file is left alone (exit 1).
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
