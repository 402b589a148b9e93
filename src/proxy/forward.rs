//! The forwarder: one call to a target's upstream, free of actix types.
//!
//! It owns the upstream HTTP client ([`Forwarder`]), the headers that go upstream
//! ([`upstream_headers`]), the request body as sent ([`Outgoing`]: kept whole and replayable,
//! or streamed once), the attempts of one call ([`Call::send`]: retries of idempotent,
//! replayable calls after connection errors and 502/503/504 with bounded backoff, RFC 9110
//! §9.2.2; and when a 401 may be answered by a fresh token, RFC 6750 §3.1), the idle timeout,
//! and the answer passed back ([`Answer`]: filtered headers and a body stream cut after
//! `proxy.idleTimeout` of silence). Obtaining tokens, recording and the HTTP answer belong to
//! the handler (`http/proxy.rs`); failures come back typed ([`ForwardError`]), and the edge
//! decides their status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::body::Prebuffered;
use super::{
    BACKSTAGE_USER_HEADER, backoff, connection_named, forward_request_header,
    forward_response_header, is_idempotent, is_retryable_status,
};
use crate::config::{ProxyConfig, TokenHeader, UpstreamConfig};
use crate::outbound::TransportKind;

/// Why a forwarded call produced no answer to pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The downstream token cannot be sent as a header value.
    #[error("the downstream token is not a valid header value")]
    TokenNotHeaderValue,
    /// The target's token header is not a valid header name (configuration refuses it; kept
    /// fail-closed).
    #[error("the target's token header is not a valid header name")]
    TokenHeaderName,
    /// No connection to the upstream (after the retries the call allowed).
    #[error("could not be reached")]
    Unreachable,
    /// The upstream stayed silent longer than `proxy.idleTimeout`.
    #[error("did not answer in time")]
    Timeout,
    /// The upstream answered with headers above `proxy.maxHeaderBytes`.
    #[error("answered with headers above proxy.maxHeaderBytes")]
    HeadersTooLarge,
}

/// The outbound side of proxy mode: one HTTP client for all upstreams, one forwarder per
/// worker (`app.rs`): reqwest drives a pooled connection on the runtime that opened it, and
/// actix's workers are single-threaded runtimes, so a client shared by all workers made a
/// request on one worker wait for another worker's thread to poll the connection it borrowed
/// (a cross-thread hand-off in the proxy's latency tail, issue 16).
#[derive(Clone)]
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

    /// The proxy settings this forwarder was built with.
    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }
}

