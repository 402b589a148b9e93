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

pub mod answer;
pub mod claims;
pub mod client_credentials;
pub mod exchange;
pub mod hints;
pub mod jwks;
pub mod realm_token;
pub mod user_mapping;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{ClientAuthMethod, KeycloakConfig};
use crate::metrics::IdpRequest;
use crate::outbound::{Outbound, OutboundError, Request, TransportKind};
use jwks::JwksCache;

/// Largest token-endpoint answer read (a Keycloak token response is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Largest discovery document read (Keycloak's is under 10 KiB).
const MAX_DISCOVERY_BYTES: usize = 1024 * 1024;

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
    #[error("the IdP could not be reached ({kind})")]
    Transport { kind: TransportKind },
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
            IdpError::Transport {
                kind: TransportKind::Timeout,
            } => "timeout",
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
    outbound: Arc<Outbound>,
    endpoints: RwLock<Option<Arc<Endpoints>>>,
    discovery: tokio::sync::Mutex<Option<Instant>>,
    jwks: Arc<JwksCache>,
}

impl IdpClient {
    pub fn new(cfg: &KeycloakConfig, outbound: Arc<Outbound>, jwks: Arc<JwksCache>) -> Self {
        IdpClient {
            issuer: cfg.issuer.as_str().trim_end_matches('/').to_owned(),
            client_id: cfg.client_id.clone(),
            client_secret: RwLock::new(cfg.client_secret.clone()),
            auth_method: cfg.client_auth_method,
            outbound,
            endpoints: RwLock::new(None),
            discovery: tokio::sync::Mutex::new(None),
            jwks,
        }
    }

