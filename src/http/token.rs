//! `POST /v1/token`: the RFC 8693 token endpoint of the broker (thin: parse, authenticate,
//! call [`TokenService::issue`], shape the answer).
//!
//! Request: form-encoded per RFC 8693 §2.1 with `audience` = a target name; caller credential
//! in `Authorization: Bearer`; the user's Keycloak token in the configured header or
//! `subject_token`. The headers are authenticated before the body is read, and the body must
//! arrive within `server.bodyReadTimeout` (`http/body.rs`). Answer: RFC 8693 §2.2.1 JSON with
//! `X-Token-Broker-Identity` and `X-Token-Broker-Cache`; errors are RFC 6749 §5.2 JSON (see
//! `http/error.rs`).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, PRAGMA};
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Serialize;

use super::AppState;
use super::auth::{Authenticated, authenticate, with_form_token};
use super::body::read_body;
use super::error::{ApiError, ErrorCode, from_broker};
use super::form::{self, FormError};
use super::record;
use crate::audit;
use crate::broker::{CacheStatus, Identity, Issued, TokenRequest};
use crate::config::TokenType;
use crate::protocol::GRANT_TYPE_TOKEN_EXCHANGE;

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

fn form_error(e: FormError) -> ApiError {
    ApiError::invalid_request(e.to_string())
}

/// The handler: runs the request and writes its audit line (`audit.rs`), whatever the result.
pub async fn token(req: HttpRequest, mut payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let mut rec = audit::Record::default();
    let state = super::app_data::<AppState>(&req)?;
    // Boxed: actix moves the handler's future twice before polling it, and `handle`'s is
    // ~1.6 KB; boxed it is moved once (issue 16).
    let result = Box::pin(handle(&req, &mut payload, state, &mut rec)).await;
    match &result {
        Ok(r) => rec.status = r.status().as_u16(),
        Err(e) => {
            rec.status = e.status().as_u16();
            rec.error = e.code.as_str().to_owned();
            if rec.outcome.is_empty() {
                rec.outcome = "bad_request";
            }
        }
    }
    rec.emit();
    result
}

