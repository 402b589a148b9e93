//! The JWT authorization grant (RFC 7521/7523 `jwt-bearer`) as
//! docs/reference/keycloak-token-exchange.md §6
//! describes Keycloak's preview feature `jwt-authorization-grant`: a confidential client with
//! the "JWT Authorization Grant" capability redeems an assertion signed by a trusted identity
//! provider (issuer + JWKS URL, on the client's allowed-IdP list) for an access token of the
//! Keycloak user linked to the assertion's `sub` at that IdP.
//!
//! Every refusal is 400 `invalid_grant` with Keycloak 26.7.3's text verbatim (observed by
//! `scripts/conformance` against a real Keycloak, or read from its grant classes where a case
//! cannot be provoked from outside; `docs/dev-idp.md` lists them), except an invalid `scope`,
//! which is answered like every other grant (`invalid_scope` / `Invalid scopes: <scope>`,
//! §3.4 step 6, §8).
//!
//! The IdP's JWKS is fetched (through the cache of `idp_jwks.rs`) before the synchronous grant
//! runs: the grant holds the realm lock and must not await.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::common::{
    Form, Issuer, OAuthError, audiences, requested_scopes, scope_string, token_response,
};
use crate::claims::{TokenKind, TokenSpec, now_secs};
use crate::realm::{DevClient, RealmState, Subject};
use crate::state::Shared;

/// Keycloak's default "Max allowed assertion expiration" (§6). Despite its name it bounds the
/// assertion's *age*: with `iat`, refused once `iat` is more than this long ago (however far
/// ahead `exp` is); without `iat`, refused when `exp` is more than this far ahead (observed on
/// Keycloak 26.7.3).
pub const MAX_ASSERTION_EXPIRATION_SECS: u64 = 300;

/// The `jti` prefix of tokens from this grant, as Keycloak 26.7.3 mints them: transient
/// session (`tr`), regular token (`rt`), grant shortcut `ag` (authorization grant).
const JTI_PREFIX: &str = "trrtag";

/// The keys fetched for a request's assertion before the grant runs.
#[derive(Debug)]
pub(super) struct Prefetched {
    /// The JWKS URL they came from (the grant checks it is still the IdP's).
    jwks_url: String,
    keys: Result<Value, String>,
}

fn grant_error(description: impl Into<String>) -> OAuthError {
    OAuthError::bad_request("invalid_grant", description)
}

/// Header and claims of a compact JWS, without verifying anything.
fn decode_unverified(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
    };
    Some((decode(h)?, decode(p)?))
}

/// For a jwt-bearer request while the feature is on: the keys of the identity provider named
/// by the assertion's (unverified) `iss`. `None` when there is nothing to fetch; the grant then
/// reports what is wrong in its own check order.
pub(super) async fn prefetch_keys(idp: &Shared, form: &[(String, String)]) -> Option<Prefetched> {
    let form = Form(form);
    let assertion = form.first("assertion")?;
    let (header, claims) = decode_unverified(assertion)?;
    let iss = claims.get("iss").and_then(Value::as_str)?;
    let jwks_url = {
        let st = idp.state();
        if !st.jwt_authorization_grant_enabled {
            return None;
        }
        st.identity_provider_by_issuer(iss)?.jwks_url.clone()
    };
    let kid = header.get("kid").and_then(Value::as_str);
    let keys = idp.idp_jwks.get(&jwks_url, kid).await;
    Some(Prefetched { jwks_url, keys })
}

/// Verifies the assertion's signature with the IdP's keys (ES256 or RS256, by `kid` when the
/// header names one) and returns its claims. Claims are checked by the caller.
fn verify_signature(assertion: &str, header: &Value, jwks: &Value) -> Result<Value, OAuthError> {
    let invalid = || grant_error("Invalid signature");
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    let alg = match alg_name {
        "ES256" => Algorithm::ES256,
        "RS256" => Algorithm::RS256,
        _ => return Err(grant_error("Invalid signature algorithm")),
    };
    let kid = header.get("kid").and_then(Value::as_str);
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims = HashSet::new();
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for k in keys {
        if kid.is_some_and(|kid| k.get("kid").and_then(Value::as_str) != Some(kid)) {
            continue;
        }
        if k.get("alg")
            .and_then(Value::as_str)
            .is_some_and(|a| a != alg_name)
        {
            continue;
        }
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        // A key of another type (or a malformed one) is skipped, not fatal.
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<Value>(assertion, &key, &validation) {
            return Ok(data.claims);
        }
    }
    Err(invalid())
}

/// `aud` contains the realm issuer or the token endpoint URL (§6).
fn audience_ok(claims: &Value, issuer: &str) -> bool {
    let token_endpoint = format!("{issuer}/protocol/openid-connect/token");
    let ok = |a: &Value| {
        a.as_str()
            .is_some_and(|a| a == issuer || a == token_endpoint)
    };
    match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(ok),
        Some(a) => ok(a),
        None => false,
    }
}