    /// Token-endpoint calls that may start now (for metrics and tests).
    pub fn available_permits(&self) -> usize {
        self.outbound.available_permits()
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

    /// The raw client, for development-only calls (the tester's dev logins).
    pub fn http(&self) -> &reqwest::Client {
        self.outbound.client()
    }

    /// The outbound layer this client calls through.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
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
        // The issuer string in the config is what tokens carry in `iss`. The document is
        // fetched through the outbound layer and only then handed to `openidconnect`, which
        // models it; its `jwks_uri` is fetched once, by the realm key cache below (the
        // library's own discovery would fetch the key set a second time).
        let issuer =
            IssuerUrl::new(self.issuer.clone()).map_err(|e| IdpError::Discovery(e.to_string()))?;
        let meta = self.fetch_metadata(&issuer).await?;
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

    /// GETs the discovery document (OpenID Connect Discovery 1.0 §4) and checks that its
    /// `issuer` is exactly the configured one (§4.3), as `openidconnect`'s own discovery does.
    async fn fetch_metadata(&self, issuer: &IssuerUrl) -> Result<CoreProviderMetadata, IdpError> {
        let url = issuer
            .join(".well-known/openid-configuration")
            .map_err(|e| IdpError::Discovery(e.to_string()))?;
        let answer = self
            .outbound
            .send(Request {
                metric: Some(IdpRequest::Discovery),
                ..Request::get_json(url, MAX_DISCOVERY_BYTES)
            })
            .await
            .map_err(|_| IdpError::Discovery("the discovery request failed".into()))?;
        if answer.status != 200 {
            return Err(IdpError::Discovery(format!(
                "discovery answered HTTP {}",
                answer.status
            )));
        }
        // RFC 7231 §3.1.1.1: media types are case-insensitive and may carry parameters.
        if let Some(ct) = &answer.content_type {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(IdpError::Discovery(format!(
                    "discovery answered HTTP {}",
                    answer.status
                )));
            }
        }
        let meta: CoreProviderMetadata = serde_json::from_slice(&answer.body)
            .map_err(|_| IdpError::Discovery("the discovery document is not valid".into()))?;
        if meta.issuer() != issuer {
            return Err(IdpError::Discovery(format!(
                "unexpected issuer URI `{}` (expected `{}`)",
                meta.issuer().as_str(),
                issuer.as_str()
            )));
        }
        Ok(meta)
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
    /// (bounded), whatever they are. Transport failures are errors. The call goes through the
    /// outbound layer with the concurrency bound, connect retries and metrics.
    pub(crate) async fn post_token_form_raw(
        &self,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<RawAnswer, IdpError> {
        let ep = self.endpoints().await?;
        let metric = IdpRequest::for_grant(
            form.iter()
                .find(|(k, _)| *k == "grant_type")
                .map(|(_, v)| v.as_str()),
        );
        let mut headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ];
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                headers.push((
                    "authorization",
                    basic_auth(&self.client_id, &self.client_secret()),
                ));
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
        let answer = self
            .outbound
            .send(Request {
                method: reqwest::Method::POST,
                url: ep.token.clone(),
                headers,
                body: Some(body),
                limit: MAX_RESPONSE_BYTES,
                timeout: None,
                bounded: true,
                retry_connect: true,
                metric: Some(metric),
            })
            .await
            .map_err(|e| match e {
                OutboundError::Busy => IdpError::Busy,
                OutboundError::Transport(kind) => IdpError::Transport { kind },
                // An oversized answer is an answer, not a network failure.
                OutboundError::TooLarge { status, limit } => IdpError::Protocol {
                    status: Some(status),
                    detail: format!("response larger than {limit} bytes"),
                },
            })?;
        Ok(RawAnswer {
            status: answer.status,
            body: answer.body,
        })
    }
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

pub use crate::outbound::{describe_reqwest, read_limited};

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

    /// Discovery reads the document once and the key set once: the metadata is modelled by
    /// `openidconnect` from the document the outbound layer fetched, not by the library's own
    /// discovery (which fetches the key set itself, a second time).
    #[actix_web::test]
    async fn discovery_fetches_the_jwks_once() {
        use actix_web::{App, HttpResponse, HttpServer, web};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let certs = Arc::new(AtomicUsize::new(0));
        let docs = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/realms/r", listener.local_addr().unwrap());
        let (c, d, b) = (certs.clone(), docs.clone(), base.clone());
        let server = HttpServer::new(move || {
            let (c, d, b) = (c.clone(), d.clone(), b.clone());
            App::new()
                .route(
                    "/realms/r/.well-known/openid-configuration",
                    web::get().to(move || {
                        let (d, b) = (d.clone(), b.clone());
                        async move {
                            d.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().json(serde_json::json!({
                                "issuer": b,
                                "authorization_endpoint": format!("{b}/auth"),
                                "token_endpoint": format!("{b}/token"),
                                "jwks_uri": format!("{b}/certs"),
                                "response_types_supported": ["code"],
                                "subject_types_supported": ["public"],
                                "id_token_signing_alg_values_supported": ["RS256"],
                            }))
                        }
                    }),
                )
                .route(
                    "/realms/r/certs",
                    web::get().to(move || {
                        let c = c.clone();
                        async move {
                            c.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().json(serde_json::json!({"keys": []}))
                        }
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        let outbound = Arc::new(Outbound::for_tests());
        let jwks = Arc::new(JwksCache::new(outbound.clone(), Duration::from_secs(10)));
        let idp = IdpClient {
            issuer: base.clone(),
            client_id: "broker".into(),
            client_secret: RwLock::new(SecretString::from("s".to_owned())),
            auth_method: ClientAuthMethod::ClientSecretBasic,
            outbound,
            endpoints: RwLock::new(None),
            discovery: tokio::sync::Mutex::new(None),
            jwks,
        };
        let ep = idp.discover().await.unwrap();
        assert_eq!(ep.token.as_str(), format!("{base}/token"));
        assert_eq!(docs.load(Ordering::SeqCst), 1);
        assert_eq!(certs.load(Ordering::SeqCst), 1);

        // The issuer check still holds: a document naming another issuer is refused.
        let other = IdpClient {
            issuer: format!("{base}/"),
            ..idp
        };
        assert!(matches!(
            other.discover().await,
            Err(IdpError::Discovery(_))
        ));
    }

    #[test]
    fn busy_is_unavailable() {
        assert!(IdpError::Busy.is_unavailable());
    }

    #[test]
    fn unavailable_classification() {
        let t = IdpError::Transport {
            kind: TransportKind::Timeout,
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
