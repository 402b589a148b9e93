//! Likely fixes for Keycloak's error answers, keyed on the texts Keycloak itself sends
//! (its `error` and `error_description`). The HTTP edge adds them to error answers as `hint`;
//! the exchange tester and the caller check of the user's token show them too.

/// The broker's client id for [`keycloak_hint`] under the keycloak profile; `None` under the
/// generic one, whose IdP's errors carry no Keycloak advice (they pass through as they are).
pub fn hint_client(kc: &crate::config::KeycloakConfig) -> Option<&str> {
    (kc.profile == crate::config::IdpProfile::Keycloak).then_some(kc.client_id.as_str())
}

/// A short hint for a Keycloak error, keyed on Keycloak's own texts
/// (the descriptions Keycloak 26 sends from its token-exchange and client checks).
pub fn keycloak_hint(error: &str, description: Option<&str>, client_id: &str) -> Option<String> {
    let d = description.unwrap_or("");
    let hint = if d == "Client is not within the token audience" {
        format!(
            "the user's token must carry the broker's client '{client_id}' in aud: add an Audience mapper for '{client_id}' to the client the user logs in with"
        )
    } else if d.starts_with("Requested audience not available") {
        format!(
            "give client '{client_id}' an Audience mapper (or a client-role scope) for the target's audience, and check the user may receive it"
        )
    } else if d == "Audience not found" {
        "the target's audience is not a client of the realm: check targets.<name>.audience".into()
    } else if d == "Invalid token" {
        "Keycloak refused the user's token although it verified locally: the user's session may have ended or the user is disabled, or Keycloak is reached under another hostname than the token's iss".into()
    } else if d == "Standard token exchange is not enabled for the requested client" {
        format!(
            "turn on 'Standard token exchange' in the Capability config of client '{client_id}'"
        )
    } else if d == "Public client is not allowed to exchange token" {
        format!("client '{client_id}' must be confidential (Client authentication on)")
    } else if d == "Invalid client or Invalid client credentials" {
        "check keycloak.clientId, keycloak.clientSecret and keycloak.clientAuthMethod".into()
    } else if d == "Client not enabled to retrieve service account" {
        format!("turn on 'Service accounts roles' for client '{client_id}'")
    } else if error == "unsupported_grant_type" {
        "enable standard token exchange (feature token-exchange-standard:v2, Keycloak 26.2+)".into()
    } else if error == "invalid_scope" {
        format!("the scope must be an optional client scope of client '{client_id}'")
    } else if d == "requested_token_type unsupported" {
        "request an access token (targets.<name>.requestedTokenType)".into()
    } else {
        return None;
    };
    Some(hint)
}
