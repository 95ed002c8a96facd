//! Entry point: parse the command line and hand over to the library, which picks the runtime
//! once the configuration is loaded (`session_reaper::runtime`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    session_reaper::commands::main(session_reaper::cli::Cli::parse())
}
