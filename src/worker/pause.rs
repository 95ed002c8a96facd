//! A 429, a spent quota or a rejected key: the account's problem, not the row's. The deleter
//! closes this process's gate, records the pause for the whole cluster, and says so once.

use super::deletion::{DEFAULT_429_PAUSE, Deleter};
use super::gate::Reopen;
use crate::api::{Answer, Verdict};
use crate::health::AccountPause;
use crate::session_id::logged;
use crate::store::ClaimedRow;

impl Deleter {
    /// Closes the gate for answers that are the account's problem, not the row's. Returns
    /// whether the answer was such a pause (and the row should simply be tried again).
    pub(super) async fn pause_for(&self, row: &ClaimedRow, answer: &Answer) -> bool {
        let (wait, reopen) = match answer.verdict {
            Verdict::RateLimited { retry_after } => (retry_after.unwrap_or(DEFAULT_429_PAUSE), Reopen::AtDeadline),
            Verdict::QuotaExhausted => {
                self.health.set_account_pause(Some(AccountPause::QuotaSpent));
                (self.quota_pause, Reopen::WithProbe)
            }
            Verdict::KeyRejected => {
                self.health.set_key_rejected(true);
                self.health.set_account_pause(Some(AccountPause::KeyRejected));
                (self.key_pause, Reopen::WithProbe)
            }
            _ => return false,
        };
        let locally_news = self.gate.close_for(wait, reopen);
        let first_in_cluster = self
            .budget
            .pause(answer.class(), wait, reopen, answer.http_status, answer.api_code)
            .await;
        if locally_news {
            self.metrics.pause(answer.class());
            let pause_s = wait.as_secs_f64();
            let http_status = answer.http_status;
            let api_code = answer.api_code;
            let api_message = answer.message.as_deref().unwrap_or_default();
            // The row whose answer started the pause is named too: the line stands alone.
            let (row_id, session) = (row.id.get(), logged(&row.session_id));
            // One line, its level and message by the kind of pause; the fields are the same.
            macro_rules! pause_line {
                ($level:ident, $message:literal) => {
                    tracing::$level!(pause_s, http_status, api_code, api_message, row_id, %session, first_in_cluster, $message)
                };
            }
            match answer.verdict {
                Verdict::KeyRejected => {
                    pause_line!(
                        error,
                        "the API rejected the apikey: all calls stopped, rows untouched; fix api.apikey"
                    )
                }
                Verdict::QuotaExhausted => pause_line!(warn, "the account's API quota is spent: all calls paused"),
                _ => pause_line!(warn, "the API asked us to slow down (429): all calls paused"),
            }
        }
        true
    }
}
