//! `/v1/proxy/{target}/{path...}` (any method): forwards the call to the target's configured
//! upstream with the downstream token the broker obtains for the caller, streaming both ways.
//!
//! Order: method (`TRACE`, `CONNECT` → 405) → header-size limit → [`authenticate`] (exactly
//! as `/v1/token`) → the target must have an `upstream` (else 404) → path check
//! ([`crate::proxy::upstream_url`]) → token through
//! [`crate::broker::TokenService`] (cache, shared in-flight exchange, fallback; a streaming call
//! gets at least `proxy.minStreamTokenLifetime` left) → request body read ahead up to
//! `proxy.replayBufferBytes` ([`crate::proxy::body`]) within `server.bodyReadTimeout` (else
//! 408) → forward. A 401 from the upstream with a replayable body drops the cached tokens,
//! exchanges again and retries once (RFC 6750 §3.1);
//! idempotent replayable calls are retried after connection errors and 502/503/504 (RFC 9110
//! §9.2.2) with bounded exponential backoff. Failures of the upstream are RFC 6749 §5.2-style
//! JSON: 502 `upstream_unavailable`, 504 `upstream_timeout`, never with upstream internals.
//! Only allow-listed request headers reach the upstream ([`crate::proxy::headers`]). Every
//! call, refused, failed or forwarded, leaves one audit line (`audit.rs`, `proxy_request`).
//!
//! This handler is thin: it extracts, authenticates, obtains tokens, records (audit, metrics
//! through [`super::record`]) and turns results into actix answers. The call itself — headers
//! sent, body streaming, retries and backoff, when a 401 may be met with a fresh token, the
//! idle timeout and the answer's headers — is [`crate::proxy::forward`], free of actix types.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use secrecy::ExposeSecret;
use tracing::Instrument;

use super::AppState;
use super::auth::{Authenticated, authenticate};
use super::error::{ApiError, Cause, ErrorCode, Failure, HttpRefusal, from_broker};
use super::record;
use super::token::{CACHE_HEADER, IDENTITY_HEADER};
use crate::audit;
use crate::broker::{BrokerError, Issued, TokenRequest, TokenService};
use crate::proxy::body::prebuffer;
use crate::proxy::forward::{
    Answer, Call, ForwardError, Outgoing, Progress, Sent, declared_length, upstream_headers,
};
use crate::proxy::{self as rules};

pub use crate::proxy::forward::Forwarder;

/// The route prefix; the rest of the raw path is `<target>/<path...>`.
pub const PREFIX: &str = "/v1/proxy/";

fn not_found() -> ApiError {
    ApiError::request(
        ErrorCode::NotFound,
        "no such proxy target (targets need an upstream to be reachable here)",
    )
}

fn upstream_unavailable(target: &str, what: &str) -> ApiError {
    ApiError::request(
        ErrorCode::UpstreamUnavailable,
        format!("the upstream of target '{target}' {what}"),
    )
}

fn upstream_timeout(target: &str) -> ApiError {
    ApiError::request(
        ErrorCode::UpstreamTimeout,
        format!("the upstream of target '{target}' did not answer in time"),
    )
}

/// The answer for a failed forward (RFC 6749 §5.2-style JSON, never upstream internals).
fn forward_error(e: ForwardError, target: &str) -> ApiError {
    match e {
        ForwardError::TokenNotHeaderValue => ApiError::new(
            ErrorCode::ServerError,
            Cause::Unavailable(Failure::Failed),
            "the downstream token is not a valid header value",
        ),
        ForwardError::TokenHeaderName => not_found(),
        ForwardError::Unreachable => upstream_unavailable(target, "could not be reached"),
        ForwardError::Timeout => upstream_timeout(target),
        ForwardError::HeadersTooLarge => {
            upstream_unavailable(target, "answered with headers above proxy.maxHeaderBytes")
        }
    }
}

/// Splits the raw request path into target name and the raw rest.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix(PREFIX)?;
    Some(match tail.split_once('/') {
        Some((t, rest)) => (t, rest),
        None => (tail, ""),
    })
}

