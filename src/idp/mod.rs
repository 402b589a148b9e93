//! The broker's outbound side: Keycloak discovery, RFC 8693 token exchange and the
//! client-credentials grant, over one shared `reqwest::Client`. Every token-endpoint call, of
//! any grant, goes through [`IdpClient::post_token_form_raw`]: one bound on calls in flight
//! (`keycloak.maxConcurrentRequests`), one retry rule, one size limit, one set of metrics.
//!
//! The client never follows redirects (a redirected token request would carry the broker's
//! client secret to wherever the redirect points: an SSRF and credential leak, RFC 9700 §4.11),
//! bounds connect and total time, and reads at most [`MAX_RESPONSE_BYTES`] of any answer.
//! Endpoints come only from the issuer's discovery document (OpenID Connect Discovery 1.0 §4),
//! whose `issuer` must equal the configured issuer exactly (checked by `openidconnect`).

pub mod client_credentials;
pub mod exchange;
pub mod user_mapping;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{ClientAuthMethod, KeycloakConfig};
use crate::inbound::jwks::JwksCache;

/// Largest token-endpoint answer read (a Keycloak token response is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// How often a failed discovery may be retried by requests.
const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// Endpoints from the discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub token: url::Url,
    pub jwks: url::Url,
}

/// Why a call to the IdP failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdpError {
    /// No usable answer: connection refused or reset, DNS, TLS, timeout.
    #[error("the IdP could not be reached ({detail})")]
    Transport { timeout: bool, detail: String },
    /// An OAuth error answer (RFC 6749 §5.2) with Keycloak's own `error` and description.
    #[error("the IdP refused the request: {error}")]
    Rejected {
        /// Keycloak's HTTP status, when the client library reports it.
        status: Option<u16>,
        error: String,
        description: Option<String>,
    },
    /// An answer that is neither a token response nor an OAuth error: an HTML page from a
    /// gateway, a malformed or oversized 200. `status` is the IdP's HTTP status, when an
    /// answer arrived.
    #[error("the IdP answered unexpectedly: {detail}")]
    Protocol { status: Option<u16>, detail: String },
    /// Discovery has not succeeded yet.
    #[error("the IdP's discovery document could not be loaded: {0}")]
    Discovery(String),
    /// `keycloak.maxConcurrentRequests` calls are already in flight: failed fast, nothing sent.
    #[error("too many requests to the IdP are in flight; try again shortly")]
    Busy,
}

impl IdpError {
    /// True when the IdP is unreachable or failing rather than refusing: no answer at all
    /// (network, timeout, discovery not loaded, the local bound) or a 5xx, because a gateway
    /// or a Keycloak in trouble says nothing about the user's request. Any other answer — an
    /// OAuth error, an HTML 403/404 from something in front of Keycloak, a malformed 200 — is
    /// an answer about this request and is never "unavailable" (the fallback decision,
    /// `broker::policy::fallback_reason`, relies on this).
    pub fn is_unavailable(&self) -> bool {
        match self {
            IdpError::Transport { .. } | IdpError::Discovery(_) | IdpError::Busy => true,
            IdpError::Rejected { status, .. } | IdpError::Protocol { status, .. } => {
                status.is_some_and(|s| s >= 500)
            }
        }
    }

    /// The IdP's HTTP status, when an answer arrived.
    pub fn idp_status(&self) -> Option<u16> {
        match self {
            IdpError::Rejected { status, .. } | IdpError::Protocol { status, .. } => *status,
            _ => None,
        }
    }

    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IdpError::Transport { timeout: true, .. } => "timeout",
            IdpError::Transport { .. } => "network",
            IdpError::Rejected { .. } => "rejected",
            IdpError::Protocol { .. } => "protocol",
            IdpError::Discovery(_) => "discovery",
            IdpError::Busy => "busy",
        }
    }
}

