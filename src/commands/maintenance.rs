//! `requeue` and `prune`: an operator's two levers on the table.

use std::time::Duration;

use chrono::Utc;

use crate::config::{Config, MAX_DURATION};
use crate::store::{Requeue, chrono_duration};
use crate::worker::PRUNE_BATCH;

pub async fn requeue(config: &Config, failed: bool, ids: &[String]) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let which = if failed { Requeue::AllFailed } else { Requeue::Ids(ids) };
    let moved = store.requeue(which, Utc::now()).await?;
    println!("requeued {moved} sessions");
    Ok(())
}

pub async fn prune(config: &Config, older_than: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        older_than <= MAX_DURATION,
        "--older-than must be at most {}",
        humantime::format_duration(MAX_DURATION)
    );
    let store = super::open_store(config).await?;
    let cutoff = Utc::now() - chrono_duration(older_than);
    let mut pruned = 0;
    loop {
        let batch = store.prune(cutoff, PRUNE_BATCH).await?;
        if batch == 0 {
            break;
        }
        pruned += batch;
    }
    println!(
        "pruned {pruned} finished sessions older than {}",
        humantime::format_duration(older_than)
    );
    Ok(())
}
