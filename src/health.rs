//! What `/livez` and `/readyz` answer from: the work loop's last turn, whether the last database
//! round trip succeeded, and whether the API has rejected the key. Kept apart from the metrics:
//! these are facts the process acts on, not numbers for Prometheus.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug)]
pub struct Health {
    /// Unix milliseconds of the work loop's last turn (for `/livez` and the watchdog).
    last_tick_ms: AtomicI64,
    /// The API rejected our key and no probe has succeeded since (for `/readyz`).
    key_rejected: AtomicBool,
    /// The last database read succeeded (for `/readyz`); written by the metered store.
    database_ok: AtomicBool,
    /// The last database write succeeded (for `/readyz`): a read that works does not make a
    /// database that refuses writes (a read-only file) look ready.
    database_writes_ok: AtomicBool,
    /// The account's pause now in force, if any: what `run --once` exits on instead of waiting
    /// it out. A watch, so that `run --once` sleeps until a pause begins instead of polling.
    account_pause: tokio::sync::watch::Sender<Option<AccountPause>>,
    /// The cluster's pause as this replica last saw it (reason, until): `/readyz` shows it.
    cluster_pause: std::sync::Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
}

/// What a database round trip did, for readiness.
#[derive(Debug, Clone, Copy)]
pub enum DatabaseUse {
    Read,
    Write,
}

/// A pause that is the account's, not a row's: it outlasts any single run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountPause {
    QuotaSpent = 1,
    KeyRejected = 2,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            last_tick_ms: AtomicI64::new(now_ms()),
            key_rejected: AtomicBool::new(false),
            database_ok: AtomicBool::new(true),
            database_writes_ok: AtomicBool::new(true),
            account_pause: tokio::sync::watch::Sender::new(None),
            cluster_pause: Default::default(),
        }
    }
}

impl Health {
    /// The work loop turned.
    pub fn tick(&self) {
        self.last_tick_ms.store(now_ms(), Relaxed);
    }

    /// Time since the work loop last turned.
    pub fn since_tick(&self) -> Duration {
        Duration::from_millis(u64::try_from(now_ms() - self.last_tick_ms.load(Relaxed)).unwrap_or(0))
    }

    pub fn set_database_ok(&self, kind: DatabaseUse, ok: bool) {
        match kind {
            DatabaseUse::Read => self.database_ok.store(ok, Relaxed),
            DatabaseUse::Write => {
                // A write that succeeds proves reads work too.
                self.database_writes_ok.store(ok, Relaxed);
                if ok {
                    self.database_ok.store(true, Relaxed);
                }
            }
        }
    }

    pub fn set_key_rejected(&self, rejected: bool) {
        self.key_rejected.store(rejected, Relaxed);
    }

    /// A quota or key pause began (`Some`) or a probe succeeded (`None`).
    /// Wakes `until_account_pause` only when the pause changes, not on every call.
    pub fn set_account_pause(&self, pause: Option<AccountPause>) {
        self.account_pause.send_if_modified(|now| {
            let changed = *now != pause;
            *now = pause;
            changed
        });
    }

    pub fn account_pause(&self) -> Option<AccountPause> {
        *self.account_pause.borrow()
    }

    /// Returns once an account pause is in force (at once if one is already).
    pub async fn until_account_pause(&self) -> AccountPause {
        let mut pauses = self.account_pause.subscribe();
        let pause = pauses
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in `self`");
        pause.expect("waited for a pause")
    }

    pub fn set_cluster_pause(&self, pause: Option<(String, chrono::DateTime<chrono::Utc>)>) {
        *self
            .cluster_pause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pause;
    }

    /// The cluster's pause in force, as this replica last saw it: reason and end.
    pub fn cluster_pause(&self) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        self.cluster_pause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Why this process is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.database_ok.load(Relaxed) || !self.database_writes_ok.load(Relaxed) {
            Some("database unreachable")
        } else if self.key_rejected.load(Relaxed) {
            Some("the API rejected the apikey")
        } else {
            None
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_for_the_account_pause_ends_when_one_begins_and_not_before() {
        let health = std::sync::Arc::new(Health::default());
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.until_account_pause().await }
        });
        tokio::task::yield_now().await;
        health.set_account_pause(None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "no pause yet");
        health.set_account_pause(Some(AccountPause::QuotaSpent));
        assert_eq!(waiter.await.unwrap(), AccountPause::QuotaSpent);
        assert_eq!(
            health.until_account_pause().await,
            AccountPause::QuotaSpent,
            "already in force"
        );
    }
}
