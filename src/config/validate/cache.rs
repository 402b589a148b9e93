//! `cache`: size of the exchanged-token cache, its expiry safety margin and the negative cache.

use std::time::Duration;

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::CacheConfig;
use crate::config::walk::Field;

pub(super) fn cache(field: &Field<'_>, issues: &mut Issues) -> Option<CacheConfig> {
    let obj = section(
        field,
        &["maxEntries", "safetyMargin", "negativeTtl"],
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
    Some(CacheConfig {
        negative_ttl: negative_ttl?,
        max_entries: max_entries?,
        safety_margin: safety_margin?,
    })
}
