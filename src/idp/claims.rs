//! Facts read from the claims of tokens Keycloak issues, decided once: whether `aud` names a
//! client, and whether a token is a service account's. The user-token check (`inbound`) and
//! the check of Keycloak's answers (`broker`) both use them.

/// Whether `aud` (a string or an array of strings, RFC 7519 §4.1.3) contains `wanted`.
pub fn aud_contains(aud: Option<&serde_json::Value>, wanted: &str) -> bool {
    match aud {
        Some(serde_json::Value::String(s)) => s == wanted,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Keycloak's marks of a service-account (client-credentials) token: the `client_id` claim of
/// the `service_account` client scope (`clientId` in older versions) or the `service-account-`
/// username prefix Keycloak gives service-account users (documented in docs/security.md).
pub fn is_service_account(
    client_id: Option<&serde_json::Value>,
    preferred_username: Option<&str>,
) -> bool {
    client_id.is_some_and(|v| !v.is_null())
        || preferred_username.is_some_and(|u| u.starts_with("service-account-"))
}
