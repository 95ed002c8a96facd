//! The machine the numbers came from, and how busy others kept it: the CPU the whole machine
//! spent (`/proc/stat`) minus what the bench and its reaped children spent (`getrusage`) and
//! minus the PostgreSQL server's share (`/proc/<pid>/stat` of its processes).

use std::time::{Duration, Instant};

/// The machine, for the report's header.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub memory: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        model,
        memory,
        kernel,
    }
}

fn usage(who: i32) -> Duration {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let tv = |tv: libc::timeval| Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + sys) of the bench process itself.
pub fn own_cpu() -> Duration {
    usage(libc::RUSAGE_SELF)
}

/// A point in time: the machine's busy CPU time, and the bench's share of it.
#[derive(Clone, Copy)]
pub struct Sample {
    at: Instant,
    machine_busy: Duration,
    steal: Duration,
    ours: Duration,
    postgres: Duration,
}

/// Busy and steal time of all CPUs since boot, from the first line of `/proc/stat`.
fn proc_stat() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = ticks(0) + ticks(1) + ticks(2) + ticks(5) + ticks(6);
    (
        Duration::from_secs_f64(busy as f64 / hz),
        Duration::from_secs_f64(ticks(7) as f64 / hz),
    )
}

pub fn sample() -> Sample {
    let (machine_busy, steal) = proc_stat();
    Sample {
        at: Instant::now(),
        machine_busy,
        steal,
        ours: usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN),
        postgres: postgres_cpu(),
    }
}

/// Between two samples: CPU-seconds others used, as a share of all CPUs' time.
pub struct Noise {
    pub elapsed: Duration,
    pub ours: Duration,
    /// The PostgreSQL server: part of the work when the daemon runs on it, not noise.
    pub postgres: Duration,
    pub others: Duration,
    pub steal: Duration,
    pub others_share: f64,
}

pub fn between(a: &Sample, b: &Sample, cpus: usize) -> Noise {
    let elapsed = b.at - a.at;
    let ours = b.ours.saturating_sub(a.ours);
    let postgres = b.postgres.saturating_sub(a.postgres);
    let others = b
        .machine_busy
        .saturating_sub(a.machine_busy)
        .saturating_sub(ours)
        .saturating_sub(postgres);
    Noise {
        elapsed,
        ours,
        postgres,
        others,
        steal: b.steal.saturating_sub(a.steal),
        others_share: others.as_secs_f64() / (elapsed.as_secs_f64() * cpus as f64).max(1e-9),
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time (user + sys) spent by the PostgreSQL server on this machine so far: every live
/// `postgres` process, plus what the postmaster collected from backends that already exited.
pub fn postgres_cpu() -> Duration {
    let mut procs = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // After the state: ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt,
        // cmajflt, utime, stime, cutime, cstime.
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        procs.insert(
            pid,
            (comm, field(0) as u32, field(10) + field(11), field(12) + field(13)),
        );
    }
    let is_postgres = |pid: &u32| procs.get(pid).is_some_and(|(comm, ..)| comm == "postgres");
    let ticks: u64 = procs
        .iter()
        .filter(|(pid, _)| is_postgres(pid))
        .map(|(_, (_, ppid, own, children))| own + if is_postgres(ppid) { 0 } else { *children })
        .sum();
    ticks_to_duration(ticks)
}

/// CPU ticks (user + sys) of each PostgreSQL backend connected to database `db`, by pid; the
/// backends name their database in their process title.
pub fn backend_ticks(db: &str) -> std::collections::HashMap<u32, u64> {
    let mut ticks = std::collections::HashMap::new();
    let needle = format!(" {db} ");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline);
        if !title.starts_with("postgres: ") || !title.contains(&needle) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<u64> = stat[close + 1..]
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // Counted from ppid on, utime and stime are the 11th and 12th fields.
        ticks.insert(
            pid,
            fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0),
        );
    }
    ticks
}

/// Ticks as time.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz)
}
