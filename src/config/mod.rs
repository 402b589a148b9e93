//! Configuration: YAML loading with `${VAR}` substitution, `$env`/`$file` secrets, validation
//! that reports every error at once with its key path, and the validated types.
//!
//! Pipeline (each stage records problems and carries on, so all are reported together):
//! 1. [`load`]: YAML text to a `serde_json::Value` tree;
//! 2. [`substitute`]: `${VAR}`, `$${`, `{$env: VAR}`, `{$file: path}`, then the
//!    `TOKEN_BROKER_CONFIG_*` overrides (Backstage's `APP_CONFIG_` convention);
//! 3. [`validate`]: the tree to [`Config`], with defaults. Key reference: docs/configuration.md.

pub mod advice;
pub mod backstage;
mod env;
mod error;
mod load;
pub mod model;
mod substitute;
mod validate;
mod walk;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use advice::warnings;
pub use env::{EnvLookup, ProcessEnv};
pub use error::{ConfigErrors, ConfigIssue, ROOT_PATH};
pub use model::*;
pub use substitute::OVERRIDE_PREFIX;
pub use validate::{BROKER_PLUGIN_ID, MAX_ASSERTION_LIFETIME};

use error::{Issues, KeyPath};

/// Loads and validates the file at `path` using the process environment. Relative `$file`
/// paths resolve against the config file's directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            ROOT_PATH,
            format!("cannot read config file {}: {e}", path.display()),
        )
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    load_str(&text, &ProcessEnv, base_dir)
}

/// Loads and validates YAML text. `env` supplies `${VAR}`, `$env` and overrides; relative
/// `$file` paths resolve against `base_dir`.
pub fn load_str(yaml: &str, env: &dyn EnvLookup, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut issues = Issues::default();
    let Some(mut tree) = load::parse_yaml(yaml, &mut issues) else {
        return issues.into_result(None);
    };
    substitute::substitute(&mut tree, &KeyPath::root(), env, base_dir, &mut issues);
    substitute::apply_overrides(&mut tree, env, &mut issues);
    let config = validate::validate(&tree, &mut issues);
    issues.into_result(config)
}
