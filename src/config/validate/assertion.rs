//! `assertion`: the broker's RFC 7523 assertion signer, needed by targets whose `userMapping` is
//! `jwt_authorization_grant`.

use std::time::Duration;

use super::rules::{non_space, section};
use crate::config::error::Issues;
use crate::config::model::AssertionConfig;
use crate::config::walk::Field;

/// Keycloak's default "Max allowed assertion expiration" (docs/reference/keycloak-token-exchange.md §6).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// `assertion`: `{issuer, keyFile?, lifetime?}`; `None` when absent.
pub(super) fn assertion(field: &Field<'_>, issues: &mut Issues) -> Option<Option<AssertionConfig>> {
    if field.value.is_none() {
        return Some(None);
    }
    let obj = section(field, &["issuer", "keyFile", "lifetime"], issues)?;
    let issuer = non_space(&obj.field("issuer"), issues).map(str::to_owned);
    let kf = obj.field("keyFile");
    let key_file = kf.opt_str(issues).map(|k| k.map(std::path::PathBuf::from));
    let lf = obj.field("lifetime");
    let lifetime = lf
        .duration_or(Duration::from_secs(120), false, issues)
        .and_then(|d| {
            if d > MAX_ASSERTION_LIFETIME {
                issues.push(
                    &lf.path,
                    "must be at most 5m (Keycloak's default maximum assertion expiration)",
                );
                None
            } else {
                Some(d)
            }
        });
    Some(Some(AssertionConfig {
        issuer: issuer?,
        key_file: key_file?,
        lifetime: lifetime?,
    }))
}
