//! Environment access behind a trait, so tests (and the `dev` command) can pass a map instead
//! of mutating the process environment, which is racy in a multi-threaded process.

use std::collections::HashMap;

/// Source of environment variables for `${VAR}`, `$env` and `TOKEN_BROKER_CONFIG_*` overrides.
pub trait EnvLookup {
    /// The value of `name`, or `None` when unset.
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable, for the override scan.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        // A set but non-UTF-8 value cannot be a valid config string; treating it as unset gives
        // the "not set" error, which is the closest accurate description available here.
        std::env::var(name).ok()
    }

    fn vars(&self) -> Vec<(String, String)> {
        // `std::env::vars` panics on non-UTF-8 entries; skip those instead (no override or
        // config value can be non-UTF-8 anyway).
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }
}

impl EnvLookup for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
