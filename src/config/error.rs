//! Configuration errors: every problem found is kept, each with the key path it concerns.
//!
//! Messages describe the expected form and never repeat a configured value: `${VAR}`
//! substitution and env overrides can put a secret into any key, so even a "harmless" field's
//! value may be a credential pasted into the wrong place.

use std::fmt;

/// Path used for problems that concern the whole document rather than one key.
pub const ROOT_PATH: &str = "<root>";

/// One problem, e.g. `targets.kagenti.fallback`: `must be service_account or deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path in dotted form with `[i]` for list items, e.g.
    /// `backend.auth.externalAccess[0].options.token`; `<root>` for the whole document and the
    /// variable name for a malformed `TOKEN_BROKER_CONFIG_*` override.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem of one configuration, in the order found (substitution, overrides, then
/// validation in document-schema order).
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigErrors {
    /// One `path: message` line per issue.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    pub(crate) fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            issues: vec![ConfigIssue {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// Collector threaded through every stage so that one run reports all problems.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    list: Vec<ConfigIssue>,
    /// Paths whose substitution failed: later validation problems at or below them are
    /// consequences (e.g. "is required" for a missing `$env` variable) and are not repeated.
    failed_substitutions: Vec<String>,
}

impl Issues {
    /// Records a substitution failure at `path` and hides later validation noise below it.
    pub(crate) fn push_substitution(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.push(path, message);
        self.failed_substitutions.push(path.to_string());
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let issue = ConfigIssue {
            path: path.into(),
            message: message.into(),
        };
        let below = |failed: &String| {
            issue
                .path
                .strip_prefix(failed.as_str())
                .is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
                })
        };
        if self.failed_substitutions.iter().any(below) {
            return;
        }
        // The same problem can be reached twice (e.g. a default checked against a sibling);
        // repeating it would only add noise.
        if !self.list.contains(&issue) {
            self.list.push(issue);
        }
    }

    pub(crate) fn into_result<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.list.is_empty() => Ok(v),
            _ if self.list.is_empty() => Err(ConfigErrors::single(
                ROOT_PATH,
                "configuration is invalid (no detail recorded; this is a bug)",
            )),
            _ => Err(ConfigErrors { issues: self.list }),
        }
    }
}

/// A key path under construction: `a.b[2].c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(String::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            KeyPath(key.to_owned())
        } else {
            KeyPath(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        KeyPath(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(ROOT_PATH)
        } else {
            f.write_str(&self.0)
        }
    }
}

impl From<&KeyPath> for String {
    fn from(p: &KeyPath) -> String {
        p.to_string()
    }
}

impl From<KeyPath> for String {
    fn from(p: KeyPath) -> String {
        p.to_string()
    }
}
