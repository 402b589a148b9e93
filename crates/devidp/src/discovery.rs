//! The realm's metadata endpoints: OIDC discovery, the JWKS ("certs"), the issuer as Keycloak
//! computes it from the request, and the 404 answers for unknown realms and paths
//! (docs/reference/keycloak-token-exchange.md §1).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::protocol::{JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT};
use crate::state::Shared;

/// The issuer for this request: `http://{Host}/realms/{realm}`. Keycloak (without pinned
/// hostname options) derives it from the request's base URI, so a token minted through
/// `127.0.0.1:PORT` has a different `iss` than one expected through `localhost:PORT`
/// (§3.4 step 2, "Caution"). The raw `Host` header is used on purpose, not
/// `X-Forwarded-Host`: Keycloak ignores proxy headers unless `proxy-headers` is configured.
pub fn request_issuer(req: &HttpRequest, realm: &str) -> String {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        // No Host (HTTP/1.0): the address the request came in on.
        .unwrap_or_else(|| req.app_config().local_addr().to_string());
    format!("http://{host}/realms/{realm}")
}

/// The realm's issuer for this request: [`request_issuer`], or in the generic test mode
/// (`crate::realm::GenericMode`) the configured issuer, exactly.
pub fn realm_issuer(req: &HttpRequest, idp: &Shared) -> String {
    match &idp.state().generic {
        Some(g) => g.issuer.clone(),
        None => request_issuer(req, &idp.realm),
    }
}

/// 404 for an unknown realm, as Keycloak's realm resource answers.
pub fn realm_not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "Realm does not exist" }))
}

/// Sorted like Keycloak's list (§1): every registered grant factory plus `implicit`, sorted
/// alphabetically; the token-exchange URN only while the feature is on, and jwt-bearer only
/// while the JWT authorization grant feature is on (§1, §6).
fn grant_types_supported(token_exchange: bool, jwt_grant: bool) -> Vec<&'static str> {
    let mut grants = vec![
        "authorization_code",
        "client_credentials",
        "implicit",
        "password",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:uma-ticket",
        "urn:openid:params:grant-type:ciba",
    ];
    if token_exchange {
        grants.push(TOKEN_EXCHANGE_GRANT);
    }
    if jwt_grant {
        grants.push(JWT_BEARER_GRANT);
    }
    grants.sort_unstable();
    grants
}

/// The discovery document with Keycloak's field set (§1), built for the request's issuer:
/// naming `issuer` and the endpoints under `base` (the same in Keycloak; they differ in the
/// generic test mode).
fn discovery_document_at(issuer: &str, base: &str, token_exchange: bool, jwt_grant: bool) -> Value {
    let issuer_claim = issuer;
    let issuer = base;
    let oidc = format!("{issuer}/protocol/openid-connect");
    let algs = json!([
        "PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512",
        "PS256", "PS512", "RS512"
    ]);
    let auth_methods = json!([
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
        "tls_client_auth",
        "client_secret_jwt"
    ]);
    let mut doc = json!({
        "issuer": issuer_claim,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "frontchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "jwks_uri": format!("{oidc}/certs"),
        "check_session_iframe": format!("{oidc}/login-status-iframe.html"),
        "grant_types_supported": grant_types_supported(token_exchange, jwt_grant),
        "acr_values_supported": ["0", "1"],
        "response_types_supported": [
            "code", "none", "id_token", "token", "id_token token", "code id_token",
            "code token", "code id_token token"
        ],
        "subject_types_supported": ["public", "pairwise"],
        "prompt_values_supported": ["none", "login", "consent"],
        "id_token_signing_alg_values_supported": algs,
        "id_token_encryption_alg_values_supported": ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"],
        "id_token_encryption_enc_values_supported": [
            "A256GCM", "A192GCM", "A128GCM", "A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512"
        ],
        "userinfo_signing_alg_values_supported": algs,
        "request_object_signing_alg_values_supported": algs,
        "response_modes_supported": [
            "query", "fragment", "form_post", "query.jwt", "fragment.jwt", "form_post.jwt", "jwt"
        ],
        "registration_endpoint": format!("{issuer}/clients-registrations/openid-connect"),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
    });
    let rest = json!({
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "name", "given_name",
            "family_name", "preferred_username", "email", "email_verified", "acr", "azp", "sid"
        ],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": true,
        "scopes_supported": [
            "openid", "profile", "email", "address", "phone", "offline_access", "roles",
            "web-origins", "acr", "basic", "microprofile-jwt"
        ],
        "request_parameter_supported": true,
        "request_uri_parameter_supported": true,
        "require_request_uri_registration": true,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": true,
        "revocation_endpoint": format!("{oidc}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_authentication_endpoint": format!("{oidc}/ext/ciba/auth"),
        "require_pushed_authorization_requests": false,
        "pushed_authorization_request_endpoint": format!("{oidc}/ext/par/request"),
        "authorization_response_iss_parameter_supported": true
    });
    // Two literals: one is too deep for `json!`'s macro recursion limit.
    if let (Some(doc), Value::Object(rest)) = (doc.as_object_mut(), rest) {
        doc.extend(rest);
    }
    doc
}

