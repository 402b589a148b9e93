//! The admin listener's operator endpoints (docs/dev-contract.md#admin-listener):
//! `GET /metrics` (Prometheus text), `GET /tester` (the exchange tester page, static HTML+JS
//! embedded in the binary), and the admin API behind `Authorization: Bearer <admin.token>`
//! (RFC 6750 §2.1): `GET /admin/info`, `POST /admin/exchange` and `POST /admin/revoke`
//! (evict a user's or a session's cached tokens by hand).
//!
//! The admin credential is compared in constant time over SHA-256 digests, before the request
//! body is read; the body is bounded by `server.maxBodyBytes` and `server.bodyReadTimeout`.
//! Without `admin.token` the admin API answers 404. Answers carry no token: the tester's report
//! redacts the subject token, the client secret and every token in Keycloak's body.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::AppState;
use super::body::read_body;
use super::error::{ApiError, ErrorCode};
use crate::digest::sha256;
use crate::inbound::{BearerHeader, parse_bearer};
use crate::metrics::{AuthKind, Snapshot};
use crate::tester::{Tester, TesterError};

const PAGE: &str = include_str!("../tester/page.html");
const SCRIPT: &str = include_str!("../tester/app.js");
/// Only our own script; no inline code, no framing, nothing sent elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /metrics`: the OpenMetrics text of this broker's registry.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let text = state.metrics.encode(Snapshot {
        user_cache_entries: state.service.user_cache().entry_count(),
        ready: state.idp.is_discovered() && state.verifier.jwks().is_loaded(),
        targets: state.config.targets.len(),
    });
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text)
}

/// `GET /tester`.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("cache-control", "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// `GET /tester/app.js`.
pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

/// Checks `Authorization: Bearer <admin.token>`.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(expected) = &state.config.admin.token else {
        return Err(ApiError::request(
            ErrorCode::NotFound,
            "the admin API is off: set admin.token",
        ));
    };
    let presented = match parse_bearer(req.headers().get("authorization").map(|v| v.as_bytes())) {
        BearerHeader::Token(t) => t,
        BearerHeader::Absent | BearerHeader::NotBearer => {
            state.metrics.auth_failure(AuthKind::AdminToken, "missing");
            return Err(ApiError::unauthenticated(
                "send the admin credential as Authorization: Bearer <admin.token>",
                None,
            ));
        }
    };
    let a = sha256(presented.as_bytes());
    let b = sha256(expected.expose_secret().as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        state.metrics.auth_failure(AuthKind::AdminToken, "unknown");
        Err(ApiError::unauthenticated(
            "the admin credential is not valid",
            Some(ErrorCode::InvalidToken),
        ))
    }
}

/// `GET /admin/info`: what the tester page offers.
pub async fn info(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let targets: Vec<_> = state
        .config
        .targets
        .iter()
        .map(|(name, t)| {
            json!({
                "name": name,
                "audience": t.audience,
                "fallback": match t.fallback {
                    crate::config::FallbackPolicy::ServiceAccount => "service_account",
                    crate::config::FallbackPolicy::Deny => "deny",
                },
            })
        })
        .collect();
    // Dev users exist only in builds with the `dev` feature; the production build lists none.
    #[cfg(feature = "dev")]
    let dev_users = crate::tester::dev_login::offered(&state.config);
    #[cfg(not(feature = "dev"))]
    let dev_users: Vec<serde_json::Value> = Vec::new();
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({
            "issuer": state.idp.issuer(),
            "client_id": state.idp.client_id(),
            "targets": targets,
            "dev_users": dev_users,
        })))
}

#[derive(Deserialize)]
struct ExchangeBody {
    target: String,
    #[serde(default)]
    subject_token: Option<String>,
    /// DEVELOPMENT ONLY: a dev user id from `/admin/info` instead of `subject_token`.
    #[serde(default)]
    dev_user: Option<String>,
}

