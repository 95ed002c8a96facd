//! Rows in hand from a file the path no longer names. When the database file is replaced under
//! a running daemon, the rows it claimed from the old file may still be in flight; a row id means
//! nothing in the new file (it may name another session, one this daemon has claimed there too),
//! so their outcomes are dropped, counted in one line per batch, never written by id. Their
//! sessions' deletions went out all the same; a copy of such a row in the new file (a restored
//! backup) is claimed there and its DELETE answered as gone.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{OutcomeWrite, SqliteStore};
use crate::store::{Claimed, RowId};

/// For each row claimed and not yet written back: the file generation it was claimed in (see
/// `FileWatch::generation`).
#[derive(Debug, Default)]
pub(super) struct ClaimedFrom {
    rows: Mutex<HashMap<RowId, u64>>,
}

impl ClaimedFrom {
    fn note(&self, generation: u64, claimed: &Claimed) {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rows.extend(claimed.rows.iter().map(|row| (row.id, generation)));
    }

    /// The outcomes for rows of the file of `generation` (and rows this store never claimed);
    /// the others are counted.
    fn current(&self, generation: u64, outcomes: &[OutcomeWrite]) -> (Vec<OutcomeWrite>, u64) {
        let rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (current, stale): (Vec<_>, Vec<_>) = outcomes
            .iter()
            .cloned()
            .partition(|o| rows.get(&o.id()).is_none_or(|from| *from == generation));
        (current, stale.len() as u64)
    }

    /// The batch is written (or dropped): its rows are no longer in hand.
    fn done(&self, outcomes: &[OutcomeWrite]) {
        let mut rows = self.rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for outcome in outcomes {
            rows.remove(&outcome.id());
        }
    }
}

impl SqliteStore {
    /// Leases due rows (see `claim_rows`), noting which file they came from. The generation is
    /// read before the claim: one that saw the file change meanwhile counts as the old file's
    /// (its outcomes are dropped and its rows, if they were the new file's, come free when their
    /// leases run out).
    pub async fn claim(&self, r: &crate::store::ClaimRequest<'_>) -> anyhow::Result<Claimed> {
        let Some(file) = &self.file else {
            return self.claim_rows(r).await;
        };
        let generation = file.watch.generation();
        let claimed = self.claim_rows(r).await?;
        file.claimed.note(generation, &claimed);
        Ok(claimed)
    }

    /// Writes outcomes (see `write_outcome_rows`), dropping those for rows claimed from a file
    /// the path no longer names. Returns the rows written plus those dropped, so the caller does
    /// not report the dropped ones as leases lost to another worker.
    pub async fn write_outcomes(&self, owner: &str, outcomes: &[OutcomeWrite]) -> anyhow::Result<u64> {
        let Some(file) = &self.file else {
            return self.write_outcome_rows(owner, outcomes).await;
        };
        let (current, dropped) = file.claimed.current(file.watch.generation(), outcomes);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "outcomes of rows claimed from the SQLite file before it was replaced or removed are \
                 dropped (their row ids may name other sessions in the file there now); their \
                 requests were made"
            );
        }
        let written = if current.is_empty() {
            0
        } else {
            self.write_outcome_rows(owner, &current).await?
        };
        file.claimed.done(outcomes);
        Ok(written + dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::editor::Editor;
    use crate::store::ClaimedRow;

    fn claimed(ids: &[i64]) -> Claimed {
        Claimed {
            rows: ids
                .iter()
                .map(|&id| ClaimedRow {
                    id: RowId(id),
                    session_id: format!("s{id}"),
                    editor: Editor::Writer,
                    attempts: 0,
                    taken_over: false,
                    claimed_at: tokio::time::Instant::now(),
                })
                .collect(),
            set_aside: Vec::new(),
        }
    }

    #[test]
    fn outcomes_of_rows_claimed_from_an_earlier_file_are_dropped_and_the_rest_kept() {
        let from = ClaimedFrom::default();
        from.note(0, &claimed(&[1, 2]));
        from.note(1, &claimed(&[3]));
        let batch = [1, 3, 4].map(|id| OutcomeWrite::Release { id: RowId(id) });

        let (current, dropped) = from.current(1, &batch);

        // Row 1 came from file 0; row 3 from file 1; row 4 was never claimed here (kept).
        assert_eq!(
            current.iter().map(OutcomeWrite::id).collect::<Vec<_>>(),
            [3, 4].map(RowId)
        );
        assert_eq!(dropped, 1);
        from.done(&batch);
        assert_eq!(from.rows.lock().unwrap().keys().collect::<Vec<_>>(), [&RowId(2)]);
    }
}
