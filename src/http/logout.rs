//! `POST /v1/backchannel-logout`: the broker as the receiver of OpenID Connect Back-Channel
//! Logout 1.0 (the URL an admin sets as the broker client's "Backchannel logout URL" in
//! Keycloak). Thin: read the form (§2.5: `logout_token`), hand the token to
//! [`crate::broker::TokenService::backchannel_logout`] (verification per §2.6, then eviction of
//! the session's or the user's cache entries), answer 200, or 400 with an RFC 6749-style JSON
//! error (§2.8); both with `Cache-Control: no-store` (§2.8).
//!
//! No caller credential: the logout token is the credential, signed by the realm. The body is
//! bounded by `server.maxBodyBytes` and `server.bodyReadTimeout` as every body is.

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::body::read_body;
use super::error::ApiError;
use super::form;
use crate::digest::fingerprint;

pub async fn backchannel_logout(
    req: HttpRequest,
    mut payload: web::Payload,
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
            "the body must be application/x-www-form-urlencoded (OIDC Back-Channel Logout 1.0 §2.5)",
        ));
    }
    let server = &state.config.server;
    let body = read_body(
        &mut payload,
        server.max_body_bytes,
        server.body_read_timeout,
    )
    .await?;
    let form = form::parse(&body).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let Some(token) = form.non_empty("logout_token") else {
        return Err(ApiError::invalid_request("missing parameter: logout_token"));
    };
    match state.service.backchannel_logout(token).await {
        Ok(who) => {
            tracing::info!(
                sid_fp = who.sid.as_deref().map(fingerprint).unwrap_or_default(),
                sub_fp = who.sub.as_deref().map(fingerprint).unwrap_or_default(),
                scope = if who.sid.is_some() { "session" } else { "user" },
                "back-channel logout: cache entries evicted"
            );
            Ok(HttpResponse::Ok()
                .insert_header(("cache-control", "no-store"))
                .finish())
        }
        Err(e) => {
            tracing::warn!(reason = e.kind(), "back-channel logout token refused");
            Err(ApiError::invalid_request(e.to_string()))
        }
    }
}
