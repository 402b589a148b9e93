//! `POST /v1/token`: the RFC 8693 token endpoint of the broker (thin: parse, authenticate,
//! call [`TokenService::issue`], shape the answer).
//!
//! Request: form-encoded per RFC 8693 §2.1 with `audience` = a target name; caller credential
//! in `Authorization: Bearer`; the user's Keycloak token in the configured header or
//! `subject_token`. Answer: RFC 8693 §2.2.1 JSON with `X-Token-Broker-Identity` and
//! `X-Token-Broker-Cache`; errors are RFC 6749 §5.2 JSON (see `error.rs`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::AppState;
use super::form::{self, FormError};
use crate::broker::{BrokerError, Issued, TokenRequest};
use crate::config::TokenType;
use crate::error::{ApiError, from_broker};
use crate::idp::exchange::GRANT_TYPE_TOKEN_EXCHANGE;
use crate::inbound::oidc::{MAX_TOKEN_LEN, OidcError, VerifiedUserToken};
use crate::inbound::{AuthError, Principal};

pub const IDENTITY_HEADER: &str = "x-token-broker-identity";
pub const CACHE_HEADER: &str = "x-token-broker-cache";

#[derive(Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    issued_token_type: &'a str,
    token_type: &'a str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::invalid_request("the request body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn form_error(e: FormError) -> ApiError {
    ApiError::invalid_request(e.to_string())
}

/// Reads the user-token header: at most one, printable ASCII, bounded.
fn user_token_header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = req.headers().get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "header '{name}' is included more than once"
        )));
    }
    let v = first
        .to_str()
        .map_err(|_| ApiError::invalid_request(format!("header '{name}' is not printable ASCII")))?
        .trim();
    // oauth2-proxy sends the bare token; tolerate a "Bearer " prefix some proxies add.
    let v = match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v.get(7..).unwrap_or("").trim(),
        _ => v,
    };
    Ok(if v.is_empty() { None } else { Some(v) })
}

fn oidc_error_answer(e: &OidcError, caller_is_user: bool) -> ApiError {
    if let OidcError::KeysUnavailable(_) = e {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the IdP's signing keys could not be loaded; try again shortly",
        );
    }
    let description = format!("the user's token was rejected: {e}");
    if caller_is_user {
        ApiError::unauthenticated(description, Some("invalid_token"))
    } else {
        ApiError::invalid_request(description)
    }
}

pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(ApiError::invalid_request(
            "the body must be application/x-www-form-urlencoded (RFC 8693 §2.1)",
        ));
    }
    let body = read_body(payload, state.config.server.max_body_bytes).await?;
    let form = form::parse(&body).map_err(form_error)?;

    match form.non_empty("grant_type") {
        None => return Err(ApiError::invalid_request("missing parameter: grant_type")),
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("only {GRANT_TYPE_TOKEN_EXCHANGE} is supported"),
            ));
        }
    }
    for unsupported in ["actor_token", "actor_token_type", "resource"] {
        if form.non_empty(unsupported).is_some() {
            return Err(ApiError::invalid_request(format!(
                "parameter '{unsupported}' is not supported; name the target in 'audience'"
            )));
        }
    }
    let Some(target) = form.non_empty("audience") else {
        return Err(ApiError::invalid_request(
            "missing parameter: audience (the target name)",
        ));
    };

    // The user's token: header or RFC 8693 subject_token; both must agree if both are sent.
    let header_token = user_token_header(&req, &state.config.user_token.header)?;
    let form_token = form.non_empty("subject_token");
    if let Some(_t) = form_token {
        // RFC 8693 §2.1: subject_token_type is REQUIRED with subject_token.
        match form.non_empty("subject_token_type") {
            Some(TokenType::ACCESS_TOKEN_URN) => {}
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
                ));
            }
            None => {
                return Err(ApiError::invalid_request(
                    "missing parameter: subject_token_type",
                ));
            }
        }
    }
    let raw_user = match (header_token, form_token) {
        (Some(h), Some(f)) if h != f => {
            return Err(ApiError::invalid_request(format!(
                "subject_token and the '{}' header carry different tokens",
                state.config.user_token.header
            )));
        }
        (Some(t), _) | (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    if raw_user.is_some_and(|t| t.len() > MAX_TOKEN_LEN) {
        return Err(ApiError::invalid_request(format!(
            "the user's token is larger than {MAX_TOKEN_LEN} bytes"
        )));
    }
    // One principal per request (inbound::Authenticator).
    let auth = state
        .auth
        .authenticate(
            req.headers().get("authorization").map(|v| v.as_bytes()),
            raw_user,
        )
        .await
        .map_err(|e| match e {
            AuthError::Unauthenticated {
                description,
                token_error,
            } => ApiError::unauthenticated(description, token_error),
            AuthError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "access_denied", m),
            AuthError::UserToken {
                error,
                caller_is_user,
            } => oidc_error_answer(&error, caller_is_user),
        })?;
    let principal = auth.principal;
    let user = auth.user;

    let result = state
        .service
        .issue(TokenRequest {
            principal: &principal,
            target,
            scope: form.non_empty("scope"),
            requested_token_type: form.non_empty("requested_token_type"),
            user_token: user.as_ref(),
        })
        .await;
    audit(&principal, target, user.as_ref(), &result);
    match result {
        Ok(issued) => Ok(answer(&issued, state.clock.now_unix())),
        Err(e) => Err(from_broker(&e, &state.config.keycloak.client_id)),
    }
}

fn answer(issued: &Issued, now: u64) -> HttpResponse {
    let t = &issued.token;
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .insert_header(("pragma", "no-cache"))
        .insert_header((IDENTITY_HEADER, issued.identity.as_str()))
        .insert_header((CACHE_HEADER, issued.cache.as_str()))
        .json(TokenAnswer {
            access_token: t.access_token.expose_secret(),
            issued_token_type: t.issued_token_type.urn(),
            token_type: &t.token_type,
            expires_in: t.expires_at.saturating_sub(now),
            scope: t.scope.as_deref(),
        })
}

/// One structured line per token request; fingerprints only, never tokens.
fn audit(
    principal: &Principal,
    target: &str,
    user: Option<&VerifiedUserToken>,
    result: &Result<Issued, BrokerError>,
) {
    let target: String = target.chars().take(64).collect();
    match result {
        Ok(i) => tracing::info!(
            target: "token_broker::audit",
            caller = %principal.name,
            actor = principal.actor.as_deref().unwrap_or(""),
            user = user.map(|u| u.sub.as_str()).unwrap_or(""),
            subject_fp = user.map(|u| u.fingerprint.as_str()).unwrap_or(""),
            target = %target,
            identity = i.identity.as_str(),
            cache = i.cache.as_str(),
            fallback = i.fallback.map(|f| f.as_str()).unwrap_or(""),
            issued_fp = %i.token.fingerprint,
            outcome = "issued",
            "token request"
        ),
        Err(e) => tracing::info!(
            target: "token_broker::audit",
            caller = %principal.name,
            user = user.map(|u| u.sub.as_str()).unwrap_or(""),
            subject_fp = user.map(|u| u.fingerprint.as_str()).unwrap_or(""),
            target = %target,
            outcome = "refused",
            error = %e,
            "token request"
        ),
    }
}
