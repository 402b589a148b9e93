//! Conversion of the substituted tree into the typed [`Config`], checking every key: one module
//! per top-level section, the rules they share in [`rules`], and here the top-level shape and
//! the rules that span sections.
//!
//! Each section is validated even when an earlier one failed, so a single run lists every
//! problem. Defaults live in the section modules and are documented on the fields of `model.rs`
//! and in `docs/configuration.md`.

mod admin;
mod assertion;
mod backstage;
mod cache;
mod keycloak;
mod logging;
mod proxy;
mod rules;
mod server;
mod targets;
mod user_token;

use serde_json::Value;

use super::error::{Issues, KeyPath};
use super::model::*;
use super::walk::Obj;

pub use assertion::MAX_ASSERTION_LIFETIME;
pub use backstage::BROKER_PLUGIN_ID;

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "keycloak",
    "userToken",
    "backend",
    "cache",
    "targets",
    "logging",
    "telemetry",
    "proxy",
    "backstage",
    "discovery",
    "assertion",
];

pub(crate) fn validate(root: &Value, issues: &mut Issues) -> Option<Config> {
    let top = Obj::new(Some(root), KeyPath::root(), Some(TOP_KEYS), issues)?;
    let server = server::server(&top.field("server"), issues);
    let admin = admin::admin(
        &top.field("admin"),
        server.as_ref().map(|s| s.listen),
        issues,
    );
    let keycloak = keycloak::keycloak(&top.field("keycloak"), issues);
    let profile = keycloak
        .as_ref()
        .map_or(IdpProfile::Keycloak, |k| k.profile);
    let user_token = user_token::user_token(&top.field("userToken"), profile, issues);
    let backend = backstage::backend(&top.field("backend"), issues);
    let backstage = backstage::backstage_section(&top.field("backstage"), issues);
    let endpoints = backstage::discovery(&top.field("discovery"), issues);
    let assertion_field = top.field("assertion");
    let assertion = assertion::assertion(&assertion_field, issues);
    let cache = cache::cache(&top.field("cache"), issues);
    let targets = targets::targets(&top.field("targets"), issues);
    let logging = logging::logging(&top.field("logging"), issues);
    let telemetry = logging::telemetry(&top.field("telemetry"), issues);
    let proxy = proxy::proxy(&top.field("proxy"), issues);
    if let (Some(t), Some(None)) = (&targets, &assertion)
        && let Some((name, _)) = t.iter().find(|(_, t)| {
            t.user_mapping
                .as_ref()
                .is_some_and(|m| m.kind == UserMappingKind::JwtAuthorizationGrant)
        })
    {
        issues.push(
            &assertion_field.path,
            format!("is required: target '{name}' uses userMapping jwt_authorization_grant"),
        );
        return None;
    }
    if let (Some(kc), Some(t)) = (&keycloak, &targets)
        && kc.profile == IdpProfile::Generic
        && let Some((name, _)) = t.iter().find(|(_, t)| {
            t.user_mapping
                .as_ref()
                .is_some_and(|m| m.kind == UserMappingKind::Impersonation)
        })
    {
        // Keycloak's legacy V1 `requested_subject`: no standard, no other IdP has it.
        issues.push(
            top.field("targets").path.key(name).key("userMapping"),
            "impersonation is Keycloak's legacy token exchange V1 and needs keycloak.profile: keycloak (use jwt_authorization_grant with another IdP)",
        );
        return None;
    }
    if let (Some(kc), Some(ut)) = (&keycloak, &user_token)
        && ut.allowed_clients.iter().any(|c| c == &kc.client_id)
    {
        // Every token the broker obtains has azp = its own client: listing it would let those
        // tokens back in as users' tokens (issue 9 §1).
        issues.push(
            top.field("userToken").path.key("allowedClients"),
            "must not list keycloak.clientId: tokens issued to the broker itself are never accepted as a user's token",
        );
        return None;
    }
    let (base_url, external_access) = backend?;
    Some(Config {
        server: server?,
        admin: admin?,
        keycloak: keycloak?,
        user_token: user_token?,
        external_access,
        backstage: {
            let (plugin_id, trusted_plugins) = backstage?;
            BackstageConfig {
                plugin_id,
                base_url,
                endpoints: endpoints?,
                trusted_plugins,
            }
        },
        assertion: assertion?,
        cache: cache?,
        targets: targets?,
        logging: logging?,
        proxy: proxy?,
        telemetry: telemetry?,
    })
}
