//! What every section shares: the bench's settings, one seeded daemon run against a stand-in,
//! and the check that the run left the table and the stand-in as it should.

use std::path::PathBuf;
use std::time::Duration;

use session_reaper::store::{State, StatusReport};

use crate::daemon::{self, DaemonRun, DaemonSpec, StopRule};
use crate::db::Db;
use crate::standin::{Counters, StandInProc};

/// Sizes and settings of one bench run (`--quick` shrinks them).
pub struct Sizes {
    pub rows: usize,
    pub concurrency: u32,
    pub batch_size: u32,
    /// Other batch sizes tried on SQLite.
    pub sweep: Vec<u32>,
    pub latency_rows: usize,
    pub rate_rows: usize,
    pub memory_small: usize,
    pub memory_large: usize,
    /// How long the daemon works on the large backlog before SIGTERM.
    pub memory_seconds: u64,
    pub stop_rows: usize,
}

pub struct Ctx {
    pub daemon_bin: PathBuf,
    pub wrapper: Vec<String>,
    /// `--compare`: another daemon binary measured beside this one in the pace section.
    pub compare: Option<PathBuf>,
    pub workdir: PathBuf,
    /// The admin URL, when the server answered and `--skip-postgres` was not given.
    pub postgres: Result<String, String>,
    pub sizes: Sizes,
}

/// One daemon run on a freshly seeded database, with the stand-in's counters around it.
pub struct Measured {
    pub rows: usize,
    pub seed_time: Duration,
    pub run: DaemonRun,
    pub before: Counters,
    pub after: Counters,
    pub status: StatusReport,
    /// CPU time of the PostgreSQL backends serving the daemon's database (zero on SQLite).
    pub postgres_cpu: Duration,
    /// The most rows leased at once (claimed, outcome not written yet), sampled every 100 ms.
    pub max_leased: i64,
    /// What the design bounds that by: every slot, the writer's queue (4 batches) and the batch
    /// it is writing.
    pub lease_bound: i64,
}

/// Watches the database while the daemon runs, from a task of its own so the daemon's timing
/// loop is never held up: rows leased at once, and the CPU of the daemon's PostgreSQL backends.
struct Watch {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(i64, Duration)>,
}

