//! The one vocabulary of what happens to a row and what an answer means: each outcome and each
//! answer class is defined here once (its label, whether it is final, whether it is charged as an
//! attempt), and metrics, the store, `status` and the instances table read these definitions.
//!
//! A leaf module: it imports nothing of the crate, so nothing can form a cycle through it.

use std::fmt;

/// What happened to one claimed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletionOutcome {
    Deleted,
    Gone,
    Failed,
    Invalid,
    RetryScheduled,
    /// Handed back untouched (shutdown before, or the grace ran out during, its request; or the
    /// session's user came back before it was sent).
    Released,
}

impl DeletionOutcome {
    pub const ALL: [DeletionOutcome; 6] = [
        DeletionOutcome::Deleted,
        DeletionOutcome::Gone,
        DeletionOutcome::Failed,
        DeletionOutcome::Invalid,
        DeletionOutcome::RetryScheduled,
        DeletionOutcome::Released,
    ];

    /// The label in logs, metrics and the `reaper_instances` column of the same name.
    pub const fn label(self) -> &'static str {
        match self {
            DeletionOutcome::Deleted => "deleted",
            DeletionOutcome::Gone => "gone",
            DeletionOutcome::Failed => "failed",
            DeletionOutcome::Invalid => "invalid",
            DeletionOutcome::RetryScheduled => "retry_scheduled",
            DeletionOutcome::Released => "released",
        }
    }

    /// Whether the row reaches a final state.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            DeletionOutcome::Deleted | DeletionOutcome::Gone | DeletionOutcome::Failed | DeletionOutcome::Invalid
        )
    }

    /// Whether this outcome came from an answer charged to the row as an attempt. An invalid id
    /// is never sent and a released row was never answered.
    pub const fn is_charged(self) -> bool {
        !matches!(self, DeletionOutcome::Invalid | DeletionOutcome::Released)
    }

    /// Whether an operator should see this outcome at WARN.
    pub const fn is_alarming(self) -> bool {
        matches!(self, DeletionOutcome::Failed | DeletionOutcome::Invalid)
    }

    /// Position in `ALL` (for arrays of per-outcome counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DeletionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Counts per outcome, with a named field for each (no positional arrays).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    pub deleted: i64,
    pub gone: i64,
    pub failed: i64,
    pub invalid: i64,
    pub retry_scheduled: i64,
    pub released: i64,
}

impl OutcomeCounts {
    /// Builds the counts from a reader of each outcome's count.
    pub fn from_fn(mut count: impl FnMut(DeletionOutcome) -> i64) -> Self {
        Self {
            deleted: count(DeletionOutcome::Deleted),
            gone: count(DeletionOutcome::Gone),
            failed: count(DeletionOutcome::Failed),
            invalid: count(DeletionOutcome::Invalid),
            retry_scheduled: count(DeletionOutcome::RetryScheduled),
            released: count(DeletionOutcome::Released),
        }
    }

    pub fn get(&self, outcome: DeletionOutcome) -> i64 {
        match outcome {
            DeletionOutcome::Deleted => self.deleted,
            DeletionOutcome::Gone => self.gone,
            DeletionOutcome::Failed => self.failed,
            DeletionOutcome::Invalid => self.invalid,
            DeletionOutcome::RetryScheduled => self.retry_scheduled,
            DeletionOutcome::Released => self.released,
        }
    }

    /// Each outcome with its count, in `DeletionOutcome::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (DeletionOutcome, i64)> + '_ {
        DeletionOutcome::ALL.into_iter().map(|o| (o, self.get(o)))
    }
}

/// What one answer (or its absence) was, as a bounded label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerClass {
    Deleted,
    Gone,
    /// An HTTP answer worth retrying (5xx, proxy page, 1801-1803, 1861, unknown codes).
    Transient,
    /// No HTTP answer at all (timeout, reset, refused).
    NoAnswer,
    /// HTTP 429: the whole pool waits.
    RateLimited,
    /// The account's quota is spent: the whole pool waits.
    QuotaExhausted,
    /// The apikey was rejected: the whole pool waits.
    KeyRejected,
    /// Retrying cannot help this row.
    Permanent,
}

impl AnswerClass {
    pub const ALL: [AnswerClass; 8] = [
        AnswerClass::Deleted,
        AnswerClass::Gone,
        AnswerClass::Transient,
        AnswerClass::NoAnswer,
        AnswerClass::RateLimited,
        AnswerClass::QuotaExhausted,
        AnswerClass::KeyRejected,
        AnswerClass::Permanent,
    ];

    /// The classes that pause the whole pool (the `reason` label of `pauses_total`).
    pub const PAUSES: [AnswerClass; 3] = [
        AnswerClass::RateLimited,
        AnswerClass::QuotaExhausted,
        AnswerClass::KeyRejected,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            AnswerClass::Deleted => "deleted",
            AnswerClass::Gone => "gone",
            AnswerClass::Transient => "transient",
            AnswerClass::NoAnswer => "no_answer",
            AnswerClass::RateLimited => "rate_limited",
            AnswerClass::QuotaExhausted => "quota_exhausted",
            AnswerClass::KeyRejected => "key_rejected",
            AnswerClass::Permanent => "permanent",
        }
    }

    /// Whether such an answer is charged to the row as an attempt. Pauses are the account's
    /// problem, not the row's: they charge nothing.
    pub const fn is_charged(self) -> bool {
        !self.pauses_pool()
    }

    /// Whether such an answer closes the gate for every worker.
    pub const fn pauses_pool(self) -> bool {
        matches!(
            self,
            AnswerClass::RateLimited | AnswerClass::QuotaExhausted | AnswerClass::KeyRejected
        )
    }

    /// Position in `ALL` (for arrays of per-class counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_and_class_sits_at_its_own_index() {
        for (i, outcome) in DeletionOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
        for (i, class) in AnswerClass::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }

    #[test]
    fn pauses_are_never_charged_and_final_outcomes_are_the_four_final_states() {
        for class in AnswerClass::ALL {
            assert_eq!(class.is_charged(), !AnswerClass::PAUSES.contains(&class));
        }
        let finals: Vec<_> = DeletionOutcome::ALL.into_iter().filter(|o| o.is_final()).collect();
        assert_eq!(finals.len(), 4);
        assert!(!DeletionOutcome::Released.is_charged());
    }

    #[test]
    fn counts_read_back_what_they_were_built_from() {
        let counts = OutcomeCounts::from_fn(|o| o.index() as i64 * 10);
        assert_eq!(counts.retry_scheduled, 40);
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 150);
    }
}
