//! The one outbound HTTP layer: every call the broker makes to another server goes through
//! here — Keycloak's token endpoint (every grant), its discovery document and realm JWKS, and
//! Backstage's key sets — and the proxy's upstream client is built by the same rules
//! ([`client_builder`]) and classifies its failures the same way ([`TransportKind::of`]).
//!
//! What lives here, once:
//! - the client construction rules: redirects are never followed (a redirected token request
//!   would carry the broker's client secret, or a user's token, to wherever the redirect points:
//!   an SSRF and credential leak, RFC 9700 §4.11), connect and total time are bounded, and the
//!   user agent names the broker;
//! - the concurrency bound (`keycloak.maxConcurrentRequests`) for calls that ask for it: a call
//!   over the bound fails fast with [`OutboundError::Busy`], nothing sent, because in an outage
//!   waiting requests would only pile up;
//! - retries after a failed connection, with capped, fully jittered exponential backoff, only
//!   for calls that ask for them and only when the connection failed (the request was never
//!   delivered, so a retry cannot run a grant twice), and likewise after a `408 Request
//!   Timeout` (the server did not receive the whole request, RFC 9110 §15.5.9); timeouts and
//!   other answers are final;
//! - the response size cap: at most [`Request::limit`] bytes of any answer are read;
//! - timeouts recognised by error kind (`reqwest::Error::is_timeout`), never by message text;
//! - per-call metrics (`token_broker_idp_request_duration_seconds`,
//!   `token_broker_idp_requests_total`) for calls that carry an [`IdpRequest`] label;
//! - the `outbound call` span of each call (`traces.rs`), with the host, the configured path
//!   and the status, and the W3C `traceparent` naming it sent along, so the IdP's own traces
//!   join the caller's.
//!
//! The layer knows nothing of OAuth: callers build the request and read the [`Answer`].

use std::time::{Duration, Instant};

use crate::metrics::{IdpRequest, IdpResult, Metrics};

/// How a client is built. The rules every outbound client shares (no redirects, the user
/// agent) are not options.
#[derive(Debug, Clone, Copy)]
pub struct ClientRules {
    pub connect_timeout: Duration,
    /// Total time of one call, head and body; `None` for clients whose calls may stream for
    /// long (the proxy bounds silence instead).
    pub timeout: Option<Duration>,
    /// Ignore proxies named in the environment (the proxy's upstream is the configured one).
    pub no_env_proxy: bool,
}

/// A `reqwest` client builder with the shared rules applied.
pub fn client_builder(rules: ClientRules) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(rules.connect_timeout)
        .user_agent(concat!("token-broker/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = rules.timeout {
        b = b.timeout(t);
    }
    if rules.no_env_proxy {
        b = b.no_proxy();
    }
    b
}

/// Why a call got no usable answer, by the error's kind (never its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connect or total deadline passed.
    Timeout,
    /// The connection could not be made (refused, reset, DNS, TLS).
    Connect,
    /// The answer's body broke off or could not be decoded.
    Body,
    /// Anything else the client reports.
    Other,
}

impl TransportKind {
    /// Classifies a `reqwest` error by kind. A connect timeout is a timeout.
    pub fn of(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else if e.is_body() || e.is_decode() {
            TransportKind::Body
        } else {
            TransportKind::Other
        }
    }

