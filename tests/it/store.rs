//! Claims, leases, outcomes and retries against real databases: every test runs on SQLite and
//! on PostgreSQL. Time is passed in, never read from the clock.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use session_reaper::store::{OutcomeWrite, RowId, SessionRow, State, Store};

use crate::helpers::{STALE_AFTER, claim_at, finished, on_each_backend};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("session{i:04}")).collect()
}

async fn row(store: &Store, session_id: &str) -> SessionRow {
    store
        .rows()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.session_id == session_id)
        .expect("row exists")
}

#[tokio::test]
async fn a_claim_leases_due_rows_once_and_in_batches() {
    on_each_backend!(|db| {
        // Arrange
        let store = &db.store;
        store.enqueue(&ids(5), t0()).await.unwrap();
        // Act
        let first = store.claim(&claim_at("a", t0(), 3)).await.unwrap().rows;
        let second = store.claim(&claim_at("b", t0(), 10)).await.unwrap().rows;
        let third = store.claim(&claim_at("c", t0(), 10)).await.unwrap().rows;
        // Assert
        assert_eq!(first.len(), 3);
        assert_eq!(second.len(), 2);
        assert!(third.is_empty(), "{}: leased rows were claimed again", db.name());
        assert!(first.iter().chain(&second).all(|r| !r.taken_over));
    });
}

#[tokio::test]
async fn rows_not_yet_due_are_left_alone() {
    on_each_backend!(|db| {
        let store = &db.store;
        store
            .enqueue(&ids(2), t0() + chrono::Duration::minutes(5))
            .await
            .unwrap();
        assert!(store.claim(&claim_at("a", t0(), 10)).await.unwrap().rows.is_empty());
        let later = store
            .claim(&claim_at("a", t0() + chrono::Duration::minutes(5), 10))
            .await
            .unwrap();
        assert_eq!(later.rows.len(), 2);
    });
}

#[tokio::test]
async fn a_session_becomes_due_when_its_activity_is_older_than_stale_after() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.touch("active1", t0()).await.unwrap();
        let before = t0() + chrono::Duration::minutes(29);
        assert!(store.claim(&claim_at("a", before, 10)).await.unwrap().rows.is_empty());
        store.touch("active1", before).await.unwrap();
        let stale = before + chrono::Duration::minutes(30);
        let claimed = store.claim(&claim_at("a", stale, 10)).await.unwrap().rows;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].session_id, "active1");
    });
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_counted() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.enqueue(&ids(1), t0()).await.unwrap();
        let crashed = store.claim(&claim_at("crashed", t0(), 10)).await.unwrap().rows;
        // Still leased just before expiry, free right after it.
        let just_before = t0() + chrono::Duration::seconds(29);
        assert!(
            store
                .claim(&claim_at("rescuer", just_before, 10))
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        let after = t0() + chrono::Duration::seconds(31);
        let rescued = store.claim(&claim_at("rescuer", after, 10)).await.unwrap().rows;
        assert_eq!(rescued.len(), 1);
        assert!(rescued[0].taken_over, "{}: takeover not flagged", db.name());
        // The crashed worker's late outcome must not overwrite the rescuer's lease.
        let late = store
            .write_outcomes("crashed", &[finished(crashed[0].id, State::Deleted, after)])
            .await
            .unwrap();
        assert_eq!(late, 0, "{}: a lost lease still wrote its outcome", db.name());
        let r = row(store, "session0000").await;
        assert_eq!((r.state, r.lease_owner.as_deref()), (State::Pending, Some("rescuer")));
        assert_eq!(r.taken_over_from.as_deref(), Some("crashed"));
    });
}

#[tokio::test]
async fn a_renewed_lease_is_not_taken_over() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.enqueue(&ids(1), t0()).await.unwrap();
        let claimed = store.claim(&claim_at("slow", t0(), 10)).await.unwrap().rows;
        let held: Vec<RowId> = claimed.iter().map(|row| row.id).collect();
        let renewed = store
            .renew_leases("slow", &held, t0() + chrono::Duration::seconds(60))
            .await
            .unwrap()
            .renewed;
        assert_eq!(renewed, 1);
        let at = t0() + chrono::Duration::seconds(45);
        assert!(store.claim(&claim_at("other", at, 10)).await.unwrap().rows.is_empty());
    });
}

