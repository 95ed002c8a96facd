//! The environment of a daemon child process: the daemon reads `SESSION_REAPER_<SECTION>__<KEY>`
//! for each configuration key, and nothing inherited from the caller may leak in.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// What every variable of the daemon's configuration starts with.
pub const ENV_PREFIX: &str = "SESSION_REAPER_";

/// The `SESSION_REAPER_*` variables of one daemon run, built from configuration keys.
///
/// ```
/// let env = testkit::DaemonEnv::new("sqlite:///tmp/x.db", "http://127.0.0.1:1", "key")
///     .set("worker.concurrency", 8)
///     .set("log.level", "warn");
/// assert!(env.vars().contains(&("SESSION_REAPER_WORKER__CONCURRENCY".into(), "8".into())));
/// ```
#[derive(Debug, Clone, Default)]
pub struct DaemonEnv {
    vars: Vec<(String, String)>,
}

impl DaemonEnv {
    /// What every run needs: the database, the API (the stand-in's base URL) and its apikey.
    pub fn new(database_url: &str, api_base_url: &str, apikey: &str) -> Self {
        Self::default()
            .set("database.url", database_url)
            .set("api.base_url", api_base_url)
            .set("api.apikey", apikey)
    }

    /// Sets the configuration key `key`, written as in the TOML file (`section.name`), replacing
    /// an earlier value.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        let name = var_name(key);
        let value = value.to_string();
        match self.vars.iter_mut().find(|(k, _)| *k == name) {
            Some(var) => var.1 = value,
            None => self.vars.push((name, value)),
        }
        self
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    pub fn into_vars(self) -> Vec<(String, String)> {
        self.vars
    }

    /// Gives `cmd` exactly these variables of the daemon's (see [`clean_env`]).
    pub fn apply(&self, cmd: &mut Command) {
        clean_env(cmd);
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)));
    }
}

/// The variable of the configuration key `key` (`worker.concurrency` ->
/// `SESSION_REAPER_WORKER__CONCURRENCY`).
pub fn var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
}

/// Removes from `cmd`'s environment what the caller's own environment would add to the daemon's
/// configuration: every `SESSION_REAPER_*` variable, and systemd's `CREDENTIALS_DIRECTORY` (the
/// apikey file) and `STATE_DIRECTORY` (the default database path).
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(ENV_PREFIX) {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("CREDENTIALS_DIRECTORY").env_remove("STATE_DIRECTORY");
}

/// The daemon binary `bin` with `args`, a clean environment plus `env`, and no stdin.
pub fn daemon_command(bin: impl AsRef<OsStr>, args: &[&str], env: &[(String, String)]) -> Command {
    let mut command = Command::new(bin);
    command.args(args);
    clean_env(&mut command);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_the_daemons_variables_and_a_later_value_wins() {
        let env = DaemonEnv::new("sqlite:///x.db", "http://127.0.0.1:9", "k")
            .set("worker.rate_per_second", 5)
            .set("log.level", "debug")
            .set("log.level", "warn");
        let vars: Vec<(&str, &str)> = env.vars().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            vars,
            [
                ("SESSION_REAPER_DATABASE__URL", "sqlite:///x.db"),
                ("SESSION_REAPER_API__BASE_URL", "http://127.0.0.1:9"),
                ("SESSION_REAPER_API__APIKEY", "k"),
                ("SESSION_REAPER_WORKER__RATE_PER_SECOND", "5"),
                ("SESSION_REAPER_LOG__LEVEL", "warn"),
            ]
        );
    }
}