    /// A short description without URLs or bodies.
    pub fn describe(self) -> &'static str {
        match self {
            TransportKind::Timeout => "timed out",
            TransportKind::Connect => "connection failed",
            TransportKind::Body => "broken response body",
            TransportKind::Other => "request failed",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a call through the layer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// No usable answer.
    #[error("{0}")]
    Transport(TransportKind),
    /// An answer arrived but its body is larger than the call's limit. It is an answer, not a
    /// network failure: `status` is the server's.
    #[error("response larger than {limit} bytes")]
    TooLarge { status: u16, limit: usize },
    /// The concurrency bound is reached: failed fast, nothing sent.
    #[error("too many calls in flight")]
    Busy,
}

/// One call.
pub struct Request {
    pub method: reqwest::Method,
    pub url: url::Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<String>,
    /// Largest body read.
    pub limit: usize,
    /// A deadline for this call shorter than the client's.
    pub timeout: Option<Duration>,
    /// Take a permit of the concurrency bound (token-endpoint calls).
    pub bounded: bool,
    /// Retry after a failed connection (up to the layer's `retries`).
    pub retry_connect: bool,
    /// The metrics label; `None` for calls that are not to the IdP (Backstage key sets).
    pub metric: Option<IdpRequest>,
}

impl Request {
    /// A GET accepting JSON, unbounded, not retried, unmeasured.
    pub fn get_json(url: url::Url, limit: usize) -> Self {
        Request {
            method: reqwest::Method::GET,
            url,
            headers: vec![("accept", "application/json".to_owned())],
            body: None,
            limit,
            timeout: None,
            bounded: false,
            retry_connect: false,
            metric: None,
        }
    }
}

/// A server's answer, body read up to the call's limit.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The shared client, its concurrency bound and retry count, and the metrics it records to.
pub struct Outbound {
    client: reqwest::Client,
    permits: tokio::sync::Semaphore,
    retries: u32,
    metrics: Metrics,
}

/// The layer's settings (from `keycloak.*`).
#[derive(Debug, Clone, Copy)]
pub struct OutboundConfig {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_concurrent_requests: usize,
    pub retries: u32,
}

impl From<&crate::config::KeycloakConfig> for OutboundConfig {
    fn from(kc: &crate::config::KeycloakConfig) -> Self {
        OutboundConfig {
            connect_timeout: kc.connect_timeout,
            timeout: kc.timeout,
            max_concurrent_requests: kc.max_concurrent_requests,
            retries: kc.retries,
        }
    }
}

impl Outbound {
    pub fn new(cfg: OutboundConfig, metrics: Metrics) -> Result<Self, String> {
        let client = client_builder(ClientRules {
            connect_timeout: cfg.connect_timeout,
            timeout: Some(cfg.timeout),
            no_env_proxy: false,
        })
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Outbound {
            client,
            permits: tokio::sync::Semaphore::new(cfg.max_concurrent_requests.max(1)),
            retries: cfg.retries,
            metrics,
        })
    }

    /// A layer with default limits and its own metrics (unit tests).
    #[cfg(test)]
    pub fn for_tests() -> Self {
        match Outbound::new(
            OutboundConfig {
                connect_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(10),
                max_concurrent_requests: 64,
                retries: 0,
            },
            Metrics::default(),
        ) {
            Ok(o) => o,
            Err(e) => unreachable!("{e}"),
        }
    }

