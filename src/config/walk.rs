//! A small path-tracking reader over the raw `serde_json::Value` tree.
//!
//! Each helper records a problem in [`Issues`] and returns `None` instead of stopping, so one run
//! reports every error. Messages describe the expected form and never include the value found
//! (only its JSON type), because substitution may have put a secret anywhere.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{Issues, KeyPath};

/// A mapping node whose keys have been checked against the schema. An absent or `null` node
/// reads as an empty mapping so that each missing required key is reported by name.
pub(crate) struct Obj<'v> {
    map: Option<&'v Map<String, Value>>,
    pub(crate) path: KeyPath,
}

/// One looked-up key: its value (`null` counts as absent, as in Backstage) and its path.
pub(crate) struct Field<'v> {
    pub(crate) value: Option<&'v Value>,
    pub(crate) path: KeyPath,
}

impl<'v> Obj<'v> {
    /// Reads `value` as a mapping whose keys must all be in `known` (pass `None` to accept any
    /// key, for maps keyed by name such as `targets`).
    pub(crate) fn new(
        value: Option<&'v Value>,
        path: KeyPath,
        known: Option<&[&str]>,
        issues: &mut Issues,
    ) -> Option<Obj<'v>> {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                issues.push(&path, format!("expected a mapping, found {}", kind(other)));
                return None;
            }
        };
        if let (Some(map), Some(known)) = (map, known) {
            for key in map.keys() {
                if !known.contains(&key.as_str()) {
                    issues.push(path.key(key), unknown_key_message(key, known));
                }
            }
        }
        Some(Obj { map, path })
    }

    pub(crate) fn field(&self, key: &str) -> Field<'v> {
        Field {
            value: self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null()),
            path: self.path.key(key),
        }
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'v String, Field<'v>)> + '_ {
        self.map.into_iter().flatten().map(|(k, v)| {
            (
                k,
                Field {
                    value: Some(v).filter(|v| !v.is_null()),
                    path: self.path.key(k),
                },
            )
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_none_or(Map::is_empty)
    }
}