impl Watch {
    async fn start(db: &Db) -> anyhow::Result<Watch> {
        let probe = db.lease_probe().await?;
        let name = db.postgres_name().map(str::to_owned);
        let own_backend = probe.backend_pid();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut max_leased = 0;
            let mut backends: std::collections::HashMap<u32, u64> = Default::default();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                if let Ok(n) = probe.leased().await {
                    max_leased = max_leased.max(n);
                }
                if let Some(name) = &name {
                    for (pid, ticks) in crate::noise::backend_ticks(name) {
                        if Some(pid) == own_backend {
                            continue;
                        }
                        let seen = backends.entry(pid).or_default();
                        *seen = (*seen).max(ticks);
                    }
                }
            }
            probe.close().await;
            (max_leased, crate::noise::ticks_to_duration(backends.values().sum()))
        });
        Ok(Watch { stop, task })
    }

    async fn stop(self) -> (i64, Duration) {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

impl Measured {
    pub fn requests(&self) -> u64 {
        self.after.requests - self.before.requests
    }

    /// Sessions per second from spawn to exit.
    pub fn per_second(&self) -> f64 {
        self.status.count(State::Deleted) as f64 / self.run.wall.as_secs_f64()
    }

    /// Sessions per second from the first request to exit (start-up left out).
    pub fn per_second_working(&self) -> Option<f64> {
        let first = self.run.first_request?;
        Some(self.status.count(State::Deleted) as f64 / (self.run.wall - first).as_secs_f64())
    }

    /// The most rows leased at once, against the bound the design implies.
    pub fn lease_line(&self) -> (String, String, bool) {
        (
            format!("{} rows", self.max_leased),
            format!("≤ {} (concurrency + 6 × batch_size)", self.lease_bound),
            self.max_leased <= self.lease_bound,
        )
    }

    /// Voluntary and involuntary context switches per deletion (all the daemon's threads).
    pub fn switches_per_deletion(&self) -> (f64, f64) {
        let n = self.status.count(State::Deleted).max(1) as f64;
        (self.run.switches.0 as f64 / n, self.run.switches.1 as f64 / n)
    }

    /// CPU seconds per 10,000 deletions.
    pub fn cpu_per_10k(&self) -> f64 {
        self.run.cpu().as_secs_f64() * 10_000.0 / self.status.count(State::Deleted).max(1) as f64
    }

    /// Whether the table and the stand-in agree with the run: every request's outcome written as
    /// `deleted`, nothing sent twice, nothing left leased, a clean exit. With `complete`, every
    /// seeded row must also be deleted. Warnings in the log are shown, not failed.
    pub fn verify(&self, complete: bool) -> (String, bool) {
        let s = &self.status;
        let deleted = s.count(State::Deleted);
        let other = s.count(State::Gone) + s.count(State::Failed) + s.count(State::Invalid);
        let (pending, retrying) = (s.count(State::Pending), s.count(State::Retrying));
        let requests = self.requests();
        let twice = self.after.deleted_twice - self.before.deleted_twice;
        let off = self.after.off_contract - self.before.off_contract;
        let logged = match self.run.log_lines.first() {
            None => "0 log lines".to_owned(),
            Some(first) => format!("{} log lines, first: {}", self.run.log_lines.len(), log_message(first)),
        };
        let value = format!(
            "{deleted}/{} deleted, {pending} pending, {retrying} retrying, {other} other, {} leased; \
             stand-in {requests} requests, {twice} repeats, {off} off-contract; {}; {logged}",
            self.rows, s.in_flight, self.run.exit
        );
        let ok = deleted as u64 == requests
            && twice == 0
            && off == 0
            && other == 0
            && retrying == 0
            && s.in_flight == 0
            && deleted + pending == self.rows as i64
            && (!complete || deleted == self.rows as i64)
            // `run --once` stopped by SIGTERM with rows left exits 75 (the README's exit codes).
            && (self.run.exit_ok || (!complete && self.run.term_at.is_some() && self.run.exit == "exit 75"))
            && !self.run.timed_out;
        (value, ok)
    }
}

impl Ctx {
    /// The settings every daemon run starts from; sections change what they study.
    pub fn spec(&self, db: &Db, log: &str) -> DaemonSpec<'_> {
        DaemonSpec {
            bin: &self.daemon_bin,
            wrapper: &self.wrapper,
            database_url: db.url(),
            concurrency: self.sizes.concurrency,
            rate_per_second: 1_000_000,
            burst: 1_000,
            batch_size: self.sizes.batch_size,
            once: true,
            stop: StopRule::Never,
            log_level: "warn",
            timeout: Duration::from_secs(120),
            log: self.workdir.join(log),
            watch_file: db.wal_path(),
        }
    }

    /// Seeds `rows` into `db`, runs the daemon as `spec` says, and reads the table back.
    pub async fn measure(
        &self,
        standin: &StandInProc,
        db: &Db,
        rows: usize,
        spec: DaemonSpec<'_>,
    ) -> anyhow::Result<Measured> {
        self.measure_with(standin, db, rows, spec, false).await
    }

    /// As `measure`; with `analyze`, runs `ANALYZE` between seeding and the daemon.
    pub async fn measure_with(
        &self,
        standin: &StandInProc,
        db: &Db,
        rows: usize,
        spec: DaemonSpec<'_>,
        analyze: bool,
    ) -> anyhow::Result<Measured> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let seed_time = db.seed(rows, &tag).await?;
        if analyze {
            db.analyze().await?;
        }
        crate::progress!(
            "  seeded {rows} rows in {:.1} s; daemon starts",
            seed_time.as_secs_f64()
        );
        let (spec_concurrency, spec_batch) = (spec.concurrency, spec.batch_size);
        let before = standin.counters().await?;
        let watch = Watch::start(db).await?;
        let run = daemon::run(&spec, standin).await;
        let (max_leased, postgres_cpu) = watch.stop().await;
        let run = run?;
        let after = standin.counters().await?;
        let status = db.status().await?;
        crate::progress!(
            "  daemon: {} after {:.2} s, {} requests, peak RSS {:.1} MiB, CPU {:.2} s",
            run.exit,
            run.wall.as_secs_f64(),
            after.requests - before.requests,
            run.maxrss_mib(),
            run.cpu().as_secs_f64()
        );
        Ok(Measured {
            rows,
            seed_time,
            run,
            before,
            after,
            status,
            postgres_cpu,
            max_leased,
            lease_bound: i64::from(spec_concurrency) + 6 * i64::from(spec_batch),
        })
    }
}

/// The message of a JSON log line (and its summary field, for sqlx's slow-statement warning).
fn log_message(line: &str) -> String {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.chars().take(160).collect();
    };
    let fields = &json["fields"];
    let text = |key: &str| fields[key].as_str().map(str::to_owned);
    let mut message = text("message").unwrap_or_default();
    if let Some(summary) = text("summary") {
        message.push_str(&format!(" ({summary}"));
        if let Some(elapsed) = text("elapsed") {
            message.push_str(&format!(", {elapsed}"));
        }
        message.push(')');
    }
    format!("{} {message}", json["level"].as_str().unwrap_or_default())
}