/// A successful token-endpoint answer (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub issued_token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("issued_token_type", &self.issued_token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The broker's client at one Keycloak realm.
pub struct IdpClient {
    issuer: String,
    client_id: String,
    /// Replaceable at run time (SIGHUP re-reads `keycloak.clientSecret`, e.g. from `$file`).
    client_secret: RwLock<SecretString>,
    auth_method: ClientAuthMethod,
    http: reqwest::Client,
    endpoints: RwLock<Option<Arc<Endpoints>>>,
    discovery: tokio::sync::Mutex<Option<Instant>>,
    jwks: Arc<JwksCache>,
    /// Bounds token-endpoint calls in flight (`keycloak.maxConcurrentRequests`).
    permits: tokio::sync::Semaphore,
    retries: u32,
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

/// Builds the shared outbound HTTP client.
pub fn build_http(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(concat!("token-broker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

impl IdpClient {
    pub fn new(cfg: &KeycloakConfig, http: reqwest::Client, jwks: Arc<JwksCache>) -> Self {
        IdpClient {
            issuer: cfg.issuer.as_str().trim_end_matches('/').to_owned(),
            client_id: cfg.client_id.clone(),
            client_secret: RwLock::new(cfg.client_secret.clone()),
            auth_method: cfg.client_auth_method,
            http,
            endpoints: RwLock::new(None),
            discovery: tokio::sync::Mutex::new(None),
            jwks,
            permits: tokio::sync::Semaphore::new(cfg.max_concurrent_requests.max(1)),
            retries: cfg.retries,
        }
    }

    /// Token-endpoint calls that may start now (for metrics and tests).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The current client secret.
    pub(crate) fn client_secret(&self) -> SecretString {
        self.client_secret
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the client secret (rotation without restart); returns whether it changed.
    pub fn set_client_secret(&self, secret: &SecretString) -> bool {
        let mut cur = self
            .client_secret
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if cur.expose_secret() == secret.expose_secret() {
            return false;
        }
        *cur = secret.clone();
        true
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn is_discovered(&self) -> bool {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Loads the discovery document now, then the JWKS it names.
    pub async fn discover(&self) -> Result<Arc<Endpoints>, IdpError> {
        let mut last = self.discovery.lock().await;
        *last = Some(Instant::now());
        self.discover_locked().await
    }

    async fn discover_locked(&self) -> Result<Arc<Endpoints>, IdpError> {
        // The issuer string in the config is what tokens carry in `iss`; openidconnect joins
        // the well-known suffix and checks the document's `issuer` against it.
        let issuer =
            IssuerUrl::new(self.issuer.clone()).map_err(|e| IdpError::Discovery(e.to_string()))?;
        let started = Instant::now();
        let meta = CoreProviderMetadata::discover_async(issuer, &self.http).await;
        crate::metrics::global().idp_request(
            crate::metrics::IdpRequest::Discovery,
            started.elapsed(),
            if meta.is_ok() { "ok" } else { "error" },
        );
        let meta = meta.map_err(|e| IdpError::Discovery(describe_discovery_error(&e)))?;
        let token = meta
            .token_endpoint()
            .map(|t| t.url().clone())
            .ok_or_else(|| IdpError::Discovery("no token_endpoint".into()))?;
        let jwks = meta.jwks_uri().url().clone();
        let ep = Arc::new(Endpoints { token, jwks });
        self.jwks.set_url(ep.jwks.clone());
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Some(ep.clone());
        if let Err(e) = self.jwks.refresh().await {
            tracing::warn!(error = %e, "JWKS could not be loaded after discovery");
        }
        tracing::info!(issuer = %self.issuer, token_endpoint = %ep.token, "IdP discovery loaded");
        Ok(ep)
    }

    /// The discovered endpoints; if discovery has not succeeded yet, retries it (at most every
    /// two seconds, one attempt at a time) so the broker recovers by itself.
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, IdpError> {
        if let Some(ep) = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(ep);
        }
        let mut last = self.discovery.lock().await;
        if let Some(ep) = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(ep);
        }
        if let Some(t) = *last
            && t.elapsed() < DISCOVERY_RETRY
        {
            return Err(IdpError::Discovery("not loaded yet".into()));
        }
        *last = Some(Instant::now());
        self.discover_locked().await
    }

    /// POSTs a form to the token endpoint with the configured client authentication
    /// (RFC 6749 §2.3.1) and returns the parsed success answer.
    pub(crate) async fn post_token_form(
        &self,
        form: Vec<(&'static str, String)>,
    ) -> Result<TokenResponse, IdpError> {
        let raw = self.post_token_form_raw(form).await?;
        parse_token_answer(raw.status, &raw.body)
    }

    /// How the configured client authentication travels, for display: the header or form
    /// fields it adds, with the secret replaced by a note (the exchange tester).
    pub fn client_auth_display(&self) -> (Pairs, Pairs) {
        let note = format!(
            "<redacted: secret of client '{}', sha256 fingerprint {}>",
            self.client_id,
            crate::digest::fingerprint(self.client_secret().expose_secret())
        );
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => (
                vec![(
                    "authorization".to_owned(),
                    format!("Basic {note} (RFC 6749 §2.3.1)"),
                )],
                Vec::new(),
            ),
            ClientAuthMethod::ClientSecretPost => (
                Vec::new(),
                vec![
                    ("client_id".to_owned(), self.client_id.clone()),
                    ("client_secret".to_owned(), note),
                ],
            ),
        }
    }

    /// POSTs a form to the token endpoint and returns Keycloak's literal status and body
    /// (bounded), whatever they are. Transport failures are errors.
    pub(crate) async fn post_token_form_raw(
        &self,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<RawAnswer, IdpError> {
        let ep = self.endpoints().await?;
        let request = crate::metrics::IdpRequest::for_grant(
            form.iter()
                .find(|(k, _)| *k == "grant_type")
                .map(|(_, v)| v.as_str()),
        );
        // Fail fast instead of queueing: in an outage, waiting requests would only pile up.
        let Ok(_permit) = self.permits.try_acquire() else {
            crate::metrics::global().idp_busy(request);
            return Err(IdpError::Busy);
        };
        let started = Instant::now();
        let mut req = self.http.post(ep.token.clone());
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                req = req.header(
                    "authorization",
                    basic_auth(&self.client_id, &self.client_secret()),
                );
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_secret",
                    self.client_secret().expose_secret().to_owned(),
                ));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        let result = async {
            let mut attempt = 0;
            let resp = loop {
                let Some(this) = req.try_clone() else {
                    return Err(IdpError::Protocol {
                        status: None,
                        detail: "request body cannot be retried".into(),
                    });
                };
                match this.send().await {
                    Ok(r) => break r,
                    // Only a failed connection is retried: the request was never delivered, so
                    // a retry cannot run a grant twice. Timeouts and answers are final.
                    Err(e) if e.is_connect() && !e.is_timeout() && attempt < self.retries => {
                        let wait = backoff_delay(attempt, jitter_seed());
                        attempt += 1;
                        tracing::debug!(
                            attempt,
                            wait_ms = wait.as_millis() as u64,
                            "IdP connection failed; retrying"
                        );
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        return Err(IdpError::Transport {
                            timeout: e.is_timeout(),
                            detail: describe_reqwest(&e),
                        });
                    }
                }
            };
            let status = resp.status().as_u16();
            let bytes = read_bounded(resp, MAX_RESPONSE_BYTES)
                .await
                .map_err(|e| match e {
                    // An oversized answer is an answer, not a network failure.
                    ReadError::TooLarge(detail) => IdpError::Protocol {
                        status: Some(status),
                        detail,
                    },
                    ReadError::Transport(detail) => IdpError::Transport {
                        timeout: detail.contains("timed out"),
                        detail,
                    },
                })?;
            Ok::<_, IdpError>(RawAnswer {
                status,
                body: bytes,
            })
        }
        .await;
        let label = match &result {
            Ok(r) if r.status == 200 => "ok",
            Ok(r) if r.status >= 500 => "server_error",
            Ok(_) => "rejected",
            Err(e) => e.kind(),
        };
        crate::metrics::global().idp_request(request, started.elapsed(), label);
        result
    }
}

/// Randomness for backoff jitter (not security relevant; a v4 UUID is 122 random bits).
fn jitter_seed() -> u64 {
    let v = uuid::Uuid::new_v4().as_u128();
    (v as u64) ^ ((v >> 64) as u64)
}

/// Name/value pairs for display.
pub type Pairs = Vec<(String, String)>;

/// Keycloak's literal answer from the token endpoint.
pub struct RawAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A token-endpoint answer as a success or an OAuth error (RFC 6749 §5.1, §5.2). Neither
/// (an HTML page, a malformed 200) is [`IdpError::Protocol`] with the status; the body is
/// never quoted, since it may hold a token.
pub fn parse_token_answer(status: u16, bytes: &[u8]) -> Result<TokenResponse, IdpError> {
    if status == 200 {
        return serde_json::from_slice::<TokenResponse>(bytes).map_err(|_| IdpError::Protocol {
            status: Some(status),
            detail: "HTTP 200 without a token response".into(),
        });
    }
    match serde_json::from_slice::<OAuthError>(bytes) {
        Ok(e) => Err(IdpError::Rejected {
            status: Some(status),
            error: e.error,
            description: e.error_description,
        }),
        Err(_) => Err(IdpError::Protocol {
            status: Some(status),
            detail: format!("HTTP {status} without an OAuth error body"),
        }),
    }
}

/// `Authorization: Basic` with id and secret form-urlencoded first, as RFC 6749 §2.3.1 requires
/// (Keycloak decodes them; a secret containing `:` or `%` would break otherwise).
pub fn basic_auth(id: &str, secret: &SecretString) -> String {
    use base64::Engine;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret.expose_secret()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A short description of a transport error without URLs or bodies.
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "broken response body".into()
    } else {
        "request failed".into()
    }
}

fn describe_discovery_error<E: std::error::Error>(e: &openidconnect::DiscoveryError<E>) -> String {
    match e {
        openidconnect::DiscoveryError::Request(_) => "the discovery request failed".into(),
        openidconnect::DiscoveryError::Response(status, _, _) => {
            format!("discovery answered HTTP {}", status.as_u16())
        }
        openidconnect::DiscoveryError::Parse(_) => "the discovery document is not valid".into(),
        openidconnect::DiscoveryError::Validation(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    read_bounded(resp, limit).await.map_err(|e| match e {
        ReadError::TooLarge(d) | ReadError::Transport(d) => d,
    })
}

/// Why a bounded body read failed.
enum ReadError {
    TooLarge(String),
    Transport(String),
}

async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(ReadError::TooLarge(format!(
                        "response larger than {limit} bytes"
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ReadError::Transport(describe_reqwest(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        use base64::Engine;
        let h = basic_auth("my client", &SecretString::from("a:b%c".to_owned()));
        let raw = h.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+client:a%3Ab%25c");
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 0..20 {
            for r in [0, 1, 7, 999, u64::MAX] {
                assert!(backoff_delay(attempt, r) <= BACKOFF_CAP);
            }
        }
        assert!(backoff_delay(0, u64::MAX) <= BACKOFF_BASE);
        assert_eq!(backoff_delay(3, 0), Duration::ZERO);
        assert!(IdpError::Busy.is_unavailable());
    }

    #[test]
    fn unavailable_classification() {
        let t = IdpError::Transport {
            timeout: true,
            detail: String::new(),
        };
        assert!(t.is_unavailable());
        let r = IdpError::Rejected {
            status: Some(400),
            error: "invalid_request".into(),
            description: None,
        };
        assert!(!r.is_unavailable());
        let s = IdpError::Rejected {
            status: Some(503),
            error: "x".into(),
            description: None,
        };
        assert!(s.is_unavailable());
    }
}