/// `dev_user` of `/admin/exchange`: the dev user's token from the dev IdP (feature `dev`).
#[cfg(feature = "dev")]
async fn dev_login(state: &AppState, id: &str) -> Result<secrecy::SecretString, ApiError> {
    crate::tester::dev_login::login(&state.config, &state.idp, id)
        .await
        .map_err(ApiError::invalid_request)
}

/// `dev_user` of `/admin/exchange` in the production build: there are no dev users.
#[cfg(not(feature = "dev"))]
async fn dev_login(_: &AppState, _: &str) -> Result<secrecy::SecretString, ApiError> {
    Err(ApiError::invalid_request(
        "dev users are not part of this build (built without the `dev` feature)",
    ))
}

/// `POST /admin/exchange`: one exchange without the cache, explained.
pub async fn exchange(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The admin credential before the body: an unauthenticated caller does not get to hold
    // the connection while trickling a body (docs/security.md, "Slow bodies").
    authorize(&req, &state)?;
    let server = &state.config.server;
    let body = read_body(
        &mut payload,
        server.max_body_bytes,
        server.body_read_timeout,
    )
    .await?;
    // serde's messages may quote input (a token): never echo them.
    let body: ExchangeBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::invalid_request(
            "the body must be JSON {\"target\": \"...\", \"subject_token\": \"...\"}",
        )
    })?;
    let token = match (body.subject_token.as_deref().map(str::trim), &body.dev_user) {
        (Some(t), _) if !t.is_empty() => secrecy::SecretString::from(t.to_owned()),
        (_, Some(u)) => dev_login(&state, u).await?,
        _ => {
            return Err(ApiError::invalid_request(
                "missing subject_token (the user's Keycloak access token)",
            ));
        }
    };
    let t = Tester {
        config: &state.config,
        idp: &state.idp,
        verifier: &state.verifier,
        now: state.clock.now_unix(),
    };
    match t.run(&body.target, token.expose_secret()).await {
        Ok(report) => {
            state.metrics.tester_run(report.outcome);
            tracing::info!(
                target = %report.target,
                outcome = report.outcome,
                subject = %crate::digest::fingerprint(token.expose_secret()),
                "exchange tester run"
            );
            Ok(HttpResponse::Ok()
                .insert_header(("cache-control", "no-store"))
                .json(report))
        }
        Err(e @ TesterError::UnknownTarget(_)) => {
            Err(ApiError::request(ErrorCode::InvalidTarget, e.to_string()))
        }
        Err(e) => Err(ApiError::invalid_request(e.to_string())),
    }
}

#[derive(Deserialize)]
struct RevokeBody {
    sub: Option<String>,
    sid: Option<String>,
}

/// `POST /admin/revoke` with `{"sub": …}` and/or `{"sid": …}`: drops every cached token derived
/// from that user or that Keycloak session, as a back-channel logout does. It revokes nothing at
/// Keycloak: a token already handed out stays valid until its `exp`.
pub async fn revoke(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let server = &state.config.server;
    let body = read_body(
        &mut payload,
        server.max_body_bytes,
        server.body_read_timeout,
    )
    .await?;
    let body: RevokeBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::invalid_request("the body must be JSON {\"sub\": \"...\"} or {\"sid\": \"...\"}")
    })?;
    let non_empty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (sub, sid) = (non_empty(&body.sub), non_empty(&body.sid));
    if sub.is_none() && sid.is_none() {
        return Err(ApiError::invalid_request(
            "name a user (sub) or a session (sid)",
        ));
    }
    if let Some(sid) = &sid {
        state.service.evict_session(sid).await;
    }
    if let Some(sub) = &sub {
        state.service.evict_subject(sub).await;
    }
    tracing::info!(
        sub_fp = sub
            .as_deref()
            .map(crate::digest::fingerprint)
            .unwrap_or_default(),
        sid_fp = sid
            .as_deref()
            .map(crate::digest::fingerprint)
            .unwrap_or_default(),
        "admin revoke: cache entries evicted"
    );
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({ "evicted": { "sub": sub.is_some(), "sid": sid.is_some() } })))
}