/// `GET /realms/{realm}/.well-known/openid-configuration`
pub async fn openid_configuration(
    req: HttpRequest,
    path: web::Path<String>,
    idp: web::Data<Shared>,
) -> HttpResponse {
    let realm = path.into_inner();
    if realm != idp.realm {
        return realm_not_found();
    }
    let (te, jwt) = {
        let st = idp.state();
        (
            st.token_exchange_enabled,
            st.jwt_authorization_grant_enabled,
        )
    };
    let base = request_issuer(&req, &realm);
    HttpResponse::Ok().json(discovery_document_at(
        &realm_issuer(&req, &idp),
        &base,
        te,
        jwt,
    ))
}

/// Any path outside `/realms/{realm}`: in the generic test mode, the discovery document at
/// `{issuer}/.well-known/openid-configuration` (OIDC Discovery §4: a terminating `/` of the
/// issuer is removed before the suffix is appended); otherwise an empty 404, exactly what the
/// server answered before the generic mode existed.
pub async fn outside_realm(req: HttpRequest, idp: web::Data<Shared>) -> HttpResponse {
    let generic = idp.state().generic.clone();
    if let Some(g) = generic
        && req.method() == actix_web::http::Method::GET
        && let Ok(url) = url::Url::parse(&g.issuer)
        && req.path()
            == format!(
                "{}/.well-known/openid-configuration",
                url.path().trim_end_matches('/')
            )
    {
        let (te, jwt) = {
            let st = idp.state();
            (
                st.token_exchange_enabled,
                st.jwt_authorization_grant_enabled,
            )
        };
        let base = request_issuer(&req, &idp.realm);
        return HttpResponse::Ok().json(discovery_document_at(&g.issuer, &base, te, jwt));
    }
    // What actix answers without a default service: an empty 404, as before this handler.
    HttpResponse::NotFound().finish()
}

/// `GET /realms/{realm}/protocol/openid-connect/certs`. Keycloak serves it with
/// `Cache-Control: no-cache` (issue #15216, §1).
pub async fn certs(path: web::Path<String>, idp: web::Data<Shared>) -> HttpResponse {
    if path.into_inner() != idp.realm {
        return realm_not_found();
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(idp.keys.jwks())
}

/// Anything else under `/realms/{realm}`: the realm 404, or the generic JAX-RS 404 Keycloak
/// gives for a path it does not serve (userinfo, introspection, … are advertised but not
/// emulated; see docs/dev-idp.md).
pub async fn not_found(req: HttpRequest, idp: web::Data<Shared>) -> HttpResponse {
    if req.match_info().get("realm") != Some(idp.realm.as_str()) {
        return realm_not_found();
    }
    HttpResponse::NotFound().json(json!({
        "error": "Unable to find matching target resource method",
        "error_description": "For more on this error consult the server log."
    }))
}
