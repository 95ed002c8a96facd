//! The cluster as one API client: several daemon processes on one database share one exact
//! budget (measured from the stand-in's log of arrivals, in every sliding one-second window) and
//! one pause. Both backends.

use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::State;

use crate::helpers::{APIKEY, Daemon, TestDb, backends, daemon, daemon_env, run_daemon, standin, text};

/// One of these tests at a time: each runs several daemons whose timing it measures, and two of
/// them together on a small machine measure its scheduler more than the budget.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The busiest sliding one-second window, and the mean rate over the whole seconds between the
/// first arrival's second and the last one's (both cut short, so left out).
fn pace(arrivals: &[Instant]) -> (usize, f64) {
    let mut times = arrivals.to_vec();
    times.sort_unstable();
    let busiest = (0..times.len())
        .map(|i| times[i..].partition_point(|t| *t < times[i] + Duration::from_secs(1)))
        .max()
        .unwrap_or(0);
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        return (0, 0.0);
    };
    let whole = (*last - *first).as_secs();
    if whole < 3 {
        return (busiest, 0.0);
    }
    let from = *first + Duration::from_secs(1);
    let to = *first + Duration::from_secs(whole);
    let inside = times.iter().filter(|t| **t >= from && **t < to).count();
    (busiest, inside as f64 / (whole - 1) as f64)
}

fn budget_env(db: &TestDb, api_base: &str, apikey: &str, rate: u32, burst: u32) -> Vec<(String, String)> {
    let mut env = daemon_env(&db.url, api_base, apikey);
    env.push(("SESSION_REAPER_WORKER__RATE_PER_SECOND".into(), rate.to_string()));
    env.push(("SESSION_REAPER_WORKER__BURST".into(), burst.to_string()));
    env.push(("SESSION_REAPER_LOG__LEVEL".into(), "info".into()));
    // The default pool, so the figures are those of a default deployment.
    env.push(("SESSION_REAPER_WORKER__CONCURRENCY".into(), "16".into()));
    env
}

/// `pause_reason` of the `reaper_status` view.
async fn view_pause_reason(db: &TestDb) -> Option<String> {
    let sql = "SELECT pause_reason FROM reaper_status";
    if db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
        let reason = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        reason
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let reason = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        reason
    }
}

