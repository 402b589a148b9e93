//! What every grant of the token endpoint shares: the OAuth error answer ([`OAuthError`]), the
//! parsed form ([`Form`]), token minting for the request's issuer ([`Issuer`]), the scope and
//! audience rules Keycloak applies to every grant (§3.4 step 6, §3.5, §8) and the base fields
//! of a successful token response (§3.6, §8).

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::claims::{self, TokenKind, TokenSpec};
use crate::realm::{
    BUILTIN_OPTIONAL_SCOPES, DEFAULT_ROLES_CLIENT, DEFAULT_SCOPES, DevClient, GenericMode,
};
use crate::state::Shared;

/// An OAuth error answer (RFC 6749 §5.2), turned into HTTP by the endpoint.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
    /// `WWW-Authenticate` challenge; such answers have no body (§2 step 5, non-Basic header).
    pub(crate) challenge: Option<String>,
}

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    pub(crate) fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    /// §3.4 step 2: every subject-token validation failure looks the same on the wire.
    pub(crate) fn invalid_token() -> Self {
        Self::bad_request("invalid_request", "Invalid token")
    }
}

/// The parsed form, duplicates kept.
pub(crate) struct Form<'a>(pub(crate) &'a [(String, String)]);

impl Form<'_> {
    pub(crate) fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// Signs tokens for the request's issuer.
pub(crate) struct Issuer<'a> {
    pub(crate) idp: &'a Shared,
    pub(crate) issuer: &'a str,
    /// The generic test mode, read under the realm lock by the pipeline.
    pub(crate) generic: Option<GenericMode>,
}

impl Issuer<'_> {
    pub(crate) fn lifespan_secs(&self, client: &DevClient) -> u64 {
        client
            .access_token_lifespan
            .unwrap_or(self.idp.realm_lifespan)
            .as_secs()
    }

    pub(crate) fn mint(&self, spec: &TokenSpec<'_>, kind: TokenKind) -> String {
        let claims = claims::build(spec, kind);
        if kind == TokenKind::Access {
            self.sign_access(&claims)
        } else {
            self.idp.keys.sign(&claims)
        }
    }

    /// Signs access-token claims: Keycloak's shape, or in the generic test mode without the
    /// `typ` claim and with the mode's JOSE header `typ`.
    pub(crate) fn sign_access(&self, claims: &serde_json::Value) -> String {
        match &self.generic {
            None => self.idp.keys.sign(claims),
            Some(g) => {
                let mut c = claims.clone();
                if let Some(o) = c.as_object_mut() {
                    o.remove("typ");
                }
                self.idp.keys.sign_typed(g.access_token_typ.as_deref(), &c)
            }
        }
    }
}

/// Scopes a request asks for, validated against the client (`TokenManager.isValidScope`):
/// each value must be `openid`, a default scope (`profile`, `email`), one of the client's
/// optional scopes or one of Keycloak's built-in optional scopes; otherwise 400 `invalid_scope` / `Invalid scopes: <param verbatim>`
/// (§3.4 step 6, §8).
pub(crate) struct RequestedScopes {
    pub(crate) openid: bool,
    /// Optional client scopes requested, in request order, without duplicates.
    pub(crate) optional: Vec<String>,
}

pub(crate) fn requested_scopes(
    client: &DevClient,
    form: &Form<'_>,
) -> Result<RequestedScopes, OAuthError> {
    let mut scopes = RequestedScopes {
        openid: false,
        optional: Vec::new(),
    };
    let Some(param) = form.first("scope") else {
        return Ok(scopes);
    };
    for s in param.split(' ').filter(|s| !s.is_empty()) {
        if s == "openid" {
            scopes.openid = true;
        } else if DEFAULT_SCOPES.contains(&s) {
            // Default scopes are always applied.
        } else if client.optional_scopes.contains_key(s) || BUILTIN_OPTIONAL_SCOPES.contains(&s) {
            if !scopes.optional.iter().any(|o| o == s) {
                scopes.optional.push(s.to_owned());
            }
        } else {
            return Err(OAuthError::bad_request(
                "invalid_scope",
                format!("Invalid scopes: {param}"),
            ));
        }
    }
    Ok(scopes)
}

/// The `scope` claim/response value: `openid` if requested, the default scopes, then the
/// optional scopes kept.
pub(crate) fn scope_string(openid: bool, optional: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if openid {
        parts.push("openid");
    }
    parts.extend(DEFAULT_SCOPES);
    parts.extend(optional.iter().map(String::as_str));
    parts.join(" ")
}

/// `aud` of a token issued to `client` for a user or service account: its Audience mappers,
/// the audiences of the requested optional scopes, and `account` from the realm's default
/// roles (audience-resolve), without duplicates (§3.5).
pub(crate) fn audiences(client: &DevClient, optional: &[String]) -> Vec<String> {
    let mut aud: Vec<String> = Vec::new();
    let extra = optional
        .iter()
        .filter_map(|s| client.optional_scopes.get(s))
        .flatten();
    for a in client.audience_mappers.iter().chain(extra) {
        if !aud.contains(a) {
            aud.push(a.clone());
        }
    }
    if !aud.iter().any(|a| a == DEFAULT_ROLES_CLIENT) {
        aud.push(DEFAULT_ROLES_CLIENT.to_owned());
    }
    aud
}

/// Base fields of a successful token response (§3.6, §8).
pub(crate) fn token_response(
    access_token: String,
    expires_in: u64,
    scope: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("access_token".into(), json!(access_token));
    m.insert("expires_in".into(), json!(expires_in));
    m.insert("refresh_expires_in".into(), json!(0));
    m.insert("token_type".into(), json!("Bearer"));
    m.insert("not-before-policy".into(), json!(0));
    m.insert("scope".into(), json!(scope));
    m
}

/// Compares secrets (client secrets, passwords) in constant time.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}
