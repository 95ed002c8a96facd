//! `reaper-bench`: measures the daemon side by side with a bare HTTP client against the stand-in
//! API, all on loopback, and prints one Markdown table. See `bench/README.md`.
//!
//! Every process is separate: the stand-in (`session-reaper stand-in`), each daemon run
//! (`session-reaper run`, configured by environment variables) and this bench, which seeds the
//! databases, drives the ceiling client, polls the stand-in's counters and reaps the daemon with
//! `wait4` for its peak RSS and CPU time.

mod ceiling;
mod daemon;
mod db;
mod noise;
mod report;
mod run;
mod sections;
mod spawner;
mod standin;
mod store_only;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use report::Report;
use run::{Ctx, Sizes};

/// When the bench started, for the progress lines on stderr.
pub static STARTED: OnceLock<Instant> = OnceLock::new();

#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[{:>6.1}s] {}", $crate::STARTED.get_or_init(std::time::Instant::now).elapsed().as_secs_f64(),
            format_args!($($arg)*))
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Ceiling vs daemon on SQLite and PostgreSQL, batch sweep, CPU per deletion, start-up.
    Throughput,
    /// The store's claim and write_outcomes alone, no HTTP: what the database allows.
    Store,
    /// 100 ms answers: sessions/s against 0.95 × concurrency / 0.1 s.
    Latency,
    /// 200/s limit: mean rate and the busiest second.
    Rate,
    /// Peak RSS with a small and a large backlog.
    Memory,
    /// Spawn to first request; SIGTERM to exit with every slot in flight.
    StartStop,
    /// CPU and context switches per deletion at 20/s and 200/s against full speed, log level info.
    Pace,
}

#[derive(Debug, Parser)]
#[command(
    name = "reaper-bench",
    about = "Benchmarks session-reaper against its stand-in API on loopback."
)]
struct Args {
    /// Rows for the throughput runs [default: 100000, --quick 5000].
    #[arg(long)]
    rows: Option<usize>,
    /// Small sizes for a smoke run of every section.
    #[arg(long)]
    quick: bool,
    /// Leave PostgreSQL out.
    #[arg(long)]
    skip_postgres: bool,
    /// Run only these sections (repeatable).
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// Server on which a database is created (and dropped) for the PostgreSQL runs.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// worker.batch_size of the main runs.
    #[arg(long, default_value_t = 256)]
    batch_size: u32,
    /// Other batch sizes to try on SQLite in the throughput section (comma-separated; "" for none).
    #[arg(long, value_delimiter = ',', default_value = "16,1024")]
    sweep: Vec<String>,
    /// Large backlog of the memory section [default: 1000000, --quick 100000].
    #[arg(long)]
    memory_rows: Option<usize>,
    /// How long the daemon works on the large backlog before SIGTERM [default: 20, --quick 5].
    #[arg(long)]
    memory_seconds: Option<u64>,
    /// The session-reaper binary [default: next to this one].
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Command prefix for every daemon run, e.g. "valgrind --tool=callgrind" (profiling only:
    /// the RSS and CPU figures are then the wrapper's).
    #[arg(long, allow_hyphen_values = true)]
    daemon_wrapper: Option<String>,
    /// Another session-reaper binary (an older build) to measure beside this one in the pace
    /// section, each case right after this one's.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Where databases and logs go [default: a new folder in the temp dir, removed at the end].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Keep the work folder (logs) at the end.
    #[arg(long)]
    keep: bool,
}

fn sizes(args: &Args) -> anyhow::Result<Sizes> {
    let quick = args.quick;
    let sweep = args
        .sweep
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().context("--sweep takes batch sizes"))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    Ok(Sizes {
        rows: args.rows.unwrap_or(if quick { 5_000 } else { 100_000 }),
        concurrency: args.concurrency,
        batch_size: args.batch_size,
        sweep,
        latency_rows: if quick { 2_000 } else { 10_000 },
        rate_rows: if quick { 1_000 } else { 4_000 },
        memory_small: 10_000,
        memory_large: args.memory_rows.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
        memory_seconds: args.memory_seconds.unwrap_or(if quick { 5 } else { 20 }),
        stop_rows: 1_000,
    })
}

