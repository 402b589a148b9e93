//! Key-set endpoints of the public listener:
//! - `GET /.backstage/auth/v1/jwks.json` and `GET /api/{pluginId}/.backstage/auth/v1/jwks.json`
//!   → 200 `{"keys":[]}`: the broker issues no plugin tokens, but older Backstage callers probe
//!   the target's key set before they send plugin tokens
//!   (docs/reference/backstage-tokens.md §8, §9 item 10);
//! - `GET /.well-known/jwks.json` → the public key of the broker's RFC 7523 assertion signer
//!   (RFC 7517), for Keycloak's identity provider (docs/reference/keycloak-token-exchange.md §6).

use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::{ApiError, ErrorCode};

fn keys(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=60"))
        .json(body)
}

pub async fn empty_plugin_jwks() -> HttpResponse {
    keys(serde_json::json!({"keys": []}))
}

pub async fn prefixed_plugin_jwks(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if path.as_str() == state.config.backstage.plugin_id {
        Ok(empty_plugin_jwks().await)
    } else {
        Err(ApiError::request(ErrorCode::NotFound, "no such endpoint"))
    }
}

pub async fn assertion_jwks(state: web::Data<AppState>) -> HttpResponse {
    let list = match &state.assertion {
        Some(s) => s.public_jwks(),
        None => Vec::new(),
    };
    keys(serde_json::json!({ "keys": list }))
}