/// The grant (§6), after the common pipeline of §2.
pub(super) fn jwt_bearer_grant(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    client: &DevClient,
    form: &Form<'_>,
    prefetched: Option<&Prefetched>,
) -> Result<serde_json::Value, OAuthError> {
    // Keycloak: `invalid_grant` without a space after the colon.
    let Some(assertion) = form.first("assertion") else {
        return Err(grant_error("Missing parameter:assertion"));
    };
    // §6: confidential client authentication, and the client's capability.
    if client.is_public() {
        return Err(grant_error(
            "Public client not allowed to use authorization grant",
        ));
    }
    if !client.jwt_authorization_grant_enabled {
        return Err(grant_error(
            "JWT Authorization Grant is not supported for the requested client",
        ));
    }
    let (header, unverified) = decode_unverified(assertion)
        .ok_or_else(|| grant_error("The provided assertion is not a valid JWT"))?;
    // §6: "The assertion must be signed".
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("none");
    if alg.eq_ignore_ascii_case("none") || assertion.ends_with('.') {
        return Err(grant_error("Invalid signature algorithm"));
    }
    // §6: `iss` = the IdP issuer; `sub` = the user id at the IdP.
    let Some(iss) = unverified.get("iss").and_then(Value::as_str) else {
        return Err(grant_error("Missing claim: iss"));
    };
    if unverified.get("sub").and_then(Value::as_str).is_none() {
        return Err(grant_error("Missing claim: sub"));
    }
    // §6: trust comes from an identity provider with that issuer, its "JWT Authorization
    // Grant" switch, and the client's allowed-IdP list.
    let provider = st
        .identity_provider_by_issuer(iss)
        .cloned()
        .ok_or_else(|| grant_error("No Identity Provider for provided issuer"))?;
    if !provider.jwt_authorization_grant_enabled {
        return Err(grant_error(
            "Identity Provider is not configured for JWT Authorization Grant",
        ));
    }
    if !client
        .jwt_authorization_grant_idps
        .contains(&provider.alias)
    {
        return Err(grant_error(
            "Identity Provider is not allowed for the client",
        ));
    }
    // Signature with the IdP's keys (fetched before the grant ran). Keys that could not be
    // fetched leave nothing to verify with: Keycloak then answers `Invalid signature` too.
    let keys = prefetched
        .filter(|p| p.jwks_url == provider.jwks_url)
        .and_then(|p| p.keys.as_ref().ok())
        .ok_or_else(|| grant_error("Invalid signature"))?;
    let claims = verify_signature(assertion, &header, keys)?;

    // §6: `exp` required; the token active (`exp` passed or `nbf` ahead are the same refusal);
    // no clock skew.
    let now = now_secs();
    let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
        return Err(grant_error("Token exp claim is required"));
    };
    let nbf_ahead = claims
        .get("nbf")
        .is_some_and(|nbf| nbf.as_u64().is_none_or(|nbf| nbf > now));
    if exp <= now || nbf_ahead {
        return Err(grant_error("Token is not active"));
    }
    // The maximum bounds the assertion's age (see MAX_ASSERTION_EXPIRATION_SECS).
    match claims.get("iat").and_then(Value::as_u64) {
        Some(iat) if iat > now => return Err(grant_error("Token was issued in the future")),
        Some(iat) if iat.saturating_add(MAX_ASSERTION_EXPIRATION_SECS) < now => {
            return Err(grant_error(
                "Token was issued too far in the past to be used now",
            ));
        }
        Some(_) => {}
        None if exp - now > MAX_ASSERTION_EXPIRATION_SECS => {
            return Err(grant_error(
                "Token expiration is too far in the future and iat claim not present in token",
            ));
        }
        None => {}
    }
    // §6: `aud` = the realm issuer or the token endpoint URL, one audience only.
    if matches!(claims.get("aud"), Some(Value::Array(list)) if list.len() > 1) {
        return Err(grant_error("Multiple audiences not allowed"));
    }
    if !audience_ok(&claims, issuer.issuer) {
        return Err(grant_error("Invalid token audience"));
    }
    // §6: `jti` required and single-use ("Allow assertion reuse" is off).
    let Some(jti) = claims.get("jti").and_then(Value::as_str) else {
        return Err(grant_error("Token jti claim is required"));
    };
    st.used_assertions.retain(|_, e| *e >= now);
    let id = (iss.to_owned(), jti.to_owned());
    if st.used_assertions.contains_key(&id) {
        return Err(grant_error("Token reuse detected"));
    }
    st.used_assertions.insert(id, exp);

    // §6: the Keycloak user linked to that IdP as `sub`; it must be enabled (the 26.5.3 CVE
    // fix: disabled users must not get tokens).
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let user = st
        .user_by_federated_identity(&provider.alias, sub)
        .cloned()
        .ok_or_else(|| grant_error("User not found"))?;
    if !user.enabled {
        return Err(grant_error("User is not enabled"));
    }
    let scopes = requested_scopes(client, form)?;

    // §6: transient session (no `sid`, no refresh token), an ID token for `openid` (observed
    // on Keycloak 26.7.3); `azp` = the client; `aud` as for any grant.
    let subject = Subject::User(user);
    let aud = audiences(client, &scopes.optional);
    let scope = scope_string(scopes.openid, &scopes.optional);
    let lifespan = issuer.lifespan_secs(client);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        azp: &client.client_id,
        aud: &aud,
        sid: None,
        auth_time: Some(now),
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: JTI_PREFIX,
        client_address: None,
        service_account_session: false,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    if scopes.openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    Ok(Value::Object(body))
}