/// The session-reaper binary: the one cargo built next to this bench, rebuilt if cargo runs us.
fn daemon_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.daemon {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("Failed to find the bench's own path")?;
    let dir = exe.parent().context("the bench binary has no folder")?;
    let bin = dir.join("session-reaper");
    // Under `cargo run`, make sure the daemon is built from the same sources as the bench.
    if let (Ok(cargo), Ok(manifest)) = (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_DIR")) {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let target_dir = dir.parent().context("the bench binary's folder has no parent")?;
        let mut build = std::process::Command::new(cargo);
        // What `cargo run` set for us would otherwise look like a change to the build scripts
        // (ring reruns on CARGO_MANIFEST_DIR) and rebuild half the tree, twice per bench run.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|prefix| key_text.starts_with(prefix))
            {
                build.env_remove(&key);
            }
        }
        // The bench's manifest names the workspace, and `-p` picks the daemon's package in it.
        build
            .args(["build", "-p", "session-reaper", "--bin", "session-reaper"])
            .arg("--target-dir")
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(PathBuf::from(manifest).join("Cargo.toml"));
        if release {
            build.arg("--release");
        }
        let status = build.status().context("Failed to run cargo build")?;
        anyhow::ensure!(status.success(), "cargo build of session-reaper failed");
    }
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release` (or pass --daemon PATH)",
        bin.display()
    );
    Ok(bin)
}

/// The commit the bench was built from, and whether the work tree had changes (read-only git);
/// `REAPER_BENCH_SOURCE` names it when the bench runs from a copy without `.git`.
fn source_version() -> String {
    if let Ok(label) = std::env::var("REAPER_BENCH_SOURCE") {
        return label;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    std::process::Command::new("git")
        .args(["-C", &dir, "describe", "--always", "--dirty", "--abbrev=10"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown (not run from the repository)".into())
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == spawner::SPAWN_ARG) {
        return spawner::spawner_main(&argv[2..]);
    }
    STARTED.get_or_init(Instant::now);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("reaper-bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(Args::parse())) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("reaper-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the sections; returns how many sections could not run plus how many goals failed
/// (`--quick` judges none).
async fn bench(args: Args) -> anyhow::Result<usize> {
    let machine = noise::machine();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let load_before = noise::load_average();
    let daemon_bin = daemon_binary(&args)?;
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("reaper-bench-{}", std::process::id())));
    std::fs::create_dir_all(&workdir).with_context(|| format!("Failed to create {}", workdir.display()))?;
    let selected = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut postgres_about = String::from("not used");
    let postgres = if args.skip_postgres {
        Err("skipped (--skip-postgres)".to_owned())
    } else if !selected(Section::Throughput) && !selected(Section::Store) {
        Err("not in --only".to_owned())
    } else {
        match db::postgres_ready(&args.postgres_url).await {
            Ok(about) => {
                postgres_about = about;
                Ok(args.postgres_url.clone())
            }
            Err(e) => {
                progress!("PostgreSQL unreachable, its runs are skipped: {e:#}");
                Err(format!("PostgreSQL unreachable: {e:#}"))
            }
        }
    };
    let ctx = Ctx {
        daemon_bin,
        wrapper: args
            .daemon_wrapper
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        compare: args.compare.clone(),
        workdir: workdir.clone(),
        postgres,
        sizes: sizes(&args)?,
    };
    progress!("daemon {}; work folder {}", ctx.daemon_bin.display(), workdir.display());

    let mut report = Report {
        not_judged: args.quick,
        ..Report::default()
    };
    let mut broken = 0;
    let whole = noise::sample();
    for section in Section::value_variants().iter().copied().filter(|s| selected(*s)) {
        let name = section
            .to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_owned();
        let before = noise::sample();
        let result = match section {
            Section::Throughput => sections::throughput(&ctx, &mut report).await,
            Section::Store => store_only::section(&ctx, &mut report).await,
            Section::Latency => sections::latency(&ctx, &mut report).await,
            Section::Rate => sections::rate(&ctx, &mut report).await,
            Section::Memory => sections::memory(&ctx, &mut report).await,
            Section::StartStop => sections::start_stop(&ctx, &mut report).await,
            Section::Pace => sections::pace(&ctx, &mut report).await,
        };
        if let Err(e) = result {
            broken += 1;
            report.add(
                format!("section {name}"),
                format!("could not run: {e:#}"),
                "—",
                report::Verdict::Fail,
            );
        }
        let n = noise::between(&before, &noise::sample(), machine.cpus);
        report.noise.push(format!(
            "| {name} | {} | {:.1} CPU-s | {:.1} CPU-s | {:.1} CPU-s ({:.0} % of all CPUs) | {:.1} s |",
            format_args!("{:.0} s", n.elapsed.as_secs_f64()),
            n.ours.as_secs_f64(),
            n.postgres.as_secs_f64(),
            n.others.as_secs_f64(),
            n.others_share * 100.0,
            n.steal.as_secs_f64()
        ));
    }
    let all = noise::between(&whole, &noise::sample(), machine.cpus);

    let command: Vec<String> = std::env::args().collect();
    println!("## session-reaper benchmark\n");
    println!("- date: {date}");
    println!("- command: `{}`", command.join(" "));
    println!(
        "- machine: {} CPUs ({}), {} RAM, Linux {}",
        machine.cpus, machine.model, machine.memory, machine.kernel
    );
    println!(
        "- daemon: `{}`; work tree of the bench: {}",
        ctx.daemon_bin.display(),
        source_version()
    );
    println!("- PostgreSQL: {postgres_about}");
    println!(
        "- load average (1/5/15 min) before: {load_before}; after: {}",
        noise::load_average()
    );
    println!(
        "- CPU-s used during the run, of {:.0} available: bench, stand-ins and daemons {:.0}; PostgreSQL \
         server {:.0}; other processes (noise) {:.0} ({:.0} % of all CPUs); steal {:.1}",
        all.elapsed.as_secs_f64() * machine.cpus as f64,
        all.ours.as_secs_f64(),
        all.postgres.as_secs_f64(),
        all.others.as_secs_f64(),
        all.others_share * 100.0,
        all.steal.as_secs_f64()
    );
    println!("- failed goals: {}\n", report.failures());
    println!("{}", report.markdown());
    println!("CPU time per section (\"others\" is the noise: processes that are not part of the bench):\n");
    println!(
        "| section | wall | bench + stand-in + daemons | PostgreSQL server | others | steal |\n|---|---|---|---|---|---|"
    );
    for line in &report.noise {
        println!("{line}");
    }
    if args.keep || args.workdir.is_some() {
        progress!("logs kept in {}", workdir.display());
    } else {
        let _ = std::fs::remove_dir_all(&workdir);
    }
    // A goal not met is a failed run (exit 2), like a section that could not run.
    Ok(broken + report.failures())
}
