//! The rows this process holds leases on: claimed and not yet written back (queued, in flight,
//! or waiting in the writer). The heartbeat renews exactly these, by id. Renewing "every row
//! leased to me" would need an index on the lease columns, and any such index makes each claim
//! write new entries into every index of the row (PostgreSQL's HOT updates only apply when no
//! indexed column changes; see `migrations/postgres/0004_hot_claims.sql`).

use std::collections::HashSet;
use std::sync::Mutex;

use crate::store::RowId;

#[derive(Debug, Default)]
pub struct Held(Mutex<HashSet<RowId>>);

impl Held {
    /// Rows just claimed.
    pub fn add(&self, ids: impl IntoIterator<Item = RowId>) {
        self.set().extend(ids);
    }

    /// Rows whose outcome was written, or given up on (their leases then run out).
    pub fn remove(&self, ids: impl IntoIterator<Item = RowId>) {
        let mut set = self.set();
        for id in ids {
            set.remove(&id);
        }
    }

    /// The ids held now, in ascending order (the order outcomes lock rows in).
    pub fn ids(&self) -> Vec<RowId> {
        let mut ids: Vec<RowId> = self.set().iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<RowId>> {
        // A panic while holding the lock cannot leave the set half-changed in a way that matters:
        // at worst a lease is renewed once more, or runs out.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_claimed_rows_until_their_outcomes_are_written() {
        let held = Held::default();
        held.add([7, 3, 5].map(RowId));
        held.remove([RowId(5)]);
        held.add([RowId(1)]);
        assert_eq!(held.ids(), [1, 3, 7].map(RowId));
        held.remove([1, 3, 7, 42].map(RowId));
        assert!(held.ids().is_empty());
    }
}