#[tokio::test]
async fn a_renewal_extends_only_the_listed_leases_of_its_owner() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.enqueue(&ids(3), t0()).await.unwrap();
        let claimed = store.claim(&claim_at("slow", t0(), 10)).await.unwrap().rows;
        let [a, b, c] = [claimed[0].id, claimed[1].id, claimed[2].id];
        let until = t0() + chrono::Duration::seconds(60);
        assert_eq!(store.renew_leases("slow", &[a, b], until).await.unwrap().renewed, 2);
        assert_eq!(
            store.renew_leases("other", &[c], until).await.unwrap().renewed,
            0,
            "{}: only the owner renews",
            db.name()
        );
        // After the first lease ran out, only the row left out of the renewal comes free.
        let at = t0() + chrono::Duration::seconds(45);
        let taken = store.claim(&claim_at("other", at, 10)).await.unwrap().rows;
        assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c]);
        assert!(taken[0].taken_over);
    });
}

#[tokio::test]
async fn postgres_claims_rewrite_rows_without_touching_their_indexes() {
    // A claim changes only columns no index reads, on pages with room left (migration 0004), so
    // PostgreSQL makes it a HOT update. An index on a lease column, or full pages, would turn
    // every claim back into new entries in every index.
    let Some(db) = crate::helpers::TestDb::postgres().await else {
        return;
    };
    let n = 200;
    db.store.enqueue(&ids(n), t0()).await.unwrap();
    let claimed = db.store.claim(&claim_at("a", t0(), n as u32)).await.unwrap().rows;
    assert_eq!(claimed.len(), n);
    // A backend reports its table statistics when it exits.
    db.store.close().await;
    let stats = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut counts = (0, 0);
    for _ in 0..100 {
        counts = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'reaper_sessions'",
        )
        .fetch_one(&stats)
        .await
        .unwrap();
        if counts.0 >= n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stats.close().await;
    let (updated, hot): (i64, i64) = counts;
    assert_eq!(updated, n as i64, "every claimed row was updated once");
    assert!(
        hot * 10 >= updated * 9,
        "{hot} of {updated} claim updates were HOT; an index on a lease column or a full page stops HOT"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn outcomes_are_recorded_with_attempts_times_and_the_last_answer() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.enqueue(&ids(3), t0()).await.unwrap();
        let claimed = store.claim(&claim_at("me", t0(), 10)).await.unwrap().rows;
        let at = t0() + chrono::Duration::seconds(1);
        let retry_at = t0() + chrono::Duration::seconds(20);
        let written = store
            .write_outcomes(
                "me",
                &[
                    finished(claimed[0].id, State::Deleted, at),
                    OutcomeWrite::Finish {
                        id: claimed[1].id,
                        state: State::Retrying,
                        charge: true,
                        http_status: Some(502),
                        api_code: None,
                        error: Some("HTTP 502 with a non-JSON answer".into()),
                        attempted_at: Some(at),
                        next_attempt_at: Some(retry_at),
                        decided_at: at,
                    },
                    OutcomeWrite::Release { id: claimed[2].id },
                ],
            )
            .await
            .unwrap();
        assert_eq!(written, 3);

        let deleted = row(store, "session0000").await;
        assert_eq!(deleted.state, State::Deleted);
        assert_eq!((deleted.attempts, deleted.last_http_status), (1, Some(200)));
        assert_eq!((deleted.first_attempt_at, deleted.finished_at), (Some(at), Some(at)));
        assert_eq!(deleted.lease_owner, None);

        let retrying = row(store, "session0001").await;
        assert_eq!((retrying.state, retrying.attempts), (State::Retrying, 1));
        assert_eq!(retrying.next_attempt_at, Some(retry_at));
        assert_eq!(retrying.last_error.as_deref(), Some("HTTP 502 with a non-JSON answer"));
        assert_eq!(retrying.finished_at, None);

        let released = row(store, "session0002").await;
        assert_eq!(
            (released.state, released.attempts, released.lease_owner),
            (State::Pending, 0, None)
        );

        // The released row is due again at once, the retrying one only at its time.
        let again = store.claim(&claim_at("me", at, 10)).await.unwrap().rows;
        assert_eq!(
            again.iter().map(|r| r.session_id.as_str()).collect::<Vec<_>>(),
            ["session0002"]
        );
        let later = store.claim(&claim_at("me", retry_at, 10)).await.unwrap().rows;
        assert_eq!(
            later.iter().map(|r| r.session_id.as_str()).collect::<Vec<_>>(),
            ["session0001"]
        );
    });
}

