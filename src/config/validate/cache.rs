//! `cache`: size of the exchanged-token cache, its expiry safety margin, the negative cache,
//! the key mode (`token` | `session`), refresh ahead and the shared second-level cache in Redis
//! (`cache.shared`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use secrecy::{SecretBox, SecretString};
use url::Url;

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::{CacheConfig, CacheKeyMode, SharedCacheConfig, SharedCacheKey};
use crate::config::walk::Field;

pub(super) fn cache(field: &Field<'_>, issues: &mut Issues) -> Option<CacheConfig> {
    let obj = section(
        field,
        &[
            "maxEntries",
            "safetyMargin",
            "negativeTtl",
            "key",
            "refreshAhead",
            "shared",
        ],
        issues,
    )?;
    let max_entries = obj.field("maxEntries").uint_or(10_000, 1, issues);
    let safety_margin =
        obj.field("safetyMargin")
            .duration_or(Duration::from_secs(30), true, issues);
    // Zero turns the negative cache off.
    let negative_ttl = obj
        .field("negativeTtl")
        .duration_or(Duration::from_secs(5), true, issues);
    let key = obj.field("key").enum_or(
        CacheKeyMode::Token,
        &[
            ("token", CacheKeyMode::Token),
            ("session", CacheKeyMode::Session),
        ],
        issues,
    );
    let refresh_field = obj.field("refreshAhead");
    let refresh_ahead = refresh_field.opt_str(issues).and_then(|v| match v {
        None => Some(None),
        Some(s) => match s.trim().strip_suffix('%').map(|n| n.trim().parse::<u8>()) {
            Some(Ok(p)) if (1..=50).contains(&p) => Some(Some(p)),
            _ => {
                issues.push(
                    &refresh_field.path,
                    "must be a percentage from 1% to 50%, e.g. \"20%\"",
                );
                None
            }
        },
    });
    let shared_field = obj.field("shared");
    let shared = if shared_field.value.is_some() {
        Some(shared(&shared_field, issues)?)
    } else {
        None
    };
    Some(CacheConfig {
        key: key?,
        refresh_ahead_percent: refresh_ahead?,
        negative_ttl: negative_ttl?,
        max_entries: max_entries?,
        safety_margin: safety_margin?,
        shared,
    })
}

/// `cache.shared`. Messages never include a key or a password (only where and what is wrong).
fn shared(field: &Field<'_>, issues: &mut Issues) -> Option<SharedCacheConfig> {
    let obj = section(
        field,
        &[
            "url",
            "username",
            "password",
            "keyPrefix",
            "encryptionKeys",
            "timeout",
            "lockTtl",
            "lockWait",
        ],
        issues,
    )?;
    let url = redis_url(&obj.field("url"), issues);
    let username = obj.field("username").opt_str(issues).and_then(|u| match u {
        Some("") => {
            issues.push(&obj.field("username").path, "must not be empty");
            None
        }
        u => Some(u.map(str::to_owned)),
    });
    let password = obj
        .field("password")
        .opt_str(issues)
        .map(|p| p.map(|p| SecretString::from(p.to_owned())));
    let key_prefix = obj
        .field("keyPrefix")
        .opt_str(issues)
        .map(|p| p.unwrap_or("token-broker:").to_owned());
    let keys = encryption_keys(&obj.field("encryptionKeys"), issues);
    let timeout = obj
        .field("timeout")
        .duration_or(Duration::from_millis(250), false, issues);
    let lock_ttl = obj
        .field("lockTtl")
        .duration_or(Duration::from_secs(15), false, issues);
    let lock_wait = obj
        .field("lockWait")
        .duration_or(Duration::from_secs(15), true, issues);
    Some(SharedCacheConfig {
        url: url?,
        username: username?,
        password: password?,
        key_prefix: key_prefix?,
        encryption_keys: keys?,
        timeout: timeout?,
        lock_ttl: lock_ttl?,
        lock_wait: lock_wait?,
    })
}

fn redis_url(field: &Field<'_>, issues: &mut Issues) -> Option<Url> {
    let raw = field.req_str(issues)?;
    let problem = match Url::parse(raw) {
        Err(_) => Some("must be a redis:// or rediss:// URL, e.g. redis://redis:6379/0"),
        Ok(u) if !matches!(u.scheme(), "redis" | "rediss") => {
            Some("must use the redis or rediss (TLS) scheme")
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("must have a host"),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some(
            "must not contain a user name or password (use cache.shared.username and cache.shared.password)",
        ),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Some("must not have a query (?) or fragment (#)")
        }
        Ok(u) if db_of(&u).is_none() => {
            Some("the path must be empty or a database number, e.g. /0")
        }
        Ok(u) => return Some(u),
    };
    if let Some(p) = problem {
        issues.push(&field.path, p);
    }
    None
}

/// The database number of a Redis URL's path (`/`, empty = 0).
pub(crate) fn db_of(url: &Url) -> Option<u32> {
    match url.path().trim_start_matches('/') {
        "" => Some(0),
        s if s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 4 => s.parse().ok(),
        _ => None,
    }
}

fn encryption_keys(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<SharedCacheKey>> {
    let Some(items) = field.opt_items(issues)? else {
        issues.push(&field.path, "is required (at least one key)");
        return None;
    };
    if items.is_empty() {
        issues.push(&field.path, "must list at least one key");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(obj) = section(&item, &["id", "key"], issues) else {
            ok = false;
            continue;
        };
        let id_field = obj.field("id");
        let id = id_field.req_str(issues);
        let id = match id {
            Some(s)
                if (1..=32).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                if out.iter().any(|k: &SharedCacheKey| k.id == s) {
                    issues.push(&id_field.path, "is used by another key");
                    None
                } else {
                    Some(s.to_owned())
                }
            }
            Some(_) => {
                issues.push(
                    &id_field.path,
                    "must be 1 to 32 characters of A-Z a-z 0-9 . _ -",
                );
                None
            }
            None => None,
        };
        let key_field = obj.field("key");
        let key = key_field.req_str(issues).and_then(|s| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
            if decoded.is_none() {
                // Never echo the value: only what it must be.
                issues.push(
                    &key_field.path,
                    "must be 32 bytes in standard base64 (e.g. the output of `openssl rand -base64 32`)",
                );
            }
            decoded
        });
        match (id, key) {
            (Some(id), Some(key)) => out.push(SharedCacheKey {
                id,
                key: Arc::new(SecretBox::new(Box::new(key))),
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}
