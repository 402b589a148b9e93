//! Token payloads as Keycloak 26.x shapes them (docs/reference/keycloak-token-exchange.md §4):
//! access tokens,
//! ID tokens and refresh tokens for users and service accounts, and the `aud` encoding rule
//! (string if one value, array if several, absent if none).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::realm::{DEFAULT_ACCOUNT_ROLES, DEFAULT_ROLES_CLIENT, SESSION_IDLE_SECS, Subject};

/// Unix seconds now. The dev IdP mints real tokens, so it reads the wall clock (relying
/// parties such as jsonwebtoken check `exp` against it too). The dev IdP's one clock read.
#[allow(clippy::disallowed_methods)]
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `aud` as Keycloak serialises it (§4): one value → string, several → array, none → absent.
pub fn aud_value(aud: &[String]) -> Option<Value> {
    match aud {
        [] => None,
        [one] => Some(Value::String(one.clone())),
        many => Some(Value::Array(
            many.iter().map(|a| Value::String(a.clone())).collect(),
        )),
    }
}

/// What kind of JWT to mint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Id,
    Refresh,
}

/// Everything needed to mint one token.
#[derive(Debug)]
pub struct TokenSpec<'a> {
    pub issuer: &'a str,
    pub realm: &'a str,
    pub subject: &'a Subject,
    /// The client the token is issued to (requester after an exchange).
    pub azp: &'a str,
    /// Audiences of an access token (ignored for ID and refresh tokens).
    pub aud: &'a [String],
    /// User session id; `None` for transient sessions (service accounts, §4).
    pub sid: Option<&'a str>,
    pub auth_time: Option<u64>,
    /// The `scope` claim.
    pub scope: &'a str,
    pub lifespan_secs: u64,
    /// `<session type><token type><grant>` of the `jti` (§4), e.g. `onrtro`.
    pub jti_prefix: &'a str,
    /// Caller IP, for the `clientHost`/`clientAddress` claims of service-account tokens.
    pub client_address: Option<String>,
    /// Whether to add the `client_id`/`clientHost`/`clientAddress` claims of Keycloak's
    /// `service_account` client scope (only in a client_credentials session).
    pub service_account_session: bool,
}

/// Builds the claims of a token per §4.
pub fn build(spec: &TokenSpec<'_>, kind: TokenKind) -> Value {
    let now = now_secs();
    let mut c = Map::new();
    let exp = match kind {
        TokenKind::Refresh => now.saturating_add(SESSION_IDLE_SECS),
        TokenKind::Access | TokenKind::Id => now.saturating_add(spec.lifespan_secs),
    };
    c.insert("exp".into(), json!(exp));
    c.insert("iat".into(), json!(now));
    if let Some(t) = spec.auth_time {
        c.insert("auth_time".into(), json!(t));
    }
    c.insert(
        "jti".into(),
        json!(format!("{}:{}", spec.jti_prefix, uuid::Uuid::new_v4())),
    );
    c.insert("iss".into(), json!(spec.issuer));
    let aud = match kind {
        TokenKind::Access => aud_value(spec.aud),
        // An ID token is for the client that asked for it; a refresh token is for the realm.
        TokenKind::Id => Some(json!(spec.azp)),
        TokenKind::Refresh => Some(json!(spec.issuer)),
    };
    if let Some(aud) = aud {
        c.insert("aud".into(), aud);
    }
    let (sub, preferred_username) = match spec.subject {
        Subject::User(u) => (u.id.clone(), u.username.clone()),
        Subject::ServiceAccount(client) => (
            client.service_account_id(),
            client.service_account_username(),
        ),
    };
    c.insert("sub".into(), json!(sub));
    let typ = match kind {
        TokenKind::Access => "Bearer",
        TokenKind::Id => "ID",
        TokenKind::Refresh => "Refresh",
    };
    c.insert("typ".into(), json!(typ));
    c.insert("azp".into(), json!(spec.azp));
    if let Some(sid) = spec.sid {
        c.insert("sid".into(), json!(sid));
    }
    if kind == TokenKind::Refresh {
        c.insert("scope".into(), json!(spec.scope));
        return Value::Object(c);
    }
    c.insert("acr".into(), json!("1"));
    if kind == TokenKind::Access {
        c.insert("allowed-origins".into(), json!(["/*"]));
        c.insert(
            "realm_access".into(),
            json!({ "roles": [
                "offline_access",
                "uma_authorization",
                format!("default-roles-{}", spec.realm)
            ] }),
        );
        // The default roles' `account` roles, listed while `account` is an audience (an
        // exchange's `audience` filter drops both: Keycloak then sends `{}`).
        let resource_access = if spec.aud.iter().any(|a| a == DEFAULT_ROLES_CLIENT) {
            json!({ DEFAULT_ROLES_CLIENT: { "roles": DEFAULT_ACCOUNT_ROLES } })
        } else {
            json!({})
        };
        c.insert("resource_access".into(), resource_access);
        c.insert("scope".into(), json!(spec.scope));
    }
    if spec.service_account_session
        && let Some(addr) = &spec.client_address
    {
        c.insert("clientHost".into(), json!(addr));
        c.insert("clientAddress".into(), json!(addr));
    }
    match spec.subject {
        Subject::User(u) => {
            c.insert("email_verified".into(), json!(true));
            c.insert("name".into(), json!(u.full_name()));
            c.insert("preferred_username".into(), json!(preferred_username));
            c.insert("given_name".into(), json!(u.first_name));
            c.insert("family_name".into(), json!(u.last_name));
            c.insert("email".into(), json!(u.email));
        }
        Subject::ServiceAccount(client) => {
            c.insert("email_verified".into(), json!(false));
            c.insert("preferred_username".into(), json!(preferred_username));
            if spec.service_account_session {
                c.insert("client_id".into(), json!(client.client_id));
            }
        }
    }
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_encoding() {
        assert_eq!(aud_value(&[]), None);
        assert_eq!(aud_value(&["a".into()]), Some(json!("a")));
        assert_eq!(
            aud_value(&["a".into(), "b".into()]),
            Some(json!(["a", "b"]))
        );
    }
}
