//! `requeue` and `prune`: an operator's two levers on the table, each with `--dry-run`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use super::{EXIT_DATAERR, Exit, name_database, progress};
use crate::config::{Config, MAX_DURATION};
use crate::session_id::prefix;
use crate::store::{Requeue, State, chrono_duration};
use crate::worker::PRUNE_BATCH;

/// Moves final rows back to `pending`. Listed ids without a row, or whose row is not final, are
/// reported one line each on stderr and make the exit code 65; the count printed is the rows
/// that really moved. Output names rows by row id and session prefix, never by whole id.
pub async fn requeue(config: &Config, failed: bool, ids: &[String], dry_run: bool) -> anyhow::Result<()> {
    let store = super::open_named(config).await?;
    let named = |e| name_database(config, e);
    // Each id once, in the order given, with the position it was first given at.
    let mut seen = HashSet::new();
    let unique: Vec<(usize, String)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| seen.insert(id.as_str()))
        .map(|(position, id)| (position, id.clone()))
        .collect();
    let just_ids: Vec<String> = unique.iter().map(|(_, id)| id.clone()).collect();
    let which = if failed {
        Requeue::AllFailed
    } else {
        Requeue::Ids(&just_ids)
    };
    let found = store.requeue_candidates(which).await.map_err(named)?;
    let known: HashSet<&str> = found.iter().map(|(_, session, _)| session.as_str()).collect();
    let mut problems = 0;
    for (position, id) in unique.iter().filter(|(_, id)| !known.contains(id.as_str())) {
        problems += 1;
        eprintln!(
            "session-reaper: requeue: argument {} (session {}): no such session",
            position + 1,
            prefix(id)
        );
    }
    let (movable, open): (Vec<_>, Vec<_>) = found.iter().partition(|(_, _, state)| state.is_terminal());
    for (row_id, session, state) in &open {
        problems += 1;
        eprintln!(
            "session-reaper: requeue: row {row_id} (session {}) is {state}, not final: left alone",
            prefix(session)
        );
    }
    if dry_run {
        println!("would requeue {} sessions", movable.len());
        for (row_id, session, state) in &movable {
            println!("  row {row_id}  session {}  {state}", prefix(session));
        }
    } else {
        let moved = if failed {
            store.requeue(Requeue::AllFailed, Utc::now()).await.map_err(named)?
        } else {
            let final_ids: Vec<String> = movable.iter().map(|(_, session, _)| session.clone()).collect();
            store
                .requeue(Requeue::Ids(&final_ids), Utc::now())
                .await
                .map_err(named)?
        };
        if !failed && moved < movable.len() as u64 {
            problems += 1;
            eprintln!(
                "session-reaper: requeue: {} of the rows changed state meanwhile: left alone",
                movable.len() as u64 - moved
            );
        }
        println!("requeued {moved} sessions");
    }
    store.close().await;
    if problems > 0 {
        return Err(Exit(EXIT_DATAERR).into());
    }
    Ok(())
}

/// Deletes final rows finished longer ago than `older_than`, in batches; on a terminal with a
/// progress bar. With `dry_run`, counts them per state instead.
pub async fn prune(config: &Config, older_than: Duration, dry_run: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        older_than <= MAX_DURATION,
        "--older-than must be at most {}",
        humantime::format_duration(MAX_DURATION)
    );
    let store = super::open_named(config).await?;
    let named = |e| name_database(config, e);
    let cutoff = Utc::now() - chrono_duration(older_than);
    let age = humantime::format_duration(older_than);
    if dry_run {
        let counts = store.prunable(cutoff).await.map_err(named)?;
        let total: i64 = counts.iter().map(|(_, n)| n).sum();
        let per_state: Vec<String> = State::ALL
            .iter()
            .filter_map(|state| {
                let n = counts.iter().find(|(s, _)| s == state)?.1;
                Some(format!("{state} {n}"))
            })
            .collect();
        let detail = if per_state.is_empty() {
            String::new()
        } else {
            format!(" ({})", per_state.join(", "))
        };
        println!("would prune {total} finished sessions older than {age}{detail}");
        store.close().await;
        return Ok(());
    }
    // The total is counted only for a bar someone sees.
    let shown = if progress::visible() {
        let total: i64 = store
            .prunable(cutoff)
            .await
            .map_err(named)?
            .iter()
            .map(|(_, n)| n)
            .sum();
        progress::bar(
            total.max(0) as u64,
            "prune [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}",
        )
    } else {
        progress::spinner("{spinner} prune: {human_pos} rows deleted, {rate}")
    };
    let mut pruned = 0;
    loop {
        let batch = store.prune(cutoff, PRUNE_BATCH).await.map_err(named)?;
        if batch == 0 {
            break;
        }
        pruned += batch;
        shown.inc(batch);
    }
    shown.finish_and_clear();
    store.close().await;
    println!("pruned {pruned} finished sessions older than {age}");
    Ok(())
}
