//! Right before a request: is the row still due? The application may have recorded new activity
//! (or moved `delete_after`) since the claim; such a row goes back to waiting, unsent.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{ClaimedRow, Store};

/// Where a row's due-ness is checked again: the store, as this process.
pub struct Recheck {
    pub store: Store,
    pub instance_id: String,
    pub stale_after: Duration,
}

impl Recheck {
    /// Whether the row may still be deleted, checked against the database (the caller asks when
    /// the last verdict is older than `STILL_DUE_FOR`: the row waited in the queue, a retry, a
    /// pause or for its send time).
    /// A row whose user came back, or whose `delete_after` moved, goes back to waiting: no
    /// request, no attempt charged. When the check itself fails, the row is not sent either.
    pub async fn still_due(&self, row: &ClaimedRow, now: DateTime<Utc>) -> bool {
        match self
            .store
            .still_due(&self.instance_id, row.id, now, self.stale_after)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(
                    row_id = row.id.get(),
                    "not deleted: the session is no longer due (new activity, a later delete_after, \
                     or the row changed hands); it waits again, no attempt charged"
                );
                false
            }
            Err(e) => {
                tracing::warn!(
                    row_id = row.id.get(),
                    error = format!("{e:#}"),
                    "could not check that the session is still due: not sent, the row waits again"
                );
                false
            }
        }
    }
}
