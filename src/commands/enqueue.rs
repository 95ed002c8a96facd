//! `enqueue [--editor NAME]`: session ids of one editor on stdin, one per line, due now. Malformed ids are reported (and not
//! inserted); the valid ones are inserted in bulk, duplicates ignored. On a terminal a progress
//! bar (stdin redirected from a file: by bytes, with ETA) or a spinner (a pipe) shows the pace.

use std::fs::File;
use std::io::BufRead;
use std::os::fd::AsFd;

use anyhow::Context;
use chrono::Utc;
use indicatif::ProgressBar;

use super::{EXIT_DATAERR, Exit, progress};
use crate::config::Config;
use crate::editor::Editor;
use crate::session_id::SessionId;

/// Ids per insert transaction.
const CHUNK: usize = 10_000;

pub async fn enqueue(config: &Config, editor: Editor) -> anyhow::Result<()> {
    let store = super::open_named(config).await?;
    let insert = |ids: Vec<String>| {
        let store = store.clone();
        async move {
            store
                .enqueue_editor(&ids, editor, Utc::now())
                .await
                .map_err(|e| super::name_database(config, e))
        }
    };
    let shown = progress_for_stdin();
    let (mut valid, mut malformed, mut inserted, mut read) = (Vec::with_capacity(CHUNK), 0u64, 0u64, 0u64);
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("Failed to read stdin")?;
        shown.advance(line.len() as u64 + 1);
        let raw = line.trim();
        if raw.is_empty() {
            continue;
        }
        read += 1;
        match SessionId::parse(raw) {
            Ok(id) => valid.push(id.as_str().to_owned()),
            Err(e) => {
                malformed += 1;
                shown
                    .bar
                    .suspend(|| eprintln!("session-reaper: line {}: {e}; not enqueued", number + 1));
            }
        }
        if valid.len() >= CHUNK {
            inserted += insert(std::mem::take(&mut valid)).await?;
            shown.bar.set_message(format!("{read} ids, {inserted} new"));
        }
    }
    inserted += insert(valid).await?;
    shown.bar.finish_and_clear();
    let valid_count = read - malformed;
    println!(
        "enqueued {inserted} new, {} already present, {malformed} malformed",
        valid_count - inserted
    );
    if malformed > 0 {
        return Err(Exit(EXIT_DATAERR).into());
    }
    Ok(())
}

/// The progress shown while stdin is read.
struct Shown {
    bar: ProgressBar,
    /// Whether the bar counts bytes of a file (else lines of a pipe).
    by_bytes: bool,
}

impl Shown {
    fn advance(&self, bytes: u64) {
        self.bar.inc(if self.by_bytes { bytes } else { 1 });
    }
}

/// A bar over the size of stdin when it is a regular file, else a spinner counting lines.
fn progress_for_stdin() -> Shown {
    let size = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|file| file.metadata())
        .ok()
        .filter(|meta| meta.is_file() && meta.len() > 0)
        .map(|meta| meta.len());
    match size {
        Some(len) => Shown {
            bar: progress::bar(
                len,
                "enqueue [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            ),
            by_bytes: true,
        },
        None => Shown {
            bar: progress::spinner("{spinner} enqueue: {human_pos} lines read, {rate} {msg}"),
            by_bytes: false,
        },
    }
}
