//! Reading the YAML document into a plain `serde_json::Value` tree.
//!
//! The later stages (substitution, overrides, validation) work on JSON values because the
//! `TOKEN_BROKER_CONFIG_*` overrides are JSON (Backstage's `APP_CONFIG_` convention) and one tree
//! type keeps every stage simple. YAML-only features are resolved here: merge keys (`<<`) are
//! applied, and tags are rejected because nothing in the schema uses them.

use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

use super::error::{Issues, KeyPath};

/// Parses `text` as exactly one YAML document. An empty document gives an empty mapping so that
/// validation can name each missing required key.
pub(crate) fn parse_yaml(text: &str, issues: &mut Issues) -> Option<Value> {
    let mut yaml: Yaml = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // libyaml's messages are fixed descriptions plus a line/column; the only value-ish
            // text they can contain is a duplicated key name, never a scalar value.
            issues.push(KeyPath::root(), format!("invalid YAML: {e}"));
            return None;
        }
    };
    if let Err(e) = yaml.apply_merge() {
        issues.push(KeyPath::root(), format!("invalid YAML merge key (<<): {e}"));
        return None;
    }
    if yaml.is_null() {
        return Some(Value::Object(Map::new()));
    }
    to_json(yaml, &KeyPath::root(), issues)
}

fn to_json(yaml: Yaml, path: &KeyPath, issues: &mut Issues) -> Option<Value> {
    match yaml {
        Yaml::Null => Some(Value::Null),
        Yaml::Bool(b) => Some(Value::Bool(b)),
        Yaml::Number(n) => {
            let json = if let Some(u) = n.as_u64() {
                Some(Number::from(u))
            } else if let Some(i) = n.as_i64() {
                Some(Number::from(i))
            } else {
                n.as_f64().and_then(Number::from_f64)
            };
            match json {
                Some(j) => Some(Value::Number(j)),
                None => {
                    issues.push(
                        path,
                        "numbers must be finite (.inf and .nan are not allowed)",
                    );
                    None
                }
            }
        }
        Yaml::String(s) => Some(Value::String(s)),
        Yaml::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.into_iter().enumerate() {
                match to_json(item, &path.index(i), issues) {
                    Some(v) => out.push(v),
                    None => ok = false,
                }
            }
            ok.then_some(Value::Array(out))
        }
        Yaml::Mapping(mapping) => {
            let mut out = Map::new();
            let mut ok = true;
            for (k, v) in mapping {
                let key = match k {
                    Yaml::String(s) => s,
                    // YAML allows `1:` or `true:` as keys; Backstage's loader (and JSON) only
                    // has string keys, so keep their text form.
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    _ => {
                        issues.push(path, "mapping keys must be plain scalars");
                        ok = false;
                        continue;
                    }
                };
                let child = path.key(&key);
                match to_json(v, &child, issues) {
                    Some(v) => {
                        out.insert(key, v);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(Value::Object(out))
        }
        Yaml::Tagged(_) => {
            issues.push(path, "YAML tags (!name) are not supported");
            None
        }
    }
}
