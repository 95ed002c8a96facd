//! One `session-reaper run` child: configured only through `SESSION_REAPER_*` variables, timed
//! from spawn to exit, stopped by SIGTERM when asked, and reaped with `wait4` (by the spawner) so
//! its peak RSS and CPU time are its own (not the bench's, not the stand-in's).

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::spawner;
use crate::standin::StandInProc;
use anyhow::Context;
use testkit::DaemonEnv;

/// How often the stand-in is asked for its counters while the bench waits for an event there.
const POLL: Duration = Duration::from_millis(5);
/// How often the daemon's RSS parts and the watched file are sampled.
const SAMPLE: Duration = Duration::from_millis(50);
/// After a timeout's SIGTERM, how long the daemon gets (its shutdown.grace is 20 s) before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(30);

/// When the bench sends SIGTERM.
#[derive(Debug, Clone, Copy)]
pub enum StopRule {
    /// Never: the daemon exits by itself (`run --once`).
    Never,
    /// This long after spawn.
    After(Duration),
    /// As soon as the stand-in has seen this many requests from this run.
    WhenRequests(u64),
}

/// What to run.
pub struct DaemonSpec<'a> {
    pub bin: &'a Path,
    /// A command prefix, like `valgrind --tool=callgrind`, for profiling runs.
    pub wrapper: &'a [String],
    pub database_url: String,
    pub concurrency: u32,
    pub rate_per_second: u32,
    pub burst: u32,
    pub batch_size: u32,
    /// `run --once` (exits when what was due at its start is done) or the daemon proper.
    pub once: bool,
    pub stop: StopRule,
    /// The hard bound: SIGTERM at this age, SIGKILL `KILL_AFTER` later.
    pub timeout: Duration,
    /// `log.level`: `warn` for most runs (a clean run writes nothing), `info` (the default,
    /// one line per deletion) where the bench measures what production runs.
    pub log_level: &'a str,
    /// The daemon's stderr goes here.
    pub log: PathBuf,
    /// A file whose largest size is worth knowing (SQLite's `-wal`).
    pub watch_file: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct DaemonRun {
    /// Spawn to exit, as seen by the bench.
    pub wall: Duration,
    /// Spawn to the first request the stand-in counted (5 ms polling).
    pub first_request: Option<Duration>,
    /// SIGTERM to exit, when the bench sent one.
    pub term_to_exit: Option<Duration>,
    /// Spawn to SIGTERM.
    pub term_at: Option<Duration>,
    pub exit: String,
    pub exit_ok: bool,
    pub timed_out: bool,
    pub maxrss_kib: i64,
    pub user: Duration,
    pub sys: Duration,
    /// Lines the daemon wrote to stderr at warn or above (a clean run writes none).
    pub log_lines: Vec<String>,
    /// Every line the daemon wrote to stderr, at any level.
    pub all_log_lines: usize,
    /// Context switches of the daemon, all threads: voluntary (wake-ups), involuntary.
    pub switches: (u64, u64),
    /// The largest of each RSS part seen in `/proc/<pid>/status` (sampled every 50 ms), KiB.
    pub rss_parts: RssParts,
    /// The largest size of `watch_file` seen, bytes.
    pub watch_max_bytes: u64,
    /// RSS parts about once a second, to tell growth from a plateau.
    pub rss_timeline: Vec<(Duration, RssParts)>,
}

/// RSS by kind, in KiB: heap and stacks; mapped files (the binary, libraries); shared memory
/// (SQLite's `-shm` wal-index is a mapped file and shows here or under file).
#[derive(Debug, Clone, Copy, Default)]
pub struct RssParts {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl RssParts {
    fn sample(pid: i32) -> Option<RssParts> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(RssParts {
            anon: kib("RssAnon:"),
            file: kib("RssFile:"),
            shmem: kib("RssShmem:"),
        })
    }

    fn max(self, other: RssParts) -> RssParts {
        RssParts {
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
            shmem: self.shmem.max(other.shmem),
        }
    }

    pub fn total_mib(&self) -> f64 {
        (self.anon + self.file + self.shmem) as f64 / 1024.0
    }

    pub fn describe(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "largest parts seen: anon {:.1}, file {:.1}, shmem {:.1} MiB",
            mib(self.anon),
            mib(self.file),
            mib(self.shmem)
        )
    }
}

impl DaemonRun {
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }

    pub fn maxrss_mib(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }
}

fn describe_status(status: i32) -> (String, bool) {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (format!("exit {code}"), code == 0)
    } else if libc::WIFSIGNALED(status) {
        (format!("killed by signal {}", libc::WTERMSIG(status)), false)
    } else {
        (format!("wait status {status}"), false)
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child; the caller checks that it has not been reaped.
    unsafe { libc::kill(pid, sig) };
}

