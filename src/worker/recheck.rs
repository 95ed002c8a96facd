//! Right before a request: is the row still due? The application may have recorded new activity
//! (or moved `delete_after`) since the claim; such a row goes back to waiting, unsent.
//!
//! Rows are checked together, one query for many:
//! - the first worker to ask starts a check, which first lets the runtime run the other workers
//!   woken at the same moment (a send group, `grouping`), so their rows join it;
//! - the check also reads the rows other workers hold for a send time close enough that this
//!   verdict will still be fresh then (`STILL_DUE_FOR`): when their turn comes, the verdict is
//!   there and they ask nothing.
//!
//! The query runs in a task of its own, so a worker that stops waiting (shutdown) never strands
//! the others' answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::store::{ClaimedRow, RowId, STILL_DUE_FOR, Store};

/// Most rows one check reads besides those asked for.
const MOST_AHEAD: usize = 256;

/// The check's answer for one row: due or not (and when that was read), or why it failed.
type Verdict = Result<(bool, Instant), Arc<str>>;

/// Where a row's due-ness is checked again: the store, as this process.
pub struct Recheck {
    store: Store,
    instance_id: Arc<str>,
    stale_after: Duration,
    rows: Arc<Mutex<Rows>>,
}

#[derive(Default)]
struct Rows {
    /// Rows whose workers wait for a send time: when each sends, and a verdict read ahead.
    waiting: HashMap<RowId, Waiting>,
    /// Rows asked about since the last check began, with where each answer goes.
    asked: Vec<(RowId, oneshot::Sender<Verdict>)>,
}

struct Waiting {
    send_at: Instant,
    /// The last verdict: the claim's (due), or one read since.
    verdict: (bool, Instant),
}

impl Waiting {
    /// Whether the last verdict is still fresh when the row sends.
    fn fresh(&self) -> bool {
        self.verdict.1 + STILL_DUE_FOR >= self.send_at
    }
}

/// A worker's row, known to the checks while the worker holds it; forgotten when dropped.
pub struct Held<'a> {
    recheck: &'a Recheck,
    id: RowId,
    claimed_at: Instant,
}

impl Held<'_> {
    /// The row's (new) send time.
    pub fn sends_at(&self, send_at: Instant) {
        let mut rows = self.recheck.locked();
        let waiting = rows.waiting.entry(self.id).or_insert(Waiting {
            send_at,
            verdict: (true, self.claimed_at),
        });
        waiting.send_at = send_at;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.recheck.locked().waiting.remove(&self.id);
    }
}

impl Recheck {
    pub fn new(store: Store, instance_id: &str, stale_after: Duration) -> Self {
        Self {
            store,
            instance_id: instance_id.into(),
            stale_after,
            rows: Arc::default(),
        }
    }

    fn locked(&self) -> MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `row` known to the checks while the worker holds it (`Held::sends_at` tells when
    /// it sends), so that a check for other rows may read it ahead.
    pub fn hold(&self, row: &ClaimedRow) -> Held<'_> {
        Held {
            recheck: self,
            id: row.id,
            claimed_at: row.claimed_at,
        }
    }

    /// Whether the row may still be deleted at `send_at`, checked against the database (the
    /// caller asks when the last verdict would be older than `STILL_DUE_FOR` by then: the row
    /// waited in the queue, a retry, a pause or for its send time). `Some(when the verdict was
    /// read)` if it may.
    /// A row whose user came back, or whose `delete_after` moved, goes back to waiting: no
    /// request, no attempt charged. When the check itself fails, the row is not sent either.
    pub async fn still_due(&self, row: &ClaimedRow, now: DateTime<Utc>, send_at: Instant) -> Option<Instant> {
        let verdict = match self.read_ahead(row.id, send_at) {
            Some(verdict) => Ok(verdict),
            None => self.ask(row.id, now).await,
        };
        match verdict {
            Ok((true, at)) => Some(at),
            Ok((false, _)) => {
                tracing::info!(
                    row_id = row.id.get(),
                    "not deleted: the session is no longer due (new activity, a later delete_after, \
                     or the row changed hands); it waits again, no attempt charged"
                );
                None
            }
            Err(error) => {
                tracing::warn!(
                    row_id = row.id.get(),
                    error = &*error,
                    "could not check that the session is still due: not sent, the row waits again"
                );
                None
            }
        }
    }

    /// A verdict another check read for this row, if it is still fresh at `send_at`.
    fn read_ahead(&self, id: RowId, send_at: Instant) -> Option<(bool, Instant)> {
        let rows = self.locked();
        let waiting = rows.waiting.get(&id)?;
        (waiting.send_at == send_at && waiting.fresh()).then_some(waiting.verdict)
    }

    async fn ask(&self, id: RowId, now: DateTime<Utc>) -> Verdict {
        let (answer, verdict) = oneshot::channel();
        let first = {
            let mut rows = self.locked();
            rows.asked.push((id, answer));
            rows.asked.len() == 1
        };
        if first {
            tokio::spawn(check_together(
                self.store.clone(),
                self.instance_id.clone(),
                self.rows.clone(),
                now,
                self.stale_after,
            ));
        }
        verdict
            .await
            .unwrap_or_else(|_| Err("the check was dropped (shutdown)".into()))
    }
}

/// One query for every row asked about once the workers woken with the first have run, and for
/// the rows held for a send soon enough that this verdict will still be fresh then.
async fn check_together(
    store: Store,
    instance_id: Arc<str>,
    rows: Arc<Mutex<Rows>>,
    now: DateTime<Utc>,
    stale_after: Duration,
) {
    tokio::task::yield_now().await;
    let read_at = Instant::now();
    let (asked, ahead) = {
        let mut rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
        let asked = std::mem::take(&mut rows.asked);
        let fresh_until = read_at + STILL_DUE_FOR;
        let ahead: Vec<RowId> = rows
            .waiting
            .iter()
            .filter(|(id, w)| w.send_at <= fresh_until && !w.fresh() && !asked.iter().any(|(asked, _)| asked == *id))
            .map(|(id, _)| *id)
            .take(MOST_AHEAD)
            .collect();
        (asked, ahead)
    };
    let ids: Vec<RowId> = asked.iter().map(|(id, _)| *id).chain(ahead.iter().copied()).collect();
    let due = store
        .still_due(&instance_id, &ids, now, stale_after)
        .await
        .map_err(|e| Arc::<str>::from(format!("{e:#}")));
    if let Ok(due) = &due {
        let mut rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
        for id in &ids {
            if let Some(waiting) = rows.waiting.get_mut(id) {
                waiting.verdict = (due.contains(id), read_at);
            }
        }
    }
    for (id, answer) in asked {
        let verdict = due.as_ref().map(|due| (due.contains(&id), read_at)).map_err(Arc::clone);
        // A worker that stopped waiting (shutdown) no longer needs its answer.
        let _ = answer.send(verdict);
    }
}