/// PostgreSQL's count of row updates of `reaper_budget` (`None` on SQLite), once the daemons'
/// statistics have reached the server.
async fn budget_updates(db: &TestDb) -> Option<i64> {
    if !db.url.starts_with("postgres") {
        return None;
    }
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let n: i64 = sqlx::query_scalar("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'reaper_budget'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    Some(n)
}

/// Locks the budget's table from a connection of the test's own for `hold` (SQLite: the whole
/// database's write lock). Returns once the lock is held, with the task that releases it.
async fn lock_budget_for(db: &TestDb, hold: Duration) -> (Instant, tokio::task::JoinHandle<()>) {
    let (held, is_held) = tokio::sync::oneshot::channel();
    let url = db.url.clone();
    let task = tokio::spawn(async move {
        if url.starts_with("sqlite:") {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE").execute(&mut conn).await.unwrap();
            held.send(Instant::now()).unwrap();
            tokio::time::sleep(hold).await;
            sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
        } else {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::raw_sql("LOCK TABLE reaper_budget IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            held.send(Instant::now()).unwrap();
            tokio::time::sleep(hold).await;
            tx.commit().await.unwrap();
            pool.close().await;
        }
    });
    (is_held.await.expect("the lock was taken"), task)
}

/// Stops every replica (SIGTERM), checks each exited 0, and returns their outputs.
async fn stop_all(replicas: Vec<Daemon>) -> Vec<std::process::Output> {
    for replica in &replicas {
        replica.signal("-TERM");
    }
    let mut outputs = Vec::new();
    for replica in replicas {
        let output = replica.finish().await;
        assert!(output.status.success(), "{}", text(&output));
        outputs.push(output);
    }
    outputs
}

/// `n` replicas at `rate`/s + `burst` on `rows` due rows for `run_for`: the busiest window and
/// the mean, checked against the budget.
async fn replicas_on_one_budget(n: usize, rate: u32, burst: u32, rows: usize, run_for: Duration) {
    let _alone = ONE_AT_A_TIME.lock().await;
    for db in backends().await {
        let api = standin().await;
        let ids: Vec<String> = (0..rows).map(|i| format!("budget{i:05}")).collect();
        db.store.enqueue(&ids, Utc::now()).await.unwrap();
        let env = budget_env(&db, &api.base_url(), APIKEY, rate, burst);
        let updates_before = budget_updates(&db).await;
        // All at once: no replica waits for another to be seen.
        let replicas: Vec<Daemon> = (0..n).map(|_| Daemon::start(&mut daemon(&["run"], &env))).collect();
        tokio::time::sleep(run_for).await;
        stop_all(replicas).await;
        if let (Some(before), Some(after)) = (updates_before, budget_updates(&db).await) {
            // One UPDATE per reservation, after its SELECT (writes that lost a race update nothing).
            let per_replica = (after - before) as f64 / run_for.as_secs_f64() / n as f64;
            eprintln!(
                "{}: budget reservations {per_replica:.1}/s per replica (at least {:.1} statements/s)",
                db.name(),
                per_replica * 2.0
            );
        }

        let arrivals: Vec<Instant> = api.state.requests().iter().map(|r| r.at).collect();
        let (busiest, mean) = pace(&arrivals);
        eprintln!(
            "{}: {n} replicas, budget {rate}/s + {burst}: {} requests, busiest 1-s window {busiest}, mean {mean:.1}/s",
            db.name(),
            arrivals.len()
        );
        assert!(
            busiest <= (rate + burst) as usize,
            "{}: a one-second window held {busiest} requests > {rate} + {burst}",
            db.name()
        );
        assert!(
            mean >= f64::from(rate) * 0.75,
            "{}: the replicas used only {mean:.1}/s of {rate}/s",
            db.name()
        );
        assert_eq!(api.state.stats().off_contract, 0);
        let twice = ids.iter().filter(|id| api.state.count_for(id) > 1).count();
        assert_eq!(twice, 0, "{}: sessions requested twice", db.name());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn three_replicas_started_together_keep_to_the_budget_in_every_second() {
    replicas_on_one_budget(3, 300, 30, 6_000, Duration::from_secs(8)).await;
}

#[tokio::test]
async fn twelve_replicas_share_a_budget_smaller_than_their_number() {
    replicas_on_one_budget(12, 6, 6, 400, Duration::from_secs(12)).await;
}

#[tokio::test]
async fn after_a_kill_the_survivors_use_the_whole_budget_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    for db in backends().await {
        let api = standin().await;
        let (rate, burst) = (150, 15);
        let ids: Vec<String> = (0..4_000).map(|i| format!("kill{i:05}")).collect();
        db.store.enqueue(&ids, Utc::now()).await.unwrap();
        let env = budget_env(&db, &api.base_url(), APIKEY, rate, burst);
        let mut replicas: Vec<Daemon> = (0..3).map(|_| Daemon::start(&mut daemon(&["run"], &env))).collect();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let victim = replicas.remove(0);
        victim.signal("-KILL");
        let killed = Instant::now();
        let _ = victim.finish().await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop_all(replicas).await;

        let arrivals: Vec<Instant> = api.state.requests().iter().map(|r| r.at).collect();
        let (busiest, _) = pace(&arrivals);
        // After the kill, whole seconds only: from the kill to 7 s after it.
        let per_second: Vec<usize> = (0..7)
            .map(|s| {
                let from = killed + Duration::from_secs(s);
                arrivals
                    .iter()
                    .filter(|t| **t >= from && **t < from + Duration::from_secs(1))
                    .count()
            })
            .collect();
        eprintln!(
            "{}: budget {rate}/s + {burst}, one of 3 killed: per second after the kill {per_second:?}, busiest window overall {busiest}",
            db.name()
        );
        assert!(
            busiest <= (rate + burst) as usize,
            "{}: {busiest} in one second",
            db.name()
        );
        // Within 3 s of the kill, the two survivors send at the whole budget.
        let after: f64 = per_second[3..].iter().sum::<usize>() as f64 / per_second[3..].len() as f64;
        assert!(
            after >= f64::from(rate) * 0.8,
            "{}: survivors sent {after:.1}/s of {rate}/s from 3 s after the kill: {per_second:?}",
            db.name()
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_rejected_key_pauses_every_replica_and_one_probe_ends_it_for_all() {
    let _alone = ONE_AT_A_TIME.lock().await;
    for db in backends().await {
        let api = standin().await;
        api.state.set_apikey("the-right-key");
        let ids: Vec<String> = (0..300).map(|i| format!("key{i:04}")).collect();
        db.store.enqueue(&ids, Utc::now()).await.unwrap();
        let mut env = budget_env(&db, &api.base_url(), APIKEY, 100, 10);
        env.push(("SESSION_REAPER_RETRY__KEY_PAUSE".into(), "2s".into()));
        let replicas: Vec<Daemon> = (0..3).map(|_| Daemon::start(&mut daemon(&["run"], &env))).collect();
        tokio::time::sleep(Duration::from_secs(8)).await;

        // The pause is the cluster's, in the database, with its reason and times.
        let status = run_daemon(&["status", "--json"], &env).await;
        let json: serde_json::Value =
            serde_json::from_slice(&status.stdout).unwrap_or_else(|_| panic!("{}", text(&status)));
        let pause = &json["budget"]["pause"];
        assert_eq!(pause["reason"], "key_rejected", "{}: {json}", db.name());
        assert_eq!(pause["api_code"], 1846, "{}: {json}", db.name());
        let shown = run_daemon(&["status"], &env).await;
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains("pause: key_rejected since "),
            "{}: {}",
            db.name(),
            text(&shown)
        );
        assert_eq!(
            view_pause_reason(&db).await.as_deref(),
            Some("key_rejected"),
            "{}: reaper_status",
            db.name()
        );
        let during = api.state.requests();
        // One request per fresh replica at start (each tests the key alone), then one probe per
        // pause period for the whole cluster.
        let probes: Vec<Instant> = during.iter().map(|r| r.at).skip(3).collect();
        eprintln!(
            "{}: rejected key, 3 replicas, 8 s: {} requests ({} after the first three)",
            db.name(),
            during.len(),
            probes.len()
        );
        assert!(
            during.len() <= 3 + 4,
            "{}: {} requests with a bad key",
            db.name(),
            during.len()
        );
        for pair in probes.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(1_500),
                "{}: two probes {:?} apart",
                db.name(),
                pair[1] - pair[0]
            );
        }
        assert!(
            db.store.rows().await.unwrap().iter().all(|r| r.attempts == 0),
            "{}: a pause was charged",
            db.name()
        );

        // The key is fixed: the next probe succeeds and every replica resumes.
        api.state.set_apikey(APIKEY);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let rows = db.store.rows().await.unwrap();
            if rows.iter().all(|r| r.state == State::Deleted) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let outputs = stop_all(replicas).await;
        let rows = db.store.rows().await.unwrap();
        assert!(
            rows.iter().all(|r| r.state == State::Deleted),
            "{}: rows left after the key was fixed",
            db.name()
        );
        // Every replica resumed: each deleted some of the rows it held through the pause.
        for output in &outputs {
            assert!(
                String::from_utf8_lossy(&output.stderr).contains(r#""outcome":"deleted""#),
                "{}: a replica did not resume: {}",
                db.name(),
                text(output)
            );
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn with_the_budget_row_out_of_reach_no_request_goes_out_on_stale_budget() {
    let _alone = ONE_AT_A_TIME.lock().await;
    for db in backends().await {
        let api = standin().await;
        let ids: Vec<String> = (0..3_000).map(|i| format!("reach{i:05}")).collect();
        db.store.enqueue(&ids, Utc::now()).await.unwrap();
        let env = budget_env(&db, &api.base_url(), APIKEY, 100, 10);
        let replica = Daemon::start(&mut daemon(&["run"], &env));
        crate::helpers::wait_for_requests(&api, 150).await;

        // Another connection holds the budget's table locked for 4 s: no reservation passes.
        let (locked, held) = lock_budget_for(&db, Duration::from_secs(4)).await;
        held.await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop_all(vec![replica]).await;

        let arrivals: Vec<Instant> = api.state.requests().iter().map(|r| r.at).collect();
        let last_during = arrivals
            .iter()
            .filter(|t| **t >= locked && **t < locked + Duration::from_secs(4))
            .max()
            .map(|t| *t - locked);
        let after = arrivals
            .iter()
            .filter(|t| **t >= locked + Duration::from_secs(4))
            .count();
        eprintln!(
            "{}: budget row locked for 4 s: last request {last_during:?} after the lock, {after} requests after it ended",
            db.name()
        );
        assert!(
            last_during.is_none_or(|d| d < Duration::from_secs(1)),
            "{}: requests went on {last_during:?} into the lock",
            db.name()
        );
        assert!(after > 50, "{}: sending did not resume after the lock", db.name());
        db.cleanup().await;
    }
}