/// `unknown key`, with a "did you mean" hint for a near miss (typo, different case or
/// snake_case) and otherwise the list of valid keys.
fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key_n = norm(key);
    let best = known
        .iter()
        .map(|k| (levenshtein(&key_n, &norm(k)), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 2 && d * 3 <= key_n.chars().count().max(1) => {
            format!("unknown key (did you mean {k}?)")
        }
        _ if known.is_empty() => "unknown key".to_owned(),
        _ => format!("unknown key (expected one of: {})", known.join(", ")),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(usize::MAX / 2) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(usize::MAX / 2) + 1;
            let ins = cur.get(j).copied().unwrap_or(usize::MAX / 2) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The JSON type of a value, for "expected X, found Y" messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expected_string(path: &KeyPath, v: &Value, issues: &mut Issues) {
    let hint = match v {
        // A numeric or boolean secret set through an override is parsed as JSON (the
        // APP_CONFIG_ convention); say how to keep it a string without showing it.
        Value::Number(_) | Value::Bool(_) => {
            " (quote it in YAML; a TOKEN_BROKER_CONFIG_* value that parses as JSON is read as JSON, so wrap it in double quotes)"
        }
        _ => "",
    };
    issues.push(path, format!("expected a string, found {}{hint}", kind(v)));
}

impl<'v> Field<'v> {
    /// Optional list: its items as fields (a YAML `null` item counts as absent), `Some(None)`
    /// when the key is absent, `None` after a type error.
    pub(crate) fn opt_items(&self, issues: &mut Issues) -> Option<Option<Vec<Field<'v>>>> {
        match self.value {
            None => Some(None),
            Some(Value::Array(items)) => Some(Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Field {
                        value: Some(item).filter(|v| !v.is_null()),
                        path: self.path.index(i),
                    })
                    .collect(),
            )),
            Some(other) => {
                issues.push(
                    &self.path,
                    format!("expected a list, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// Optional string: `Some(None)` when absent, `None` after a type error.
    pub(crate) fn opt_str(&self, issues: &mut Issues) -> Option<Option<&'v str>> {
        match self.value {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(other) => {
                expected_string(&self.path, other, issues);
                None
            }
        }
    }

    /// Required string.
    pub(crate) fn req_str(&self, issues: &mut Issues) -> Option<&'v str> {
        match self.opt_str(issues)? {
            Some(s) => Some(s),
            None => {
                issues.push(&self.path, "is required");
                None
            }
        }
    }

    /// Boolean; the strings `true`/`false` are accepted too because `${VAR}` always yields a
    /// string (Backstage's ConfigReader does the same).
    pub(crate) fn bool_or(&self, default: bool, issues: &mut Issues) -> Option<bool> {
        match self.value {
            None => Some(default),
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "true" => Some(true),
            Some(Value::String(s)) if s == "false" => Some(false),
            Some(_) => {
                issues.push(&self.path, "expected a boolean (true or false)");
                None
            }
        }
    }

    /// Optional non-negative integer at least `min`; a decimal string is accepted for the same
    /// `${VAR}` reason as booleans.
    pub(crate) fn opt_uint(&self, min: u64, issues: &mut Issues) -> Option<Option<u64>> {
        let n = match self.value {
            None => return Some(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) if is_digits(s) => s.parse::<u64>().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n >= min => Some(Some(n)),
            _ => {
                issues.push(&self.path, format!("expected an integer of at least {min}"));
                None
            }
        }
    }

    pub(crate) fn uint_or(&self, default: u64, min: u64, issues: &mut Issues) -> Option<u64> {
        Some(self.opt_uint(min, issues)?.unwrap_or(default))
    }

    /// Duration: `500ms`, `30s`, `5m`, `1h`, `1d`, or an integer number of seconds.
    pub(crate) fn duration_or(
        &self,
        default: Duration,
        allow_zero: bool,
        issues: &mut Issues,
    ) -> Option<Duration> {
        let parsed = match self.value {
            None => return Some(default),
            Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs),
            Some(Value::String(s)) => parse_duration(s),
            Some(_) => None,
        };
        match parsed {
            Some(d) if allow_zero || !d.is_zero() => Some(d),
            Some(_) => {
                issues.push(&self.path, "must be greater than zero");
                None
            }
            None => {
                issues.push(
                    &self.path,
                    "expected a duration: an integer number of seconds or a string like 500ms, 30s, 5m, 1h",
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn enum_or<T: Copy>(
        &self,
        default: T,
        choices: &[(&str, T)],
        issues: &mut Issues,
    ) -> Option<T> {
        let Some(s) = self.opt_str(issues)? else {
            return Some(default);
        };
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                issues.push(&self.path, format!("must be one of: {}", names.join(", ")));
                None
            }
        }
    }

    /// `IP:port` socket address; host names are rejected because a listener binds an address.
    pub(crate) fn socket_or(&self, default: SocketAddr, issues: &mut Issues) -> Option<SocketAddr> {
        let Some(s) = self.opt_str(issues)? else {
            return Some(default);
        };
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(
                    &self.path,
                    "expected an IP address and port, e.g. 0.0.0.0:7070 or [::1]:7070 (host names are not resolved)",
                );
                None
            }
        }
    }

    /// A list of strings, each checked by `check` (which returns an error message).
    pub(crate) fn opt_str_list(
        &self,
        check: impl Fn(&str) -> Option<&'static str>,
        issues: &mut Issues,
    ) -> Option<Option<Vec<String>>> {
        let items = match self.value {
            None => return Some(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                issues.push(
                    &self.path,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = self.path.index(i);
            match item {
                Value::String(s) => match check(s) {
                    None => out.push(s.clone()),
                    Some(msg) => {
                        ok = false;
                        issues.push(&path, msg);
                    }
                },
                other => {
                    ok = false;
                    expected_string(&path, other, issues);
                }
            }
        }
        ok.then_some(Some(out))
    }

    /// A string or a list of strings, each string split where `sep` holds; empty parts
    /// are dropped and duplicates removed (first occurrence kept). Each part is checked by
    /// `check`. `Some(None)` when absent.
    pub(crate) fn opt_split_list(
        &self,
        sep: impl Fn(char) -> bool,
        check: impl Fn(&str) -> Option<&'static str>,
        issues: &mut Issues,
    ) -> Option<Option<Vec<String>>> {
        let mut pieces: Vec<(KeyPath, &str)> = Vec::new();
        match self.value {
            None => return Some(None),
            Some(Value::String(s)) => pieces.push((self.path.clone(), s)),
            Some(Value::Array(items)) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => pieces.push((self.path.index(i), s)),
                        other => {
                            ok = false;
                            expected_string(&self.path.index(i), other, issues);
                        }
                    }
                }
                if !ok {
                    return None;
                }
            }
            Some(other) => {
                issues.push(
                    &self.path,
                    format!(
                        "expected a string or a list of strings, found {}",
                        kind(other)
                    ),
                );
                return None;
            }
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (path, piece) in pieces {
            for part in piece.split(&sep).filter(|p| !p.is_empty()) {
                if let Some(msg) = check(part) {
                    ok = false;
                    issues.push(&path, msg);
                } else if !out.iter().any(|o| o == part) {
                    out.push(part.to_owned());
                }
            }
        }
        ok.then_some(Some(out))
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` or bare seconds (`30`). Overflow gives `None`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if !is_digits(digits) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => None,
    }
}

/// JavaScript's `\s` (ECMAScript WhiteSpace + LineTerminator), so `^\S+$` checks match
/// Backstage's exactly. Unicode `White_Space` (Rust's `char::is_whitespace`) differs only in
/// U+0085 (not JS whitespace) and U+FEFF (JS whitespace).
pub(crate) fn is_js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// Backstage's `^\S+$`.
pub(crate) fn is_js_non_space(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(is_js_space)
}