/// Runs the daemon against `standin` and measures it.
pub async fn run(spec: &DaemonSpec<'_>, standin: &StandInProc) -> anyhow::Result<DaemonRun> {
    let baseline = standin.counters().await?.requests;
    let log_file = File::create(&spec.log).context("Failed to create the daemon log")?;
    let (program, mut args): (PathBuf, Vec<OsString>) = match spec.wrapper.split_first() {
        Some((program, rest)) => (
            program.into(),
            rest.iter()
                .map(OsString::from)
                .chain([spec.bin.as_os_str().to_owned()])
                .collect(),
        ),
        None => (spec.bin.to_path_buf(), Vec::new()),
    };
    args.push("run".into());
    if spec.once {
        args.push("--once".into());
    }
    let env = DaemonEnv::new(&spec.database_url, &standin.base_url, &standin.apikey)
        .set("worker.concurrency", spec.concurrency)
        .set("worker.rate_per_second", spec.rate_per_second)
        .set("worker.burst", spec.burst)
        .set("worker.batch_size", spec.batch_size)
        .set("log.level", spec.log_level);
    let spawned = spawner::spawn(&program, &args, |cmd| {
        env.apply(cmd);
        cmd.stderr(log_file);
    })?;
    let (pid, started, mut exited) = (spawned.pid, spawned.started, spawned.exited);

    let mut result = DaemonRun::default();
    let mut term_sent: Option<Instant> = None;
    let mut killed = false;
    let mut sampled = Instant::now() - SAMPLE;
    let reaped = loop {
        if sampled.elapsed() >= SAMPLE {
            sampled = Instant::now();
            if let Some(parts) = RssParts::sample(pid) {
                result.rss_parts = result.rss_parts.max(parts);
                let age = started.elapsed();
                if result
                    .rss_timeline
                    .last()
                    .is_none_or(|(t, _)| age >= *t + Duration::from_secs(1))
                {
                    result.rss_timeline.push((age, parts));
                }
            }
            if let Some(size) = spec.watch_file.as_ref().and_then(|f| std::fs::metadata(f).ok()) {
                result.watch_max_bytes = result.watch_max_bytes.max(size.len());
            }
        }
        let watching = result.first_request.is_none() || matches!(spec.stop, StopRule::WhenRequests(_));
        let nap = if watching && term_sent.is_none() {
            POLL
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            reaped = &mut exited => break reaped.context("the spawner's reader died")??,
            _ = tokio::time::sleep(nap) => {}
        }
        if watching
            && term_sent.is_none()
            && let Ok(counters) = standin.counters().await
        {
            let seen = counters.requests.saturating_sub(baseline);
            if seen > 0 && result.first_request.is_none() {
                result.first_request = Some(started.elapsed());
            }
            if let StopRule::WhenRequests(n) = spec.stop
                && seen >= n
            {
                signal(pid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
        }
        let age = started.elapsed();
        if term_sent.is_none() {
            let due = matches!(spec.stop, StopRule::After(d) if age >= d);
            if due || age >= spec.timeout {
                result.timed_out = !due;
                signal(pid, libc::SIGTERM);
                term_sent = Some(Instant::now());
            }
        } else if !killed && term_sent.is_some_and(|t| t.elapsed() >= KILL_AFTER) {
            eprintln!("  daemon did not exit {KILL_AFTER:?} after SIGTERM: SIGKILL");
            signal(pid, libc::SIGKILL);
            killed = true;
        }
    };

    result.wall = reaped.at - started;
    result.term_at = term_sent.map(|t| t - started);
    result.term_to_exit = term_sent.map(|t| reaped.at - t);
    (result.exit, result.exit_ok) = describe_status(reaped.status);
    result.maxrss_kib = reaped.maxrss_kib;
    (result.user, result.sys) = (reaped.user, reaped.sys);
    result.switches = reaped.switches;
    let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
    result.all_log_lines = log.lines().count();
    // At `info` every deletion has its line; what the verification shows is the first problem.
    result.log_lines = log
        .lines()
        .filter(|line| !line.contains(r#""level":"INFO""#) && !line.contains(r#""level":"DEBUG""#))
        .map(str::to_owned)
        .collect();
    if !result.log_lines.is_empty() {
        eprintln!(
            "  the daemon logged {} line(s) at warn or above ({}), first: {}",
            result.log_lines.len(),
            spec.log.display(),
            result.log_lines[0]
        );
    }
    Ok(result)
}
