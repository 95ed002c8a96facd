//! Starts the daemon from a small, fresh process, so its peak RSS is its own.
//!
//! Linux carries a process's peak RSS across `execve`: the child's `ru_maxrss` is at least the
//! high-water mark of the memory image it replaced. A child spawned straight from the bench
//! replaces a copy of (or, with `vfork`, the very) image of the bench, which has seeded a million
//! ids and so reports the bench's peak, not the daemon's. So the bench starts itself again in
//! spawner mode (a few MiB, no runtime), and that process spawns the daemon, reaps it with
//! `wait4` and reports on its stdout:
//!
//! ```text
//! pid <pid> <CLOCK_MONOTONIC ns just before spawn>
//! exit <wait status> <ru_maxrss KiB> <ru_utime µs> <ru_stime µs> <CLOCK_MONOTONIC ns at reaping> <ru_nvcsw> <ru_nivcsw>
//! ```
//!
//! The context switches are the daemon's, all its threads together (`/proc/<pid>/status`
//! counts the main thread's alone): voluntary ones are its wake-ups (each sleep on a futex, in
//! `epoll_wait` or a timer ends in one), involuntary ones are preemptions.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;

/// The first argument that turns the bench binary into the spawner.
pub const SPAWN_ARG: &str = "__reaper-bench-spawner";

/// The system-wide monotonic clock (what `Instant` reads), as nanoseconds.
fn mono_ns() -> u64 {
    // SAFETY: timespec is plain old data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `Instant` of a `mono_ns` reading taken in another process.
fn instant_of(ns: u64) -> Instant {
    let (now, now_ns) = (Instant::now(), mono_ns());
    now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(ns)))
        .unwrap_or(now)
}

/// The spawner's whole life: `args` are the program and its arguments.
pub fn spawner_main(args: &[OsString]) -> ExitCode {
    let Some((program, rest)) = args.split_first() else {
        eprintln!("reaper-bench spawner: no program");
        return ExitCode::FAILURE;
    };
    let mut out = std::io::stdout().lock();
    // The daemon's stdout joins its stderr (the log); ours carries only the two lines.
    let stderr = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    };
    let t0 = mono_ns();
    let child = match Command::new(program).args(rest).stdout(stderr).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("reaper-bench spawner: cannot start {}: {e}", program.to_string_lossy());
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id() as i32;
    let _ = writeln!(out, "pid {pid} {t0}");
    let _ = out.flush();
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our own unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            eprintln!("reaper-bench spawner: wait4 failed");
            return ExitCode::FAILURE;
        }
    }
    let t1 = mono_ns();
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    let _ = writeln!(
        out,
        "exit {status} {} {} {} {t1} {} {}",
        usage.ru_maxrss,
        micros(usage.ru_utime),
        micros(usage.ru_stime),
        usage.ru_nvcsw,
        usage.ru_nivcsw
    );
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// How the daemon ended.
pub struct Exited {
    pub status: i32,
    pub maxrss_kib: i64,
    pub user: Duration,
    pub sys: Duration,
    pub at: Instant,
    /// Context switches: voluntary (wake-ups) and involuntary (preemptions).
    pub switches: (u64, u64),
}

/// A daemon started through the spawner.
pub struct Spawned {
    pub pid: i32,
    /// Just before the daemon's spawn (the spawner's own start-up is not counted).
    pub started: Instant,
    pub exited: oneshot::Receiver<anyhow::Result<Exited>>,
}

/// Starts `program args` through the spawner; `configure` sets environment and stderr.
pub fn spawn(program: &Path, args: &[OsString], configure: impl FnOnce(&mut Command)) -> anyhow::Result<Spawned> {
    let bench = std::env::current_exe().context("Failed to find the bench's own path")?;
    let mut cmd = Command::new(bench);
    cmd.arg(SPAWN_ARG).arg(program).args(args);
    configure(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut spawner = cmd.spawn().context("Failed to start the spawner")?;
    let mut lines = BufReader::new(spawner.stdout.take().context("no spawner stdout")?).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let fields: Vec<&str> = first.split_whitespace().collect();
    let ["pid", pid, t0] = fields[..] else {
        let _ = spawner.wait();
        bail!(
            "could not start {} (spawner said {first:?}; see the log)",
            program.display()
        );
    };
    let pid: i32 = pid.parse()?;
    let started = instant_of(t0.parse()?);
    let (tx, exited) = oneshot::channel();
    std::thread::spawn(move || {
        let line = lines.next().transpose().ok().flatten().unwrap_or_default();
        let _ = spawner.wait();
        let _ = tx.send(parse_exit(&line));
    });
    Ok(Spawned { pid, started, exited })
}

fn parse_exit(line: &str) -> anyhow::Result<Exited> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, status, maxrss, user, sys, t1, voluntary, involuntary] = fields[..] else {
        bail!("the spawner ended without reporting the exit: {line:?}");
    };
    Ok(Exited {
        status: status.parse()?,
        maxrss_kib: maxrss.parse()?,
        user: Duration::from_micros(user.parse()?),
        sys: Duration::from_micros(sys.parse()?),
        at: instant_of(t1.parse()?),
        switches: (voluntary.parse()?, involuntary.parse()?),
    })
}
