//! The Backstage-facing top-level keys: `backstage` (`pluginId`, `trustedPlugins`), `backend`
//! (`baseUrl`, and `auth` in [`external_access`]) and `discovery.endpoints`. Shapes follow
//! Backstage's app-config exactly where Backstage has the key (docs/reference/backstage-tokens.md),
//! so an admin can paste their block.

mod external_access;

use serde_json::Value;
use url::Url;

use super::rules::{UrlRule, http_url, section};
use crate::config::backstage::{MAX_PLUGIN_ID_LEN, is_plugin_id, substitute};
use crate::config::error::Issues;
use crate::config::model::*;
use crate::config::walk::{Field, kind};

/// The Backstage plugin id of the broker itself: `accessRestrictions` entries for this plugin
/// decide which targets a restricted static caller may use (see docs/configuration.md).
pub const BROKER_PLUGIN_ID: &str = "token-broker";

/// A `trustedPlugins` entry: a plugin id in which `*` stands for any run of characters.
fn is_plugin_pattern(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PLUGIN_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*')
}

/// `backstage`: `{pluginId, trustedPlugins}`.
pub(super) fn backstage_section(
    field: &Field<'_>,
    issues: &mut Issues,
) -> Option<(String, Option<Vec<String>>)> {
    let obj = section(field, &["pluginId", "trustedPlugins"], issues)?;
    let f = obj.field("pluginId");
    let plugin_id = match f.opt_str(issues) {
        None => None,
        Some(None) => Some(BROKER_PLUGIN_ID.to_owned()),
        Some(Some(p)) if is_plugin_id(p) => Some(p.to_owned()),
        Some(Some(_)) => {
            issues.push(
                &f.path,
                "must be a Backstage plugin id: ^[a-z0-9_-]+$, at most 64 characters",
            );
            None
        }
    };
    let tf = obj.field("trustedPlugins");
    let trusted = tf
        .opt_str_list(
            |p| {
                (!is_plugin_pattern(p)).then_some(
                    "must be a plugin id or a pattern with * (letters, digits, _, -, *), \
                     at most 64 characters",
                )
            },
            issues,
        )
        .and_then(|list| match list {
            Some(l) if l.is_empty() => {
                // Like allowedCallers: an empty list would silently refuse every plugin token.
                issues.push(
                    &tf.path,
                    "must not be empty (omit it to try every plugin id Backstage admits)",
                );
                None
            }
            other => Some(other),
        });
    Some((plugin_id?, trusted?))
}

pub(super) type BackendParts = (Option<Url>, Vec<ExternalAccessEntry>);

/// `backend`: `baseUrl` and `auth`.
pub(super) fn backend(field: &Field<'_>, issues: &mut Issues) -> Option<BackendParts> {
    let backend = section(field, &["auth", "baseUrl"], issues)?;
    let base_url = base_url(&backend.field("baseUrl"), issues);
    let external_access = external_access::auth(&backend.field("auth"), issues)?;
    Some((base_url?, external_access))
}

/// `backend.baseUrl`.
fn base_url(field: &Field<'_>, issues: &mut Issues) -> Option<Option<Url>> {
    match field.opt_str(issues)? {
        None => Some(None),
        Some(raw) => {
            let u = http_url(field, raw.trim_end_matches('/'), UrlRule::Backstage, issues)?;
            Some(Some(u))
        }
    }
}

/// `discovery`: `{endpoints: [{target: string | {internal, external}, plugins: [...]}]}`.
pub(super) fn discovery(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<DiscoveryEndpoint>> {
    let obj = section(field, &["endpoints"], issues)?;
    let items = obj
        .field("endpoints")
        .opt_items(issues)?
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut ok = true;
    for f in &items {
        match endpoint(f, issues) {
            Some(e) => out.push(e),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn endpoint(field: &Field<'_>, issues: &mut Issues) -> Option<DiscoveryEndpoint> {
    let obj = section(field, &["target", "plugins"], issues)?;
    let tf = obj.field("target");
    let target = match tf.value {
        Some(Value::String(s)) => Some((tf.path.clone(), s.as_str())),
        Some(Value::Object(_)) => {
            let t = section(&tf, &["internal", "external"], issues)?;
            let internal = t.field("internal");
            internal.req_str(issues).map(|s| (internal.path.clone(), s))
        }
        None => {
            issues.push(&tf.path, "is required");
            None
        }
        Some(other) => {
            issues.push(
                &tf.path,
                format!("expected a string or a mapping, found {}", kind(other)),
            );
            None
        }
    };
    let target = target.and_then(|(path, t)| {
        // Check the template with a sample plugin id substituted.
        let sample = substitute(t, "catalog");
        let f = Field { value: None, path };
        if t.starts_with("http+srv://") {
            issues.push(
                &f.path,
                "http+srv:// discovery is not supported; use http or https",
            );
            return None;
        }
        http_url(&f, &sample, UrlRule::Backstage, issues)
            .map(|_| t.trim_end_matches('/').to_owned())
    });
    let pf = obj.field("plugins");
    let plugins = pf
        .opt_str_list(
            |p| (p != "*" && !is_plugin_id(p)).then_some("must be a plugin id or *"),
            issues,
        )
        .and_then(|p| match p {
            Some(p) if !p.is_empty() => Some(p),
            _ => {
                issues.push(&pf.path, "is required: a non-empty list of plugin ids or *");
                None
            }
        });
    Some(DiscoveryEndpoint {
        target: target?,
        plugins: plugins?,
    })
}
