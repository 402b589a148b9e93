//! `cache`: size of the exchanged-token cache, its expiry safety margin, the negative cache,
//! the key mode (`token` | `session`) and refresh ahead.

use std::time::Duration;

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::{CacheConfig, CacheKeyMode};
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
    Some(CacheConfig {
        key: key?,
        refresh_ahead_percent: refresh_ahead?,
        negative_ttl: negative_ttl?,
        max_entries: max_entries?,
        safety_margin: safety_margin?,
    })
}