/// The handler: runs the call and writes its audit line (`audit.rs`, event `proxy_request`),
/// whatever the result: refused calls (method, credentials, path, token) and failed ones
/// (upstream unreachable or silent) are audited like forwarded ones.
pub async fn proxy(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let mut rec = audit::Record {
        method: audit::clip(req.method().as_str(), 16).to_owned(),
        ..Default::default()
    };
    let (state, fwd) = match (
        super::app_data::<AppState>(&req),
        super::app_data::<Forwarder>(&req),
    ) {
        (Ok(s), Ok(f)) => (s, f),
        (Err(e), _) | (_, Err(e)) => return e.error_response(),
    };
    let result = handle(&req, payload, state, fwd, &mut rec).await;
    let response = match result {
        Ok(r) => {
            rec.status = r.status().as_u16();
            r
        }
        Err(e) => {
            rec.status = e.status().as_u16();
            rec.error = e.code.as_str().to_owned();
            if rec.outcome.is_empty() || rec.outcome.starts_with("issued_") {
                rec.outcome = "bad_request";
            }
            e.error_response()
        }
    };
    rec.emit_proxy();
    response
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    fwd: &Forwarder,
    rec: &mut audit::Record,
) -> Result<HttpResponse, ApiError> {
    let cfg = fwd.config();
    if rules::refused_method(req.method().as_str()) {
        rec.outcome = "method_refused";
        return Err(ApiError::method_not_allowed(
            rules::ALLOWED_METHODS,
            format!(
                "the proxy does not forward {} requests",
                req.method().as_str()
            ),
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.as_bytes().len())
        .sum();
    if header_bytes > cfg.max_header_bytes {
        // RFC 6585 §5.
        return Err(ApiError::http(
            HttpRefusal::HeadersTooLarge,
            format!(
                "the request headers are larger than {} bytes",
                cfg.max_header_bytes
            ),
        ));
    }
    let Authenticated { principal, user } = authenticate(req, state, &mut rec.subject_fp).await?;
    record::principal(rec, &principal, user.as_ref());

    let (target_name, rest) = split_path(req.uri().path()).ok_or_else(not_found)?;
    rec.target = audit::clip(target_name, 64).to_owned();
    let Some(upstream) = state
        .config
        .targets
        .get(target_name)
        .and_then(|t| t.upstream.as_ref())
    else {
        rec.outcome = "unknown_target";
        return Err(not_found());
    };
    let url = rules::upstream_url(
        &upstream.base,
        rest,
        req.uri().query(),
        upstream.allow_matrix_params,
    )
    .map_err(|e| {
        rec.outcome = "path_refused";
        ApiError::invalid_request(format!("the proxied path is refused: {e}"))
    })?;

    let streaming = upstream.streaming
        || rules::accepts_event_stream(req.headers().get_all("accept").map(|v| v.as_bytes()));
    let token_req = TokenRequest {
        principal: &principal,
        target: target_name,
        scope: None,
        requested_token_type: None,
        user_token: user.as_ref(),
    };
    let min_life = cfg.min_stream_token_lifetime;
    let issue = |r| obtain(&state.service, r, streaming.then_some(min_life));
    let client_id = crate::idp::hints::hint_client(&state.config.keycloak);
    let result = issue(token_req).await;
    record::issued(rec, &state.metrics, true, &result);
    let mut issued: Issued = result.map_err(|e| from_broker(&e, client_id))?;

    let user_ref = rules::user_entity_ref(&principal, user.as_ref());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid_request("unsupported method"))?;
    let headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let progress = Progress::default();
    // The read-ahead is bounded in time as every body the broker reads is
    // (`server.bodyReadTimeout`, 408, RFC 9110 §15.5.9): a client trickling a small body would
    // otherwise hold the request, its token and a connection slot for as long as it likes.
    let deadline = state.config.server.body_read_timeout;
    let body = tokio::time::timeout(
        deadline,
        prebuffer(payload, cfg.replay_buffer_bytes, declared_length(&headers)),
    )
    .await
    .map_err(|_| super::body::too_slow(deadline))?
    .map_err(|_| ApiError::invalid_request("the request body could not be read"))?;
    let body = Outgoing::new(body, &progress);
    let mut call = Call::new(fwd, method, url, body, progress);

    let sent = loop {
        let upstream_headers = upstream_headers(
            &headers,
            &state.config.user_token.header,
            upstream,
            issued.token.access_token.expose_secret(),
            user_ref.as_deref(),
        )
        .map_err(|e| forward_error(e, target_name))?;
        // The `upstream call` span (traces.rs); the upstream gets a `traceparent` naming it,
        // in place of the caller's (the broker's span is the upstream's parent now).
        let span = tracing::info_span!(
            target: crate::traces::SPAN_TARGET,
            "upstream call",
            otel.name = %format_args!("{} proxy upstream", call.method()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            broker.target = target_name,
            http.request.method = %call.method(),
            server.address = upstream.base.host_str().unwrap_or(""),
            http.response.status_code = tracing::field::Empty,
        );
        let mut upstream_headers = upstream_headers;
        for (name, value) in crate::traces::inject(&span) {
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
                upstream_headers.insert(name, v);
            }
        }
        let sent = call.send(&upstream_headers).instrument(span.clone()).await;
        match &sent {
            Sent::Unauthorized(r) | Sent::Answer(r) => {
                span.record("http.response.status_code", r.status().as_u16());
            }
            Sent::Failed(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        rec.retries = call.retries();
        match sent {
            // `refused` drops only the refused token's entry, rate-limited per entry.
            Sent::Unauthorized(resp) if state.service.refused(&issued).await => {
                drop(resp);
                call.reauthenticated();
                rec.reauthenticated = true;
                tracing::info!(
                    target = target_name,
                    token_fp = %issued.token.fingerprint,
                    "upstream answered 401: dropped the refused token, obtaining it again"
                );
                let result = issue(token_req).await;
                record::issued(rec, &state.metrics, true, &result);
                issued = result.map_err(|e| from_broker(&e, client_id))?;
            }
            Sent::Unauthorized(resp) | Sent::Answer(resp) => break Ok(resp),
            Sent::Failed(e) => break Err(e),
        }
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            match e {
                ForwardError::Timeout => {
                    tracing::warn!(target = target_name, "upstream timed out");
                    rec.outcome = "upstream_timeout";
                }
                _ => {
                    tracing::warn!(target = target_name, "upstream unreachable");
                    rec.outcome = "upstream_unavailable";
                }
            }
            return Err(forward_error(e, target_name));
        }
    };
    match respond(resp, &issued, call.method(), cfg, target_name) {
        Ok(r) => {
            rec.outcome = "proxied";
            Ok(r)
        }
        Err(e) => {
            rec.outcome = "upstream_unavailable";
            Err(e)
        }
    }
}

/// The token for one forwarded call: a streaming call needs `min_life` left.
async fn obtain(
    service: &TokenService,
    req: TokenRequest<'_>,
    min_life: Option<Duration>,
) -> Result<Issued, BrokerError> {
    let target = req.target;
    record::traced_lookup(target, async move {
        match min_life {
            Some(min) => service.issue_with_min_lifetime(req, min).await,
            None => service.issue(req).await,
        }
    })
    .await
}

/// The upstream's answer as an actix response, with the broker's identity and cache headers.
fn respond(
    resp: reqwest::Response,
    issued: &Issued,
    method: &reqwest::Method,
    cfg: &crate::config::ProxyConfig,
    target: &str,
) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(resp.status().as_u16())
        .map_err(|_| upstream_unavailable(target, "gave an invalid answer"))?;
    let answer = Answer::new(resp, method, cfg).map_err(|e| forward_error(e, target))?;
    let mut b = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            b.append_header((n, v));
        }
    }
    b.insert_header((IDENTITY_HEADER, issued.identity.as_str()));
    b.insert_header((CACHE_HEADER, issued.cache.as_str()));
    Ok(match answer.body {
        None => b.finish(),
        Some((Some(n), stream)) => b.body(SizedStream::new(n, stream)),
        Some((None, stream)) => b.streaming(stream),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_split() {
        assert_eq!(
            split_path("/v1/proxy/kagenti/a/b"),
            Some(("kagenti", "a/b"))
        );
        assert_eq!(split_path("/v1/proxy/kagenti"), Some(("kagenti", "")));
        assert_eq!(split_path("/v1/proxy/kagenti/"), Some(("kagenti", "")));
        assert_eq!(split_path("/v1/other"), None);
    }
}
