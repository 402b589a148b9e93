//! Backstage-style substitution (`${VAR}`, `$${`, `{$env: VAR}`, `{$file: path}`) and the
//! `TOKEN_BROKER_CONFIG_*` environment overrides (Backstage's `APP_CONFIG_` convention).
//!
//! Both run on the raw tree before validation, so every substituted or overridden value goes
//! through exactly the same checks as one written in the file. Error messages name the key
//! path, the variable name or the file path, never a value or file content.

use std::path::Path;

use serde_json::{Map, Value};

use super::env::EnvLookup;
use super::error::{Issues, KeyPath};

/// Prefix of override variables: `TOKEN_BROKER_CONFIG_keycloak_clientSecret` sets
/// `keycloak.clientSecret`.
pub const OVERRIDE_PREFIX: &str = "TOKEN_BROKER_CONFIG_";

/// Replaces `${VAR}` in every string value and every `{$env: VAR}` / `{$file: path}` mapping,
/// in place. Keys are never substituted. Replacement text is not rescanned, so a secret that
/// happens to contain `${` is kept verbatim.
pub(crate) fn substitute(
    value: &mut Value,
    path: &KeyPath,
    env: &dyn EnvLookup,
    base_dir: &Path,
    issues: &mut Issues,
) {
    match value {
        Value::String(s) => {
            if let Some(new) = substitute_str(s, path, env, issues) {
                *s = new;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &path.index(i), env, base_dir, issues);
            }
        }
        Value::Object(map) => {
            if let Some(new) = directive(map, path, env, base_dir, issues) {
                *value = new;
                return;
            }
            for (k, v) in map.iter_mut() {
                substitute(v, &path.key(k), env, base_dir, issues);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Handles a `{$env: ..}` or `{$file: ..}` mapping. Returns the replacement, or `None` when the
/// mapping is an ordinary one (or broken, in which case an issue was recorded and it is left
/// for validation to ignore).
fn directive(
    map: &Map<String, Value>,
    path: &KeyPath,
    env: &dyn EnvLookup,
    base_dir: &Path,
    issues: &mut Issues,
) -> Option<Value> {
    for unsupported in ["$include", "$value"] {
        if map.contains_key(unsupported) {
            issues.push_substitution(
                path,
                format!("{unsupported} is not supported (use $env or $file for secrets)"),
            );
        }
    }
    let kind = ["$env", "$file"]
        .into_iter()
        .find(|k| map.contains_key(*k))?;
    if map.len() != 1 {
        issues.push_substitution(path, format!("{kind} must be the only key of its mapping"));
        // Replace with null so validation reports "required" rather than "unknown key $env".
        return Some(Value::Null);
    }
    let arg = match map.get(kind) {
        Some(Value::String(s)) => s.as_str(),
        _ => {
            let what = if kind == "$env" {
                "an environment variable name"
            } else {
                "a file path"
            };
            issues.push_substitution(path, format!("{kind} must be a string: {what}"));
            return Some(Value::Null);
        }
    };
    if kind == "$env" {
        let name = arg.trim();
        if !is_var_name(name) {
            issues.push_substitution(
                path,
                "$env must be an environment variable name (letters, digits and _, not starting with a digit)",
            );
            return Some(Value::Null);
        }
        match env.var(name) {
            Some(v) => Some(Value::String(v)),
            None => {
                issues.push_substitution(
                    path,
                    format!("environment variable {name} is not set ($env)"),
                );
                Some(Value::Null)
            }
        }
    } else {
        // `${VAR}` in the path itself is allowed, e.g. `$file: ${CREDENTIALS_DIRECTORY}/secret`
        // for systemd credentials.
        let file = substitute_str(arg, path, env, issues).unwrap_or_else(|| arg.to_owned());
        Some(read_secret_file(&file, path, base_dir, issues).map_or(Value::Null, Value::String))
    }
}

/// Reads `$file` content, dropping one trailing newline (`echo secret > file` adds one).
fn read_secret_file(
    file: &str,
    path: &KeyPath,
    base_dir: &Path,
    issues: &mut Issues,
) -> Option<String> {
    if file.is_empty() {
        issues.push_substitution(path, "$file must not be empty");
        return None;
    }
    let full = base_dir.join(file);
    let bytes = match std::fs::read(&full) {
        Ok(b) => b,
        Err(e) => {
            // The io::Error text describes the failure (not found, permission denied, is a
            // directory), never the content.
            issues.push_substitution(path, format!("cannot read $file {}: {e}", full.display()));
            return None;
        }
    };
    let mut text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(_) => {
            issues.push_substitution(path, format!("$file {} is not valid UTF-8", full.display()));
            return None;
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Some(text)
}

/// Expands `${VAR}` and `$${` in one string. `None` when nothing changed or on error (the
/// error is recorded; the original text stays and is then dropped with the failed load).
fn substitute_str(
    s: &str,
    path: &KeyPath,
    env: &dyn EnvLookup,
    issues: &mut Issues,
) -> Option<String> {
    if !s.contains("${") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut ok = true;
    while let Some(pos) = rest.find('$') {
        let (before, from_dollar) = rest.split_at(pos);
        out.push_str(before);
        if let Some(after) = from_dollar.strip_prefix("$${") {
            // Escape: `$${` is a literal `${`.
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from_dollar.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                issues.push_substitution(path, "unterminated ${ (write $${ for a literal ${)");
                return None;
            };
            let (inner, tail) = after.split_at(end);
            rest = tail.get(1..).unwrap_or("");
            let name = inner.trim();
            if !is_var_name(name) {
                ok = false;
                issues.push_substitution(
                    path,
                    "${...} must contain an environment variable name (letters, digits and _, not starting with a digit); write $${ for a literal ${",
                );
                continue;
            }
            match env.var(name) {
                Some(v) => out.push_str(&v),
                None => {
                    ok = false;
                    issues
                        .push_substitution(path, format!("environment variable {name} is not set"));
                }
            }
        } else {
            out.push('$');
            rest = from_dollar.get(1..).unwrap_or("");
        }
    }
    out.push_str(rest);
    ok.then_some(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Applies every `TOKEN_BROKER_CONFIG_<a>_<b>_<c>` variable as key path `a.b.c`. The value is
/// JSON when it parses as JSON, else a plain string; it is not substituted. Shorter paths are
/// applied first so that a more specific variable wins over a JSON object that also sets it.
pub(crate) fn apply_overrides(root: &mut Value, env: &dyn EnvLookup, issues: &mut Issues) {
    let mut overrides: Vec<(String, Vec<String>, String)> = Vec::new();
    for (name, raw) in env.vars() {
        let Some(rest) = name.strip_prefix(OVERRIDE_PREFIX) else {
            continue;
        };
        let segments: Vec<String> = rest.split('_').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            issues.push(
                name.as_str(),
                format!(
                    "override variables must be {OVERRIDE_PREFIX} followed by key names separated by single underscores"
                ),
            );
            continue;
        }
        overrides.push((name, segments, raw));
    }
    overrides.sort_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(&b.0)));
    for (name, segments, raw) in overrides {
        let value = serde_json::from_str::<Value>(&raw).unwrap_or(Value::String(raw));
        if let Err(blocked_at) = set_path(root, &segments, value) {
            issues.push(
                name.as_str(),
                format!(
                    "cannot set {}: {blocked_at} is not a mapping",
                    segments.join(".")
                ),
            );
        }
    }
}

/// Sets `segments` in `root`, creating mappings as needed and deep-merging an object value into
/// an existing mapping (so `TOKEN_BROKER_CONFIG_keycloak='{"clientId":"x"}'` keeps the other
/// keycloak keys, as Backstage's layered config does). A numeric segment may index an existing
/// list item. On failure returns the path of the node that blocks the way.
fn set_path(root: &mut Value, segments: &[String], value: Value) -> Result<(), KeyPath> {
    let mut node = root;
    let mut path = KeyPath::root();
    for seg in segments {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => {
                path = path.key(seg);
                map.entry(seg.clone()).or_insert(Value::Null)
            }
            Value::Array(items) => {
                let idx = seg.parse::<usize>().map_err(|_| path.clone())?;
                path = path.index(idx);
                items.get_mut(idx).ok_or_else(|| path.clone())?
            }
            _ => return Err(path),
        };
    }
    merge(node, value);
    Ok(())
}

fn merge(target: &mut Value, value: Value) {
    match (target, value) {
        (Value::Object(existing), Value::Object(new)) => {
            for (k, v) in new {
                merge(existing.entry(k).or_insert(Value::Null), v);
            }
        }
        (target, value) => *target = value,
    }
}
