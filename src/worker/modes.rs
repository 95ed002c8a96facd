//! How a run is asked to end, and how it ended.

/// When `run` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until shutdown (`demo` cancels its own token once nothing is open).
    Daemon,
    /// Rows due at the start, then exit (cron, Kubernetes Jobs); later retries wait for the next run.
    Once,
}

/// How a run ended: what `run --once` turns into its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every row due at the start was processed (`--once`), or a clean stop (the daemon).
    Done,
    /// `--once` was stopped by a signal, or rows were handed back unsent.
    Incomplete,
    /// `--once`: the database stayed unreachable for `database.connect_timeout`.
    DatabaseUnavailable,
    /// `--once`: the API rejected the key; the rows are untouched.
    KeyRejected,
    /// `--once`: the account's quota is spent; the rows are untouched.
    QuotaSpent,
}
