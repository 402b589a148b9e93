//! Liveness and readiness on the admin listener (docs/dev-contract.md#admin-listener).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// 200 while the process serves requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 only when the configuration is loaded (it is, or the process would not run), the IdP's
/// discovery document is loaded and its JWKS holds at least one signing key, and shutdown has
/// not begun (readiness turns false first, so traffic moves away before the listeners stop).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let discovery = state.idp.is_discovered();
    let jwks = state.verifier.jwks().is_loaded();
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ready = discovery && jwks && !draining;
    let body = json!({
        "status": if draining { "draining" } else if ready { "ready" } else { "not_ready" },
        "checks": {"config": true, "idp_discovery": discovery, "jwks": jwks, "shutting_down": draining},
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