    /// The underlying client, for development-only calls (the tester's dev logins).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Bounded calls that may start now (for metrics and tests).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// The metrics this layer records to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sends one call and reads its answer (any status) up to the call's limit.
    pub async fn send(&self, req: Request) -> Result<Answer, OutboundError> {
        // Fail fast instead of queueing.
        let _permit = if req.bounded {
            match self.permits.try_acquire() {
                Ok(p) => Some(p),
                Err(_) => {
                    if let Some(m) = req.metric {
                        self.metrics.idp_busy(m);
                    }
                    return Err(OutboundError::Busy);
                }
            }
        } else {
            None
        };
        let started = Instant::now();
        let metric = req.metric;
        // The URL is configuration (issuer, JWKS, Backstage key sets), never a caller's; the
        // query is left out all the same.
        let span = tracing::info_span!(
            target: crate::traces::SPAN_TARGET,
            "outbound call",
            otel.name = %format_args!("{} {}", req.method, metric.map_or("outbound", |m| m.as_str())),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %req.method,
            server.address = req.url.host_str().unwrap_or(""),
            url.path = req.url.path(),
            idp.request = metric.map_or("", |m| m.as_str()),
            http.response.status_code = tracing::field::Empty,
        );
        let mut req = req;
        req.headers.extend(crate::traces::inject(&span));
        let result = tracing::Instrument::instrument(self.send_unmeasured(req), span.clone()).await;
        match &result {
            Ok(a) => {
                span.record("http.response.status_code", a.status);
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        if let Some(m) = metric {
            self.metrics
                .idp_request(m, started.elapsed(), result_label(m, &result));
        }
        result
    }

    async fn send_unmeasured(&self, req: Request) -> Result<Answer, OutboundError> {
        let mut rb = self.client.request(req.method, req.url);
        for (k, v) in &req.headers {
            rb = rb.header(*k, v.as_str());
        }
        if let Some(t) = req.timeout {
            rb = rb.timeout(t);
        }
        if let Some(body) = req.body {
            rb = rb.body(body);
        }
        let retries = if req.retry_connect { self.retries } else { 0 };
        let mut attempt = 0;
        let resp = loop {
            let Some(this) = rb.try_clone() else {
                return Err(OutboundError::Transport(TransportKind::Other));
            };
            match this.send().await {
                // 408: the server closed the connection before it had the whole request
                // (RFC 9110 §15.5.9), so nothing was processed and the request may be repeated
                // on a new connection, like a failed connect. Seen from actix-based servers
                // whose head timeout ran out while this side was starved of CPU.
                Ok(r) if r.status().as_u16() == 408 && attempt < retries => {
                    drop(r);
                    let wait = backoff_delay(attempt, jitter_seed());
                    attempt += 1;
                    tracing::debug!(attempt, "outbound request answered 408; retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => break r,
                Err(e) => {
                    let kind = TransportKind::of(&e);
                    if kind == TransportKind::Connect && attempt < retries {
                        let wait = backoff_delay(attempt, jitter_seed());
                        attempt += 1;
                        tracing::debug!(
                            attempt,
                            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                            "outbound connection failed; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(OutboundError::Transport(kind));
                }
            }
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_bounded(resp, req.limit).await.map_err(|e| match e {
            ReadError::TooLarge => OutboundError::TooLarge {
                status,
                limit: req.limit,
            },
            ReadError::Transport(kind) => OutboundError::Transport(kind),
        })?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

/// The fixed `result` label of one call. Token-endpoint calls tell the answer's class apart
/// (`ok`, `rejected`, `server_error`) and the failure's (`timeout`, `network`, `protocol` for
/// an oversized answer); documents (discovery, JWKS) are `ok` for a 2xx and `error` otherwise.
fn result_label(m: IdpRequest, r: &Result<Answer, OutboundError>) -> IdpResult {
    let document = matches!(m, IdpRequest::Jwks | IdpRequest::Discovery);
    match r {
        Ok(a) if document && (200..300).contains(&a.status) => IdpResult::Ok,
        Ok(_) | Err(_) if document => IdpResult::Error,
        Ok(a) if a.status == 200 => IdpResult::Ok,
        Ok(a) if a.status >= 500 => IdpResult::ServerError,
        Ok(_) => IdpResult::Rejected,
        Err(OutboundError::Transport(TransportKind::Timeout)) => IdpResult::Timeout,
        Err(OutboundError::Transport(_)) => IdpResult::Network,
        Err(OutboundError::TooLarge { .. }) => IdpResult::Protocol,
        Err(OutboundError::Busy) => IdpResult::Busy,
    }
}

/// First backoff step after a connection failure; doubled per attempt, capped at
/// [`BACKOFF_CAP`], and "full jitter" applied (a uniform delay in `[0, step]`), so retries of
/// many requests do not arrive in lockstep.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

/// The delay before retry number `attempt` (0-based), jittered with `random`.
pub fn backoff_delay(attempt: u32, random: u64) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    let millis = u64::try_from(step.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(random % (millis + 1))
}

/// Randomness for backoff jitter (not security relevant; a v4 UUID is 122 random bits).
fn jitter_seed() -> u64 {
    let v = uuid::Uuid::new_v4().as_u128();
    (v as u64) ^ ((v >> 64) as u64)
}

/// A short description of a transport error without URLs or bodies.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    TransportKind::of(e).describe().to_owned()
}

/// Reads a response body, refusing more than `limit` bytes (for development-only callers
/// that hold a raw `reqwest::Response`).
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    read_bounded(resp, limit).await.map_err(|e| match e {
        ReadError::TooLarge => format!("response larger than {limit} bytes"),
        ReadError::Transport(kind) => kind.describe().to_owned(),
    })
}

/// Why a bounded body read failed.
enum ReadError {
    TooLarge,
    Transport(TransportKind),
}

async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ReadError::Transport(TransportKind::of(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 0..20 {
            for r in [0, 1, 7, 999, u64::MAX] {
                assert!(backoff_delay(attempt, r) <= BACKOFF_CAP);
            }
        }
        assert!(backoff_delay(0, u64::MAX) <= BACKOFF_BASE);
        assert_eq!(backoff_delay(3, 0), Duration::ZERO);
    }

    #[test]
    fn result_labels() {
        let ok = |status| {
            Ok(Answer {
                status,
                content_type: None,
                body: Vec::new(),
            })
        };
        assert_eq!(result_label(IdpRequest::Jwks, &ok(200)), IdpResult::Ok);
        assert_eq!(result_label(IdpRequest::Jwks, &ok(404)), IdpResult::Error);
        assert_eq!(
            result_label(
                IdpRequest::Discovery,
                &Err(OutboundError::Transport(TransportKind::Timeout))
            ),
            IdpResult::Error
        );
        assert_eq!(
            result_label(IdpRequest::TokenExchange, &ok(503)),
            IdpResult::ServerError
        );
        assert_eq!(
            result_label(IdpRequest::ClientCredentials, &ok(401)),
            IdpResult::Rejected
        );
        assert_eq!(
            result_label(
                IdpRequest::OtherGrant,
                &Err(OutboundError::Transport(TransportKind::Timeout))
            ),
            IdpResult::Timeout
        );
        assert_eq!(
            result_label(
                IdpRequest::OtherGrant,
                &Err(OutboundError::TooLarge {
                    status: 200,
                    limit: 1
                })
            ),
            IdpResult::Protocol
        );
    }

    /// A 408 (the server gave up before it had the request) is retried like a failed connect;
    /// without retries it is the answer.
    #[actix_web::test]
    async fn a_408_is_retried_on_a_new_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                &b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                    [..],
                &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"[..],
                &b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                    [..],
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/")).unwrap();
        let out = |retries| {
            Outbound::new(
                OutboundConfig {
                    connect_timeout: Duration::from_secs(1),
                    timeout: Duration::from_secs(2),
                    max_concurrent_requests: 1,
                    retries,
                },
                Metrics::default(),
            )
            .unwrap()
        };
        let mut req = Request::get_json(url.clone(), 1024);
        req.retry_connect = true;
        assert_eq!(out(2).send(req).await.unwrap().status, 200);
        let mut req = Request::get_json(url, 1024);
        req.retry_connect = true;
        assert_eq!(out(0).send(req).await.unwrap().status, 408);
    }

    /// A body that stops arriving past the deadline is a timeout by kind, not by text.
    #[actix_web::test]
    async fn a_stalled_body_is_a_typed_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let out = Outbound::new(
            OutboundConfig {
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_millis(300),
                max_concurrent_requests: 1,
                retries: 0,
            },
            Metrics::default(),
        )
        .unwrap();
        let url = url::Url::parse(&format!("http://{addr}/")).unwrap();
        let r = out.send(Request::get_json(url, 1024)).await;
        assert_eq!(
            r.err(),
            Some(OutboundError::Transport(TransportKind::Timeout))
        );
    }
}
