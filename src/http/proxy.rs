//! `/v1/proxy/{target}/{path...}` (any method): forwards the call to the target's configured
//! upstream with the downstream token the broker obtains for the caller, streaming both ways.
//!
//! Order: method (`TRACE`, `CONNECT` → 405) → header-size limit → [`authenticate`] (exactly
//! as `/v1/token`) → the target must have an `upstream` (else 404) → path check
//! ([`crate::proxy::upstream_url`]) → token through
//! [`crate::broker::TokenService`] (cache, shared in-flight exchange, fallback; a streaming call
//! gets at least `proxy.minStreamTokenLifetime` left) → request body read ahead up to
//! `proxy.replayBufferBytes` ([`crate::proxy::body`]) → forward. A 401 from the upstream with a
//! replayable body drops the cached tokens, exchanges again and retries once (RFC 6750 §3.1);
//! idempotent replayable calls are retried after connection errors and 502/503/504 (RFC 9110
//! §9.2.2) with bounded exponential backoff. Failures of the upstream are RFC 6749 §5.2-style
//! JSON: 502 `upstream_unavailable`, 504 `upstream_timeout`, never with upstream internals.
//! Only allow-listed request headers reach the upstream ([`crate::proxy::headers`]). Every
//! call, refused, failed or forwarded, leaves one audit line (`audit.rs`, `proxy_request`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use futures_util::StreamExt;
use secrecy::ExposeSecret;

use super::AppState;
use super::auth::{Authenticated, authenticate};
use super::record;
use super::token::{CACHE_HEADER, IDENTITY_HEADER};
use crate::audit;
use crate::broker::{BrokerError, Issued, TokenRequest, TokenService};
use crate::config::{ProxyConfig, TokenHeader, UpstreamConfig};
use crate::error::{ApiError, from_broker};
use crate::outbound::TransportKind;
use crate::proxy::body::{Prebuffered, prebuffer};
use crate::proxy::{self as rules, BACKSTAGE_USER_HEADER};

/// The route prefix; the rest of the raw path is `<target>/<path...>`.
pub const PREFIX: &str = "/v1/proxy/";

/// The outbound side of proxy mode: one HTTP client for all upstreams, shared by all workers.
pub struct Forwarder {
    client: reqwest::Client,
    cfg: ProxyConfig,
}

impl Forwarder {
    /// No redirects are followed (a redirect would carry the user's token elsewhere, RFC 9700
    /// §4.11) and no proxy from the environment is used: the upstream is the configured one.
    /// No total timeout: streams may run long; silence is bounded by `proxy.idleTimeout`.
    pub fn new(cfg: &ProxyConfig) -> Result<Self, String> {
        let client = crate::outbound::client_builder(crate::outbound::ClientRules {
            connect_timeout: cfg.connect_timeout,
            timeout: None,
            no_env_proxy: true,
        })
        .build()
        .map_err(|e| format!("proxy HTTP client: {e}"))?;
        Ok(Forwarder {
            client,
            cfg: cfg.clone(),
        })
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such proxy target (targets need an upstream to be reachable here)",
    )
}

fn upstream_unavailable(target: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_unavailable",
        format!("the upstream of target '{target}' {what}"),
    )
}

fn upstream_timeout(target: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("the upstream of target '{target}' did not answer in time"),
    )
}

/// Last time the request made progress (a body chunk went out), for the idle timeout.
#[derive(Clone)]
struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

enum SendError {
    Timeout,
    Transport,
}

/// Sends and waits for the response head; times out only after `idle` without progress, so a
/// long upload that keeps moving is not cut.
async fn send_head(
    rb: reqwest::RequestBuilder,
    progress: &Progress,
    idle: Duration,
) -> Result<reqwest::Response, SendError> {
    progress.touch();
    let fut = rb.send();
    tokio::pin!(fut);
    loop {
        let last = progress.last();
        tokio::select! {
            r = &mut fut => {
                return r.map_err(|e| match TransportKind::of(&e) {
                    TransportKind::Timeout => SendError::Timeout,
                    _ => SendError::Transport,
                });
            }
            _ = tokio::time::sleep_until((last + idle).into()) => {
                if progress.last() == last {
                    return Err(SendError::Timeout);
                }
            }
        }
    }
}

/// The request body as it will be sent.
enum Outgoing {
    /// Kept whole: replayable.
    Full(Bytes),
    /// Streaming, sent once.
    Stream(Option<reqwest::Body>),
}

impl Outgoing {
    fn replayable(&self) -> bool {
        matches!(self, Outgoing::Full(_))
    }
    fn take(&mut self) -> Option<reqwest::Body> {
        match self {
            Outgoing::Full(b) if b.is_empty() => None,
            Outgoing::Full(b) => Some(reqwest::Body::from(b.clone())),
            Outgoing::Stream(s) => s.take(),
        }
    }
}

