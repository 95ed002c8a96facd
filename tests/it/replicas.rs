//! Several daemon processes on one table: no double deletes, takeover of a killed replica's
//! rows within two leases, and replicas that know each other (the shared budget: `budget.rs`).

use std::time::{Duration, Instant};

use chrono::Utc;
use session_reaper::store::{State, Store};

use crate::helpers::{
    APIKEY, Daemon, TestDb, daemon, daemon_env, daemon_env_with, enqueue_numbered, on_each_backend, standin, text,
};

fn spawn(env: &[(String, String)], args: &[&str]) -> Daemon {
    Daemon::start(&mut daemon(args, env))
}

/// Polls (bounded) until `done` holds for the table's rows.
async fn wait_rows(
    store: &Store,
    limit: Duration,
    done: impl Fn(&[session_reaper::store::SessionRow]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done(&store.rows().await.unwrap()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn three_replicas_on_one_table_delete_every_session_exactly_once() {
    on_each_backend!(|db| {
        let api = standin().await;
        let ids = enqueue_numbered(&db, "rep", 3000).await;
        let mut env = daemon_env(&db.url, &api.base_url(), APIKEY);
        env.push(("SESSION_REAPER_WORKER__RATE_PER_SECOND".into(), "100000".into()));
        env.push(("SESSION_REAPER_WORKER__BURST".into(), "1000".into()));
        env.push(("SESSION_REAPER_WORKER__BATCH_SIZE".into(), "32".into()));

        let replicas: Vec<Daemon> = (0..3).map(|_| spawn(&env, &["run", "--once"])).collect();
        for replica in replicas {
            let output = replica.finish().await;
            assert!(output.status.success(), "{}: {}", db.name(), text(&output));
        }

        let rows = db.store.rows().await.unwrap();
        let left: Vec<_> = rows.iter().filter(|r| r.state != State::Deleted).take(5).collect();
        assert!(left.is_empty(), "{}: not all deleted: {left:?}", db.name());
        let twice: Vec<&String> = ids.iter().filter(|id| api.state.count_for(id) != 1).collect();
        assert!(twice.is_empty(), "{}: requested other than once: {twice:?}", db.name());
        assert_eq!(api.state.stats().off_contract, 0);
        assert!(
            db.store.instances().await.unwrap().is_empty(),
            "{}: clean exits left instances",
            db.name()
        );
    });
}

#[tokio::test]
async fn a_killed_replicas_rows_are_taken_over_within_two_leases() {
    on_each_backend!(|db| {
        // Arrange: replica A holds rows in slow requests when it dies.
        let api = standin().await;
        api.state.set_latency(Duration::from_secs(30));
        enqueue_numbered(&db, "held", 4).await;
        let env = daemon_env_with(
            &db.url,
            &api.base_url(),
            APIKEY,
            &[("worker.lease", "2s"), ("api.timeout", "60s")],
        );
        let a = spawn(&env, &["run"]);
        let leased = wait_rows(&db.store, Duration::from_secs(15), |rows| {
            rows.iter().all(|r| r.lease_owner.is_some())
        })
        .await;
        assert!(leased, "{}: replica A never leased the rows", db.name());
        let a_owner = db.store.rows().await.unwrap()[0].lease_owner.clone().unwrap();

        // Act: kill -9 A, answer fast from now on, start B.
        a.signal("-KILL");
        let killed = Instant::now();
        a.finish().await;
        api.state.set_latency(Duration::ZERO);
        let b = spawn(&env, &["run"]);
        let done = wait_rows(&db.store, Duration::from_secs(20), |rows| {
            rows.iter().all(|r| r.state == State::Deleted)
        })
        .await;
        let takeover = killed.elapsed();
        b.signal("-TERM");
        let output = b.finish().await;

        // Assert
        assert!(
            done,
            "{}: rows never finished after the kill:\n{}",
            db.name(),
            text(&output)
        );
        assert!(
            takeover <= Duration::from_secs(4) + Duration::from_millis(1500),
            "{}: took {takeover:?}",
            db.name()
        );
        for row in db.store.rows().await.unwrap() {
            assert_eq!(
                row.taken_over_from.as_deref(),
                Some(a_owner.as_str()),
                "{}: {row:?}",
                db.name()
            );
        }
        eprintln!("{}: takeover after kill -9 took {takeover:?} (lease 2s)", db.name());
    });
}

#[tokio::test]
async fn replicas_migrating_at_the_same_moment_all_succeed() {
    let Some(db) = TestDb::postgres_with(false).await else {
        return;
    };
    let migrations = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { Store::connect(&url).await?.migrate().await })
    });
    for migration in migrations {
        migration.await.unwrap().unwrap();
    }
    assert!(db.store.status(Utc::now(), Duration::from_secs(60)).await.is_ok());
    db.cleanup().await;
}
