//! The ceiling: what a bare reqwest client in the bench process gets from the same stand-in with
//! the same concurrency and the same DELETE requests, with no database, no limiter, no logging.
//! The daemon's throughput is reported as a fraction of this.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::header::{ACCEPT, CONTENT_LENGTH};

use crate::db::session_id;
use crate::noise::own_cpu;
use crate::standin::StandInProc;

pub struct Ceiling {
    pub requests: u64,
    /// Answers other than 200 with a success body, and transport errors.
    pub errors: u64,
    pub elapsed: Duration,
    /// CPU time of the whole bench process (user + sys) meanwhile: the raw client's cost.
    pub cpu: Duration,
}

impl Ceiling {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `n` deletions of distinct ids (or stops at `bound`) with `concurrency` in flight.
pub async fn run(standin: &StandInProc, concurrency: u32, n: usize, bound: Duration) -> anyhow::Result<Ceiling> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("Failed to build the ceiling client")?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = own_cpu();
    let started = Instant::now();
    let deadline = started + bound;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, sent, errors, tag) =
            (client.clone(), next.clone(), sent.clone(), errors.clone(), tag.clone());
        let (base, key) = (standin.base_url.clone(), standin.apikey.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n || Instant::now() >= deadline {
                    return;
                }
                let url = format!(
                    "{base}/writer/officeapi/v1/sessions/{}?apikey={key}",
                    session_id(i, &tag)
                );
                let answer = client
                    .delete(url)
                    .header(CONTENT_LENGTH, 0)
                    .header(ACCEPT, "application/json")
                    .send()
                    .await;
                sent.fetch_add(1, Relaxed);
                let ok = match answer {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await.unwrap_or_default();
                        status.is_success() && body.windows(4).any(|w| w == b"true")
                    }
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    Ok(Ceiling {
        requests: sent.load(Relaxed),
        errors: errors.load(Relaxed),
        elapsed,
        cpu: own_cpu().saturating_sub(cpu_before),
    })
}
