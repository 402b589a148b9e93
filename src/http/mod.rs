//! The HTTP surface: the public listener's routes, the admin listener's routes, and the state
//! they share. Handlers are thin; the logic lives in `broker`, `inbound` and `idp`.

pub mod admin;
pub mod auth;
pub mod body;
pub mod error;
pub mod form;
pub mod health;
pub mod jwks;
pub mod logout;
pub mod proxy;
pub mod record;
pub mod token;
pub mod trace;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::broker::TokenService;
use crate::broker::assertion::AssertionSigner;
use crate::clock::Clock;
use crate::config::Config;
use crate::idp::IdpClient;
use crate::inbound::Authenticator;
use crate::inbound::oidc::OidcVerifier;
use crate::metrics::Metrics;
use error::{ApiError, ErrorCode, HttpRefusal};

/// Everything a handler needs, shared by all workers.
pub struct AppState {
    pub config: Arc<Config>,
    pub service: Arc<TokenService>,
    /// Caller authentication: one principal per request.
    pub auth: Arc<Authenticator>,
    /// The RFC 7523 assertion signer, when a target uses `jwt_authorization_grant`.
    pub assertion: Option<Arc<AssertionSigner>>,
    pub verifier: Arc<OidcVerifier>,
    pub idp: Arc<IdpClient>,
    pub clock: Arc<dyn Clock>,
    /// This broker's metrics (the edge records requests, caches, fallbacks, refusals).
    pub metrics: Metrics,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The broker's state, borrowed from the request rather than extracted: the `web::Data`
/// extractor clones its `Arc`, an atomic write to a line every worker shares, on every
/// request (issue 16). Always registered by `app.rs`; the error only guards a wiring mistake.
fn app_data<T: 'static>(req: &actix_web::HttpRequest) -> Result<&web::Data<T>, ApiError> {
    req.app_data::<web::Data<T>>().ok_or_else(|| {
        ApiError::request(
            ErrorCode::ServerError,
            "the broker's state is not configured",
        )
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::request(ErrorCode::NotFound, "no such endpoint"))
}

/// The public listener's one middleware: outermost the unread-body rule
/// ([`body::close_unread_bodies`], it also covers the 431 below), then the header-size limit and
/// the request span ([`limit_header_bytes`]). One middleware rather than two: each `from_fn`
/// layer boxes the request's future once more (issue 16).
pub async fn public_edge(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<body::HoldBody>, actix_web::Error> {
    body::close_unread_bodies_around(req, |req| limit_header_bytes(req, next)).await
}

/// Refuses requests whose headers (names + values) exceed `server.maxHeaderBytes` with 431
/// (RFC 6585 §5), before any handler or credential check runs; then runs the request inside
/// its span (`trace::trace_request`).
pub async fn limit_header_bytes(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    use actix_web::ResponseError;
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(64 * 1024, |s| s.config.server.max_header_bytes);
    let size: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if size > limit {
        // An answer, not an error: `body::close_unread_bodies` must see it to close the
        // connection when the body is left unread.
        let answer = ApiError::http(
            HttpRefusal::HeadersTooLarge,
            format!("the request headers are larger than {limit} bytes"),
        )
        .error_response();
        return Ok(req.into_response(answer).map_into_right_body());
    }
    Ok(trace::trace_request(req, next).await?.map_into_left_body())
}

/// The answer to another method on a POST-only endpoint: 405 with `Allow: POST`.
async fn post_only() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed("POST", "use POST"))
}

/// Routes of the public listener.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/token")
            .route(web::post().to(token::token))
            .default_service(web::to(post_only)),
    )
    .service(
        web::resource("/v1/backchannel-logout")
            .route(web::post().to(logout::backchannel_logout))
            .default_service(web::to(post_only)),
    )
    // Any method; the handler reads the raw path itself (docs/proxy.md). A scope rather than
    // the pattern `/v1/proxy/{tail:.*}`: a scope matches its prefix by comparing strings, the
    // pattern ran a regex on every proxied call (~2 % of its CPU, issue 16). The scope also
    // takes `/v1/proxy` itself, which stays a 404 of the router as before.
    .route("/v1/proxy", web::route().to(not_found))
    .service(web::scope("/v1/proxy").default_service(web::route().to(proxy::proxy)))
    // The older-caller probe (docs/reference/backstage-tokens.md §8) and the assertion key set (RFC
    // 7517).
    .route(
        "/.backstage/auth/v1/jwks.json",
        web::get().to(jwks::empty_plugin_jwks),
    )
    .route(
        "/api/{plugin}/.backstage/auth/v1/jwks.json",
        web::get().to(jwks::prefixed_plugin_jwks),
    )
    .route(
        "/.well-known/jwks.json",
        web::get().to(jwks::assertion_jwks),
    )
    .default_service(web::to(not_found));
}

/// Routes of the admin listener.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(admin::metrics))
        .route("/tester", web::get().to(admin::page))
        .route("/tester/app.js", web::get().to(admin::script))
        .route("/admin/info", web::get().to(admin::info))
        .route("/admin/exchange", web::post().to(admin::exchange))
        .route("/admin/revoke", web::post().to(admin::revoke))
        .default_service(web::to(not_found));
}
