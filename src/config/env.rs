//! The environment as a configuration layer: `SESSION_REAPER_<SECTION>__<KEY>` variables only.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::defaults::*;

/// `SESSION_REAPER_A__B=v` variables from an explicit list (figment's `Env` reads only the
/// process environment, and tests pass their own). Values stay strings: an apikey of digits
/// must not turn into a number. Names of another shape are not configuration and are skipped.
pub(super) struct EnvVars<'a>(pub(super) &'a [(String, String)]);

impl Provider for EnvVars<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment")
            .interpolater(|_profile, keys| format!("{ENV_PREFIX}{}", keys.join("__").to_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, value) in self.0 {
            let Some(key) = name.strip_prefix(ENV_PREFIX).filter(|_| is_config_variable(name)) else {
                continue;
            };
            let mut parts: Vec<String> = key.split("__").map(str::to_lowercase).collect();
            let Some(leaf) = parts.pop() else { continue };
            let mut dict = &mut root;
            for part in parts {
                let entry = dict.entry(part).or_insert_with(|| Value::from(Dict::new()));
                if !matches!(entry, Value::Dict(..)) {
                    *entry = Value::from(Dict::new());
                }
                let Value::Dict(_, inner) = entry else {
                    unreachable!("made a dict above")
                };
                dict = inner;
            }
            dict.insert(leaf, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Whether a variable's name has the shape of configuration, `SESSION_REAPER_<SECTION>__<KEY>`
/// (then a misspelt key is an error); other `SESSION_REAPER_*` names belong to something else.
pub(super) fn is_config_variable(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|key| key.split("__").count() >= 2 && key.split("__").all(|part| !part.is_empty()))
}