/// Forwards the unread part of the caller's body through a small bounded channel (actix's
/// payload is tied to its worker thread; reqwest wants a `Send` stream). Backpressure: at most
/// four chunks wait in the channel.
fn stream_body(head: Vec<Bytes>, mut rest: web::Payload, progress: Progress) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        for c in head {
            if tx.send(Ok(c)).await.is_err() {
                return;
            }
            progress.touch();
        }
        while let Some(c) = rest.next().await {
            let item = c.map_err(|_| std::io::Error::other("the caller's body could not be read"));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
            progress.touch();
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Splits the raw request path into target name and the raw rest.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix(PREFIX)?;
    Some(match tail.split_once('/') {
        Some((t, rest)) => (t, rest),
        None => (tail, ""),
    })
}

/// The caller's headers that go upstream (the allow-list of `proxy::headers` plus the
/// target's `forwardHeaders`), plus the token and `X-Backstage-User`.
fn upstream_headers(
    req: &HttpRequest,
    user_token_header: &str,
    upstream: &UpstreamConfig,
    token: &str,
    user_ref: Option<&str>,
) -> Result<reqwest::header::HeaderMap, ApiError> {
    use reqwest::header::{HeaderName as RName, HeaderValue as RValue};
    let headers = req.headers();
    let conn = rules::connection_named(headers.get_all("connection").map(|v| v.as_bytes()));
    let token_header = match &upstream.token_header {
        TokenHeader::Authorization => "authorization",
        TokenHeader::Custom(h) => h.as_str(),
    };
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers.iter() {
        if !rules::forward_request_header(
            name.as_str(),
            &conn,
            user_token_header,
            token_header,
            &upstream.forward_headers,
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            RName::from_bytes(name.as_str().as_bytes()),
            RValue::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    let value = match &upstream.token_header {
        TokenHeader::Authorization => format!("Bearer {token}"),
        TokenHeader::Custom(_) => token.to_owned(),
    };
    let mut value = RValue::from_str(&value).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "the downstream token is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    let name = RName::from_bytes(token_header.as_bytes()).map_err(|_| not_found())?;
    out.insert(name, value);
    if let Some(r) = user_ref.and_then(|r| RValue::from_str(r).ok()) {
        out.insert(RName::from_static(BACKSTAGE_USER_HEADER), r);
    }
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        // Kept for streamed bodies (some upstreams refuse chunked uploads); a kept body sets
        // its own length.
        out.insert(reqwest::header::CONTENT_LENGTH, RValue::from(len));
    }
    Ok(out)
}

/// The handler: runs the call and writes its audit line (`audit.rs`, event `proxy_request`),
/// whatever the result: refused calls (method, credentials, path, token) and failed ones
/// (upstream unreachable or silent) are audited like forwarded ones.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    fwd: web::Data<Forwarder>,
) -> HttpResponse {
    let mut rec = audit::Record {
        method: req.method().as_str().chars().take(16).collect(),
        ..Default::default()
    };
    let result = handle(&req, payload, &state, &fwd, &mut rec).await;
    let response = match result {
        Ok(r) => {
            rec.status = r.status().as_u16();
            r
        }
        Err(e) => {
            rec.status = e.status.as_u16();
            rec.error = e.error.clone();
            if rec.outcome.is_empty() || rec.outcome.starts_with("issued_") {
                rec.outcome = "bad_request";
            }
            let mut r = e.error_response();
            if e.status == StatusCode::METHOD_NOT_ALLOWED {
                // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
                r.headers_mut().insert(
                    actix_web::http::header::ALLOW,
                    HeaderValue::from_static(rules::ALLOWED_METHODS),
                );
            }
            r
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
    let cfg = &fwd.cfg;
    if rules::refused_method(req.method().as_str()) {
        rec.outcome = "method_refused";
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
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
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request",
            format!(
                "the request headers are larger than {} bytes",
                cfg.max_header_bytes
            ),
        ));
    }
    let Authenticated { principal, user } = authenticate(req, state, &mut rec.subject_fp).await?;
    record::principal(rec, &principal, user.as_ref());

    let (target_name, rest) = split_path(req.uri().path()).ok_or_else(not_found)?;
    rec.target = target_name.chars().take(64).collect();
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
    let client_id = &state.config.keycloak.client_id;
    let result = issue(token_req).await;
    record::issued(rec, &state.metrics, true, &result);
    let mut issued: Issued = result.map_err(|e| from_broker(&e, client_id))?;

    let user_ref = rules::user_entity_ref(&principal, user.as_ref());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid_request("unsupported method"))?;
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let progress = Progress::new();
    let mut body = match prebuffer(payload, cfg.replay_buffer_bytes, declared)
        .await
        .map_err(|_| ApiError::invalid_request("the request body could not be read"))?
    {
        Prebuffered::Complete(b) => Outgoing::Full(b),
        Prebuffered::Streaming { head, rest } => {
            Outgoing::Stream(Some(stream_body(head, rest, progress.clone())))
        }
    };
    let retry_ok = body.replayable() && rules::is_idempotent(method.as_str());

    let mut attempt = 0u32;
    let resp = loop {
        let mut headers = upstream_headers(
            req,
            &state.config.user_token.header,
            upstream,
            issued.token.access_token.expose_secret(),
            user_ref.as_deref(),
        )?;
        let mut rb = fwd.client.request(method.clone(), url.clone());
        if let Some(b) = body.take() {
            rb = rb.body(b);
        } else if body.replayable() {
            headers.remove(reqwest::header::CONTENT_LENGTH);
        }
        rb = rb.headers(headers);
        match send_head(rb, &progress, cfg.idle_timeout).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // `refused` drops only the refused token's entry, rate-limited per entry.
                if status == 401
                    && body.replayable()
                    && !rec.reauthenticated
                    && state.service.refused(&issued).await
                {
                    drop(resp);
                    rec.reauthenticated = true;
                    tracing::info!(
                        target = target_name,
                        token_fp = %issued.token.fingerprint,
                        "upstream answered 401: dropped the refused token, obtaining it again"
                    );
                    let result = issue(token_req).await;
                    record::issued(rec, &state.metrics, true, &result);
                    issued = result.map_err(|e| from_broker(&e, client_id))?;
                    continue;
                }
                if retry_ok && rules::is_retryable_status(status) && attempt < cfg.max_retries {
                    drop(resp);
                    attempt += 1;
                    rec.retries = attempt;
                    tokio::time::sleep(rules::backoff(attempt)).await;
                    continue;
                }
                break resp;
            }
            Err(SendError::Transport) if retry_ok && attempt < cfg.max_retries => {
                attempt += 1;
                rec.retries = attempt;
                tokio::time::sleep(rules::backoff(attempt)).await;
            }
            Err(SendError::Transport) => {
                tracing::warn!(target = target_name, "upstream unreachable");
                rec.outcome = "upstream_unavailable";
                return Err(upstream_unavailable(target_name, "could not be reached"));
            }
            Err(SendError::Timeout) => {
                tracing::warn!(target = target_name, "upstream timed out");
                rec.outcome = "upstream_timeout";
                return Err(upstream_timeout(target_name));
            }
        }
    };
    match respond(resp, &issued, &method, cfg, target_name) {
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
    match min_life {
        Some(min) => service.issue_with_min_lifetime(req, min).await,
        None => service.issue(req).await,
    }
}