/// Last time the request made progress (a body chunk went out), for the idle timeout.
#[derive(Clone)]
pub struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Progress {
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
pub enum Outgoing {
    /// Kept whole: replayable.
    Full(Bytes),
    /// Streaming, sent once.
    Stream(Option<reqwest::Body>),
}

impl Outgoing {
    /// The body after the read-ahead: a complete one is kept; otherwise the chunks read and the
    /// rest stream through, each chunk that goes out counting as progress.
    pub fn new<S, E>(pre: Prebuffered<S>, progress: &Progress) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: 'static,
    {
        match pre {
            Prebuffered::Complete(b) => Outgoing::Full(b),
            Prebuffered::Streaming { head, rest } => {
                Outgoing::Stream(Some(stream_body(head, rest, progress.clone())))
            }
        }
    }

    pub fn replayable(&self) -> bool {
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

/// Forwards the unread part of the caller's body through a small bounded channel (the server's
/// payload is tied to its worker thread, hence a task local to it; reqwest wants a `Send`
/// stream). Backpressure: at most four chunks wait in the channel.
fn stream_body<S, E>(head: Vec<Bytes>, mut rest: S, progress: Progress) -> reqwest::Body
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
    E: 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_local(async move {
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

/// The caller's declared `Content-Length`, if it is a number. `headers` are the caller's
/// request headers (lower-case names, raw values).
pub fn declared_length(headers: &[(&str, &[u8])]) -> Option<u64> {
    headers
        .iter()
        .find(|(n, _)| *n == "content-length")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// The headers that go upstream: the caller's headers (lower-case names, raw values) that pass
/// the allow-list of [`super::headers`] plus the target's `forwardHeaders`, then the token in
/// the target's token header and `X-Backstage-User`.
pub fn upstream_headers(
    headers: &[(&str, &[u8])],
    user_token_header: &str,
    upstream: &UpstreamConfig,
    token: &str,
    user_ref: Option<&str>,
) -> Result<HeaderMap, ForwardError> {
    let conn = connection_named(
        headers
            .iter()
            .filter(|(n, _)| *n == "connection")
            .map(|(_, v)| *v),
    );
    let token_header = match &upstream.token_header {
        TokenHeader::Authorization => "authorization",
        TokenHeader::Custom(h) => h.as_str(),
    };
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if !forward_request_header(
            name,
            &conn,
            user_token_header,
            token_header,
            &upstream.forward_headers,
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.append(n, v);
        }
    }
    let value = match &upstream.token_header {
        TokenHeader::Authorization => format!("Bearer {token}"),
        TokenHeader::Custom(_) => token.to_owned(),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| ForwardError::TokenNotHeaderValue)?;
    value.set_sensitive(true);
    let name = HeaderName::from_bytes(token_header.as_bytes())
        .map_err(|_| ForwardError::TokenHeaderName)?;
    out.insert(name, value);
    if let Some(r) = user_ref.and_then(|r| HeaderValue::from_str(r).ok()) {
        out.insert(HeaderName::from_static(BACKSTAGE_USER_HEADER), r);
    }
    if let Some(len) = declared_length(headers) {
        // Kept for streamed bodies (some upstreams refuse chunked uploads); a kept body sets
        // its own length.
        out.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(out)
}

/// What one [`Call::send`] ended with.
pub enum Sent {
    /// The upstream answered 401, the body can be sent again and no fresh token was tried
    /// yet: the caller may drop the refused token, obtain a new one and send again (RFC 6750
    /// §3.1). If it does not, this is the answer.
    Unauthorized(reqwest::Response),
    /// The answer to pass on.
    Answer(reqwest::Response),
    /// No answer: unreachable or silent (after the retries allowed).
    Failed(ForwardError),
}

/// One forwarded call, over its attempts.
pub struct Call<'a> {
    fwd: &'a Forwarder,
    method: reqwest::Method,
    url: Url,
    body: Outgoing,
    progress: Progress,
    retry_ok: bool,
    attempt: u32,
    reauthenticated: bool,
}

impl<'a> Call<'a> {
    /// Idempotent calls with a replayable body may be retried (RFC 9110 §9.2.2).
    pub fn new(
        fwd: &'a Forwarder,
        method: reqwest::Method,
        url: Url,
        body: Outgoing,
        progress: Progress,
    ) -> Self {
        let retry_ok = body.replayable() && is_idempotent(method.as_str());
        Call {
            fwd,
            method,
            url,
            body,
            progress,
            retry_ok,
            attempt: 0,
            reauthenticated: false,
        }
    }

    pub fn method(&self) -> &reqwest::Method {
        &self.method
    }

    /// Retries made so far (connection errors and 502/503/504).
    pub fn retries(&self) -> u32 {
        self.attempt
    }

    /// The caller obtained a fresh token after [`Sent::Unauthorized`]: a second 401 is the
    /// answer.
    pub fn reauthenticated(&mut self) {
        self.reauthenticated = true;
    }

    /// Sends with `headers` (from [`upstream_headers`]) until an answer, a 401 the caller may
    /// answer with a fresh token, or a failure; retries as the call allows, with
    /// [`super::backoff`] between attempts.
    pub async fn send(&mut self, headers: &HeaderMap) -> Sent {
        let cfg = &self.fwd.cfg;
        loop {
            let mut headers = headers.clone();
            let mut rb = self
                .fwd
                .client
                .request(self.method.clone(), self.url.clone());
            if let Some(b) = self.body.take() {
                rb = rb.body(b);
            } else if self.body.replayable() {
                headers.remove(reqwest::header::CONTENT_LENGTH);
            }
            rb = rb.headers(headers);
            match send_head(rb, &self.progress, cfg.idle_timeout).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 && self.body.replayable() && !self.reauthenticated {
                        return Sent::Unauthorized(resp);
                    }
                    if self.retry_ok
                        && is_retryable_status(status)
                        && self.attempt < cfg.max_retries
                    {
                        drop(resp);
                        self.attempt += 1;
                        tokio::time::sleep(backoff(self.attempt)).await;
                        continue;
                    }
                    return Sent::Answer(resp);
                }
                Err(SendError::Transport) if self.retry_ok && self.attempt < cfg.max_retries => {
                    self.attempt += 1;
                    tokio::time::sleep(backoff(self.attempt)).await;
                }
                Err(SendError::Transport) => return Sent::Failed(ForwardError::Unreachable),
                Err(SendError::Timeout) => return Sent::Failed(ForwardError::Timeout),
            }
        }
    }
}

/// The upstream's answer as passed to the caller.
pub struct Answer {
    /// The upstream's status code.
    pub status: u16,
    /// The headers that pass ([`forward_response_header`]), in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, unless the answer has none (`HEAD`, 1xx, 204, 304): its declared length and
    /// the stream of its chunks.
    pub body: Option<(Option<u64>, BodyStream)>,
}

/// The upstream's body, chunk by chunk.
pub type BodyStream = futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

impl Answer {
    /// Checks the answer's header size against `proxy.maxHeaderBytes` and filters its headers.
    pub fn new(
        resp: reqwest::Response,
        method: &reqwest::Method,
        cfg: &ProxyConfig,
    ) -> Result<Self, ForwardError> {
        let conn = connection_named(
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
            return Err(ForwardError::HeadersTooLarge);
        }
        let headers = resp
            .headers()
            .iter()
            .filter(|(n, _)| forward_response_header(n.as_str(), &conn))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let status = resp.status();
        if *method == reqwest::Method::HEAD
            || status.is_informational()
            || status == reqwest::StatusCode::NO_CONTENT
            || status == reqwest::StatusCode::NOT_MODIFIED
        {
            return Ok(Answer {
                status: status.as_u16(),
                headers,
                body: None,
            });
        }
        let len = resp.content_length();
        Ok(Answer {
            status: status.as_u16(),
            headers,
            body: Some((len, body_stream(resp, cfg.idle_timeout))),
        })
    }
}

/// Each chunk is passed on as soon as it arrives (text/event-stream events reach the caller
/// one by one); `idle` bounds the silence between chunks, then the stream is cut.
fn body_stream(resp: reqwest::Response, idle: Duration) -> BodyStream {
    futures_util::stream::unfold(Some(resp), move |state| async move {
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
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(token_header: TokenHeader) -> UpstreamConfig {
        UpstreamConfig {
            base: Url::parse("http://up.example/api/").unwrap(),
            token_header,
            streaming: false,
            forward_headers: vec!["x-tenant".into()],
            allow_matrix_params: false,
        }
    }

    #[test]
    fn upstream_headers_keep_the_allow_list_and_set_the_token() {
        let caller: &[(&str, &[u8])] = &[
            ("accept", b"application/json"),
            ("authorization", b"Bearer caller-credential"),
            ("x-forwarded-access-token", b"user-token"),
            ("x-tenant", b"t1"),
            ("x-remote-user", b"admin"),
            ("connection", b"x-tenant"),
            ("content-length", b" 12 "),
            ("x-backstage-user", b"user:default/mallory"),
        ];
        let h = upstream_headers(
            caller,
            "x-forwarded-access-token",
            &upstream(TokenHeader::Authorization),
            "down",
            Some("user:default/alice"),
        )
        .unwrap();
        assert_eq!(h.get("accept").unwrap(), "application/json");
        assert_eq!(h.get("authorization").unwrap(), "Bearer down");
        assert!(h.get("authorization").unwrap().is_sensitive());
        assert_eq!(h.get(BACKSTAGE_USER_HEADER).unwrap(), "user:default/alice");
        assert_eq!(h.get("content-length").unwrap(), "12");
        for gone in [
            "x-forwarded-access-token",
            "x-remote-user",
            "x-tenant",
            "connection",
        ] {
            assert!(h.get(gone).is_none(), "{gone} must not go upstream");
        }
        assert_eq!(declared_length(caller), Some(12));

        let custom = upstream_headers(
            &[("authorization", b"Bearer caller".as_slice())],
            "x-forwarded-access-token",
            &upstream(TokenHeader::Custom("x-api-token".into())),
            "down",
            None,
        )
        .unwrap();
        assert_eq!(custom.get("x-api-token").unwrap(), "down");
        assert!(custom.get("authorization").is_none());
        assert!(custom.get(BACKSTAGE_USER_HEADER).is_none());

        let bad = upstream_headers(
            &[],
            "x-forwarded-access-token",
            &upstream(TokenHeader::Authorization),
            "a\nb",
            None,
        );
        assert_eq!(bad.unwrap_err(), ForwardError::TokenNotHeaderValue);
    }
}