async fn handle(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    rec: &mut audit::Record,
) -> Result<HttpResponse, ApiError> {
    // The credentials in the headers first: without one, or with a wrong one, the answer does
    // not wait for the body (docs/security.md, "Slow bodies").
    let from_headers = authenticate(req, state, &mut rec.subject_fp).await?;
    record::principal(rec, &from_headers.principal, from_headers.user.as_ref());
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
    let server = &state.config.server;
    let body = read_body(payload, server.max_body_bytes, server.body_read_timeout).await?;
    let form = form::parse(&body).map_err(form_error)?;

    match form.non_empty("grant_type") {
        None => return Err(ApiError::invalid_request("missing parameter: grant_type")),
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(_) => {
            return Err(ApiError::request(
                ErrorCode::UnsupportedGrantType,
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
    rec.target = audit::clip(target, 64).to_owned();

    // RFC 8693 §2.1: subject_token_type is REQUIRED with subject_token. Checked here, reported
    // by `with_form_token` after the header's user token.
    let form_token = match form.non_empty("subject_token") {
        None => Ok(None),
        Some(t) => match form.non_empty("subject_token_type") {
            Some(TokenType::ACCESS_TOKEN_URN) => Ok(Some(t)),
            Some(_) => Err(ApiError::invalid_request(
                "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
            )),
            None => Err(ApiError::invalid_request(
                "missing parameter: subject_token_type",
            )),
        },
    };
    // Recorded again only when the form brought a token: the headers' record stands otherwise
    // (copying the names once per request, issue 16).
    let from_form = matches!(form_token, Ok(Some(_)));
    let Authenticated { principal, user } =
        with_form_token(req, state, from_headers, form_token, &mut rec.subject_fp).await?;
    if from_form {
        record::principal(rec, &principal, user.as_ref());
    }

    let result = record::traced_lookup(
        target,
        state.service.issue(TokenRequest {
            principal: &principal,
            target,
            scope: form.non_empty("scope"),
            requested_token_type: form.non_empty("requested_token_type"),
            user_token: user.as_ref(),
        }),
    )
    .await;
    record::issued(
        rec,
        &state.metrics,
        state.config.targets.contains_key(target),
        &result,
    );
    match result {
        Ok(issued) => Ok(answer(&issued, state.clock.now_unix())),
        Err(e) => Err(from_broker(
            &e,
            crate::idp::hints::hint_client(&state.config.keycloak),
        )),
    }
}

fn answer(issued: &Issued, now: u64) -> HttpResponse {
    let t = &issued.token;
    let fields = TokenAnswer {
        access_token: t.access_token.expose_secret(),
        issued_token_type: t.issued_token_type.urn(),
        token_type: &t.token_type,
        expires_in: t.expires_at.saturating_sub(now),
        scope: t.scope.as_deref(),
    };
    // Names and values made at compile time: building the answer's headers from strings
    // parsed and validated each of them on every request (issue 16).
    const IDENTITY: HeaderName = HeaderName::from_static(IDENTITY_HEADER);
    const CACHE: HeaderName = HeaderName::from_static(CACHE_HEADER);
    const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
    const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const USER: HeaderValue = HeaderValue::from_static("user");
    const SERVICE: HeaderValue = HeaderValue::from_static("service");
    const HIT: HeaderValue = HeaderValue::from_static("hit");
    const MISS: HeaderValue = HeaderValue::from_static("miss");
    const COALESCED: HeaderValue = HeaderValue::from_static("coalesced");
    const SHARED: HeaderValue = HeaderValue::from_static("shared");
    let mut r = HttpResponse::Ok();
    r.insert_header((CACHE_CONTROL, NO_STORE))
        .insert_header((PRAGMA, NO_CACHE))
        .insert_header((
            IDENTITY,
            match issued.identity {
                Identity::User => USER,
                Identity::Service => SERVICE,
            },
        ))
        .insert_header((
            CACHE,
            match issued.cache {
                CacheStatus::Hit => HIT,
                CacheStatus::Miss => MISS,
                CacheStatus::Coalesced => COALESCED,
                CacheStatus::Shared => SHARED,
            },
        ));
    match answer_json(&fields) {
        Some(body) => r.insert_header((CONTENT_TYPE, JSON)).body(body),
        // Unreachable for JWTs; an unusual token still gets a correct answer.
        None => r.json(fields),
    }
}

/// The RFC 8693 §2.2.1 answer written directly (the same bytes `serde_json` writes) when no
/// string in it needs JSON escaping — always the case for a JWT (base64url and dots) and the
/// fixed type names; `None` otherwise. serde_json's byte-by-byte escaping of the 1-2 KB token
/// was a twentieth of a cache hit's instructions (issue 16).
fn answer_json(a: &TokenAnswer<'_>) -> Option<Vec<u8>> {
    let plain = |s: &str| {
        s.bytes().fold(true, |ok, c| {
            ok & (0x20..0x7f).contains(&c) & (c != b'"') & (c != b'\\')
        })
    };
    let strings = [a.access_token, a.issued_token_type, a.token_type];
    if !strings.iter().all(|s| plain(s)) || !a.scope.is_none_or(plain) {
        return None;
    }
    let mut b = Vec::with_capacity(a.access_token.len() + 160);
    b.extend_from_slice(br#"{"access_token":""#);
    b.extend_from_slice(a.access_token.as_bytes());
    b.extend_from_slice(br#"","issued_token_type":""#);
    b.extend_from_slice(a.issued_token_type.as_bytes());
    b.extend_from_slice(br#"","token_type":""#);
    b.extend_from_slice(a.token_type.as_bytes());
    b.extend_from_slice(br#"","expires_in":"#);
    b.extend_from_slice(a.expires_in.to_string().as_bytes());
    if let Some(scope) = a.scope {
        b.extend_from_slice(br#","scope":""#);
        b.extend_from_slice(scope.as_bytes());
        b.push(b'"');
    }
    b.push(b'}');
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_answer_is_what_serde_json_writes() {
        for scope in [None, Some("profile email")] {
            let a = TokenAnswer {
                access_token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_",
                issued_token_type: "urn:ietf:params:oauth:token-type:access_token",
                token_type: "Bearer",
                expires_in: 299,
                scope,
            };
            assert_eq!(answer_json(&a).unwrap(), serde_json::to_vec(&a).unwrap());
        }
        // Anything that would need escaping goes through serde_json.
        for odd in ["a\"b", "a\\b", "a\nb", "é"] {
            let a = TokenAnswer {
                access_token: odd,
                issued_token_type: "x",
                token_type: "Bearer",
                expires_in: 1,
                scope: None,
            };
            assert!(answer_json(&a).is_none(), "{odd:?}");
        }
    }
}
