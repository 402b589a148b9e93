//! The request span of the public listener: one span per request, a child of the caller's
//! span when the request carries a W3C `traceparent` (Backstage's backend sends one), so a
//! trace runs from the plugin through the broker to Keycloak and the upstream (`traces.rs`).
//!
//! Attributes follow the OpenTelemetry HTTP conventions but name the route template, never the
//! raw path or query: a proxied path is the caller's to choose and could carry anything.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::traces::{self, SPAN_TARGET};

/// The route template of a public path (low cardinality, no caller data).
fn route(path: &str) -> &'static str {
    if path.starts_with(super::proxy::PREFIX) {
        "/v1/proxy/{target}/{path}"
    } else {
        match path {
            "/v1/token" => "/v1/token",
            "/v1/backchannel-logout" => "/v1/backchannel-logout",
            p if p.ends_with("/jwks.json") => "jwks",
            _ => "other",
        }
    }
}

/// Middleware: runs the rest of the request inside its span and records the status.
pub async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Bounded as in the audit log; no allocation, so a disabled span costs next to nothing.
    let m = req.method().as_str();
    let method = m.get(..16).unwrap_or(m);
    let route = route(req.path());
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let headers = req.headers();
    traces::continue_trace(&span, |name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    });
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates() {
        assert_eq!(
            route("/v1/proxy/kagenti/secret?x=1"),
            "/v1/proxy/{target}/{path}"
        );
        assert_eq!(route("/v1/token"), "/v1/token");
        assert_eq!(route("/anything/else"), "other");
    }
}
