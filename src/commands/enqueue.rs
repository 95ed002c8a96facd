//! `enqueue`: session ids on stdin, one per line, due now. Malformed ids are reported (and not
//! inserted); the valid ones are inserted in bulk, duplicates ignored.

use std::io::BufRead;

use anyhow::Context;
use chrono::Utc;

use super::Exit;
use crate::config::Config;
use crate::session_id::SessionId;

/// Ids per insert transaction.
const CHUNK: usize = 10_000;
/// sysexits `EX_DATAERR`: some input lines were malformed.
const EXIT_DATAERR: u8 = 65;

pub async fn enqueue(config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let (mut valid, mut malformed, mut inserted, mut read) = (Vec::with_capacity(CHUNK), 0u64, 0u64, 0u64);
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("Failed to read stdin")?;
        let raw = line.trim();
        if raw.is_empty() {
            continue;
        }
        read += 1;
        match SessionId::parse(raw) {
            Ok(id) => valid.push(id.as_str().to_owned()),
            Err(e) => {
                malformed += 1;
                eprintln!("session-reaper: line {}: {e}; not enqueued", number + 1);
            }
        }
        if valid.len() >= CHUNK {
            inserted += store.enqueue(&valid, Utc::now()).await?;
            valid.clear();
        }
    }
    inserted += store.enqueue(&valid, Utc::now()).await?;
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
