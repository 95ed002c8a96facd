//! The stand-in API in a process of its own (`session-reaper stand-in`), so the bench, the
//! daemon and the API each have their own CPU accounting, and its counters at `/__standin/stats`.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a freshly spawned stand-in may take to answer its first stats request.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `stop` waits after SIGINT before it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The counters the stand-in serves at `GET /__standin/stats`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub requests: u64,
    pub off_contract: u64,
    pub deleted_twice: u64,
    /// Requests per second of the stand-in's life; seconds without a request have no entry.
    pub per_second: Vec<u64>,
}

/// A running `session-reaper stand-in` child; killed when dropped.
pub struct StandInProc {
    child: Option<Child>,
    pub base_url: String,
    pub apikey: String,
    /// Short timeouts: a stats request must never stall a measurement loop.
    http: reqwest::Client,
}

impl StandInProc {
    /// Spawns the stand-in with `latency` before every answer and waits until it serves stats.
    pub async fn start(bin: &Path, log: &Path, latency: Duration) -> anyhow::Result<Self> {
        let mut last_error = None;
        // The free port is only free when we look; another process may take it first.
        for _ in 0..3 {
            match Self::try_start(bin, log, latency).await {
                Ok(standin) => return Ok(standin),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    async fn try_start(bin: &Path, log: &Path, latency: Duration) -> anyhow::Result<Self> {
        let port = testkit::free_port().context("Failed to find a free port")?;
        let apikey = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let listen = format!("127.0.0.1:{port}");
        let log_file = File::options().create(true).append(true).open(log)?;
        let mut cmd = Command::new(bin);
        testkit::clean_env(&mut cmd);
        cmd.args(["stand-in", "--listen", &listen, "--apikey", &apikey, "--latency"])
            .arg(format!("{}ms", latency.as_millis()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("Failed to start {} stand-in", bin.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("Failed to build the stats client")?;
        let mut standin = Self {
            child: Some(child),
            base_url: format!("http://{listen}"),
            apikey,
            http,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if standin.counters().await.is_ok() {
                return Ok(standin);
            }
            if let Some(status) = standin.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the stand-in exited at start ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "the stand-in did not answer within {START_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let stats: serde_json::Value = self
            .http
            .get(format!("{}/__standin/stats", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let number = |key: &str| stats.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Counters {
            requests: number("requests"),
            off_contract: number("off_contract"),
            deleted_twice: number("deleted_twice"),
            per_second: stats
                .get("per_second")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default(),
        })
    }

    /// Stops the stand-in (SIGINT, as its Ctrl-C handler expects) and reaps it.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for StandInProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
