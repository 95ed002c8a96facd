//! Entry point: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    session_reaper::commands::execute(session_reaper::cli::Cli::parse()).await
}