#[tokio::test]
async fn a_finished_row_is_never_written_again() {
    on_each_backend!(|db| {
        let store = &db.store;
        store.enqueue(&ids(1), t0()).await.unwrap();
        let claimed = store.claim(&claim_at("me", t0(), 1)).await.unwrap().rows;
        store
            .write_outcomes("me", &[finished(claimed[0].id, State::Gone, t0())])
            .await
            .unwrap();
        let again = store
            .write_outcomes("me", &[finished(claimed[0].id, State::Deleted, t0())])
            .await
            .unwrap();
        assert_eq!(again, 0);
        assert_eq!(row(store, "session0000").await.state, State::Gone);
    });
}

#[tokio::test]
async fn enqueue_ignores_duplicates_and_status_counts_states() {
    on_each_backend!(|db| {
        let store = &db.store;
        assert_eq!(store.enqueue(&ids(4), t0()).await.unwrap(), 4);
        assert_eq!(store.enqueue(&ids(6), t0()).await.unwrap(), 2);
        let claimed = store.claim(&claim_at("me", t0(), 2)).await.unwrap().rows;
        store
            .write_outcomes("me", &[finished(claimed[0].id, State::Deleted, t0())])
            .await
            .unwrap();
        let status = store
            .status(t0() + chrono::Duration::seconds(1), STALE_AFTER)
            .await
            .unwrap();
        assert_eq!(status.count(State::Pending), 5);
        assert_eq!(status.count(State::Deleted), 1);
        assert_eq!(status.in_flight, 1);
        assert_eq!(status.earliest_due, Some(t0()));
        assert_eq!(status.last_success, Some(t0()));
    });
}

#[tokio::test]
async fn the_next_due_time_sees_retries_and_expiring_leases() {
    on_each_backend!(|db| {
        let store = &db.store;
        assert_eq!(store.next_due(STALE_AFTER).await.unwrap(), None);
        store.touch("idle1", t0()).await.unwrap();
        assert_eq!(
            store.next_due(STALE_AFTER).await.unwrap(),
            Some(t0() + chrono::Duration::minutes(30))
        );
        store.enqueue(&ids(1), t0()).await.unwrap();
        store.claim(&claim_at("me", t0(), 1)).await.unwrap();
        assert_eq!(
            store.next_due(STALE_AFTER).await.unwrap(),
            Some(t0() + chrono::Duration::seconds(30))
        );
    });
}

#[tokio::test]
async fn a_daemon_never_reclaims_its_own_expired_lease() {
    on_each_backend!(|db| {
        // Its outcome may still be queued for writing (a database outage outlasted the lease):
        // claiming it again would send the same request twice.
        let store = &db.store;
        store.enqueue(&ids(1), t0()).await.unwrap();
        store.claim(&claim_at("me", t0(), 1)).await.unwrap();
        let after_expiry = t0() + chrono::Duration::seconds(60);
        assert!(
            store
                .claim(&claim_at("me", after_expiry, 1))
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        assert_eq!(
            store
                .claim(&claim_at("other", after_expiry, 1))
                .await
                .unwrap()
                .rows
                .len(),
            1
        );
    });
}

#[tokio::test]
async fn a_leased_row_is_next_due_at_the_later_of_its_lease_and_its_own_due_time() {
    on_each_backend!(|db| {
        // A replica died holding a session whose user then came back: the lease runs out long
        // before the session is stale again, and the idle loop must not spin on it meanwhile.
        let store = &db.store;
        store.touch("back1", t0()).await.unwrap();
        let stale = t0() + chrono::Duration::minutes(30);
        assert_eq!(store.claim(&claim_at("crashed", stale, 1)).await.unwrap().rows.len(), 1);
        store.touch("back1", stale).await.unwrap();
        let next = store.next_due(STALE_AFTER).await.unwrap();
        assert_eq!(next, Some(stale + chrono::Duration::minutes(30)));
    });
}
