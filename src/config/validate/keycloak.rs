//! `keycloak`: the IdP section (Keycloak or, with `profile: generic`, any RFC 8693 server): the
//! issuer, the dialect, the broker's own client and the limits of every call to the IdP
//! (timeouts, JWKS refresh floor, concurrency bound, retries).

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::rules::{UrlRule, http_url, section};
use crate::config::error::Issues;
use crate::config::model::{ClientAuthMethod, IdpProfile, KeycloakConfig};
use crate::config::walk::Field;

pub(super) fn keycloak(field: &Field<'_>, issues: &mut Issues) -> Option<KeycloakConfig> {
    let obj = section(
        field,
        &[
            "issuer",
            "clientId",
            "clientSecret",
            "clientAuthMethod",
            "connectTimeout",
            "timeout",
            "jwksMinRefreshInterval",
            "maxConcurrentRequests",
            "retries",
            "profile",
        ],
        issues,
    )?;
    let issuer = issuer(&obj.field("issuer"), issues);
    let profile = obj.field("profile").enum_or(
        IdpProfile::Keycloak,
        &[
            ("keycloak", IdpProfile::Keycloak),
            ("generic", IdpProfile::Generic),
        ],
        issues,
    );
    let client_id = vschar_string(&obj.field("clientId"), "A.1", issues).map(str::to_owned);
    let client_secret = vschar_string(&obj.field("clientSecret"), "A.2", issues)
        .map(|s| SecretString::from(s.to_owned()));
    let client_auth_method = obj.field("clientAuthMethod").enum_or(
        ClientAuthMethod::ClientSecretBasic,
        &[
            ("client_secret_basic", ClientAuthMethod::ClientSecretBasic),
            ("client_secret_post", ClientAuthMethod::ClientSecretPost),
        ],
        issues,
    );
    let connect_timeout =
        obj.field("connectTimeout")
            .duration_or(Duration::from_secs(2), false, issues);
    let timeout = obj
        .field("timeout")
        .duration_or(Duration::from_secs(10), false, issues);
    // Zero would let every token with an unknown `kid` trigger a JWKS fetch.
    let jwks_min_refresh_interval =
        obj.field("jwksMinRefreshInterval")
            .duration_or(Duration::from_secs(10), false, issues);
    // At least one request must be able to reach Keycloak; beyond the bound, misses fail fast.
    let max_concurrent_requests = obj.field("maxConcurrentRequests").uint_or(64, 1, issues);
    // Retries of connection failures only; more than a few would pile requests up in an outage.
    let retries = obj.field("retries").uint_or(2, 0, issues);
    if let Some(r) = retries
        && r > 5
    {
        issues.push(&obj.field("retries").path, "must be at most 5");
    }
    Some(KeycloakConfig {
        max_concurrent_requests: usize::try_from(max_concurrent_requests?).unwrap_or(usize::MAX),
        retries: u32::try_from(retries?.min(5)).unwrap_or(5),
        issuer_id: issuer.as_ref()?.1.clone(),
        issuer: issuer?.0,
        profile: profile?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth_method: client_auth_method?,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        jwks_min_refresh_interval: jwks_min_refresh_interval?,
    })
}

/// Required, non-empty string of RFC 6749 Appendix A VSCHARs (%x20-7E), the syntax of
/// `client_id` (A.1) and `client_secret` (A.2).
fn vschar_string<'v>(field: &Field<'v>, section: &str, issues: &mut Issues) -> Option<&'v str> {
    let s = field.req_str(issues)?;
    if s.is_empty() {
        issues.push(&field.path, "must not be empty");
        None
    } else if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        issues.push(
            &field.path,
            format!("must be printable ASCII (RFC 6749 Appendix {section})"),
        );
        None
    } else {
        Some(s)
    }
}

/// The issuer is kept exactly as written: it must compare equal, byte for byte, to the discovery
/// document's `issuer` (OpenID Connect Discovery 1.0 §4.3) and to the `iss` of tokens, so
/// nothing is trimmed or added (`https://idp.example.com/` and `https://idp.example.com` are two
/// different issuers). It must be in the form `Url` serialises it to (lowercase scheme and host,
/// no default port, percent-encoded path), apart from the `/` `Url` adds to an empty path, so
/// that what the broker compares is what the IdP writes.
fn issuer(field: &Field<'_>, issues: &mut Issues) -> Option<(Url, String)> {
    let raw = field.req_str(issues)?;
    let path = &field.path;
    // OIDC Discovery §3: the issuer has no query or fragment component.
    let example = "https://keycloak.example.com/realms/NAME";
    let url = http_url(field, raw, UrlRule::Base { example }, issues)?;
    let normalised =
        url.as_str() == raw || (url.path() == "/" && format!("{raw}/") == url.as_str());
    if normalised {
        Some((url, raw.to_owned()))
    } else {
        issues.push(
            path,
            "must be in normalised form (lowercase scheme and host, no default port, percent-encoded path), because it is compared exactly with the token's iss",
        );
        None
    }
}