fn respond(
    resp: reqwest::Response,
    issued: &Issued,
    method: &reqwest::Method,
    cfg: &ProxyConfig,
    target: &str,
) -> Result<HttpResponse, ApiError> {
    let status = StatusCode::from_u16(resp.status().as_u16())
        .map_err(|_| upstream_unavailable(target, "gave an invalid answer"))?;
    let conn = rules::connection_named(
        resp.headers()
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let size: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if size > cfg.max_header_bytes {
        return Err(upstream_unavailable(
            target,
            "answered with headers above proxy.maxHeaderBytes",
        ));
    }
    let mut b = HttpResponse::build(status);
    for (name, value) in resp.headers() {
        if !rules::forward_response_header(name.as_str(), &conn) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            b.append_header((n, v));
        }
    }
    b.insert_header((IDENTITY_HEADER, issued.identity.as_str()));
    b.insert_header((CACHE_HEADER, issued.cache.as_str()));
    if *method == reqwest::Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(b.finish());
    }
    let len = resp.content_length();
    let idle = cfg.idle_timeout;
    // Each chunk is passed on as soon as it arrives (text/event-stream events reach the caller
    // one by one); `idle` bounds the silence between chunks, then the stream is cut.
    let stream = futures_util::stream::unfold(Some(resp), move |state| async move {
        let mut resp = state?;
        match tokio::time::timeout(idle, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(resp))),
            Ok(Ok(None)) => None,
            Ok(Err(_)) => Some((
                Err(std::io::Error::other("the upstream's body failed")),
                None,
            )),
            Err(_) => Some((
                Err(std::io::Error::other("the upstream was silent too long")),
                None,
            )),
        }
    });
    Ok(match len {
        Some(n) => b.body(SizedStream::new(n, stream.boxed_local())),
        None => b.streaming(stream),
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
