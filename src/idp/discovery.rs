//! Discovery of the realm's endpoints (OpenID Connect Discovery 1.0 §4): the document is
//! fetched through the outbound layer, modelled by `openidconnect`'s `CoreProviderMetadata`,
//! and accepted only when its `issuer` equals the configured issuer exactly (§4.3). Its
//! `jwks_uri` goes to the realm key cache ([`super::jwks`]), which fetches the key set once.
//! A failed discovery is retried by requests, at most every [`DISCOVERY_RETRY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;

use super::{IdpClient, IdpError};
use crate::metrics::IdpRequest;
use crate::outbound::Request;

/// Largest discovery document read (Keycloak's is under 10 KiB).
const MAX_DISCOVERY_BYTES: usize = 1024 * 1024;

/// How often a failed discovery may be retried by requests.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(2);

/// Endpoints from the discovery document.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub token: url::Url,
    pub jwks: url::Url,
    /// `introspection_endpoint` (RFC 8414 §2, RFC 7662), when the document names one.
    pub introspection: Option<url::Url>,
}

impl IdpClient {
    pub fn is_discovered(&self) -> bool {
        self.endpoints.read().is_some()
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
        let (meta, introspection) = self.fetch_metadata(&issuer).await?;
        let token = meta
            .token_endpoint()
            .map(|t| t.url().clone())
            .ok_or_else(|| IdpError::Discovery("no token_endpoint".into()))?;
        let jwks = meta.jwks_uri().url().clone();
        let ep = Arc::new(Endpoints {
            token,
            jwks,
            introspection,
        });
        self.jwks.set_url(ep.jwks.clone());
        *self.endpoints.write() = Some(ep.clone());
        if let Err(e) = self.jwks.refresh().await {
            tracing::warn!(error = %e, "JWKS could not be loaded after discovery");
        }
        tracing::info!(issuer = %self.issuer, token_endpoint = %ep.token, "IdP discovery loaded");
        Ok(ep)
    }

    /// GETs the discovery document (OpenID Connect Discovery 1.0 §4) and checks that its
    /// `issuer` is exactly the configured one (§4.3), as `openidconnect`'s own discovery does.
    async fn fetch_metadata(
        &self,
        issuer: &IssuerUrl,
    ) -> Result<(CoreProviderMetadata, Option<url::Url>), IdpError> {
        // OIDC Discovery 1.0 §4: `{issuer}/.well-known/openid-configuration`, where a
        // terminating `/` of the issuer is not doubled (`IssuerUrl::join` appends the suffix
        // directly after a trailing `/`): `https://idp.example.com/` and
        // `https://idp.example.com` are fetched at the same URL but are different issuers.
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
        // Byte for byte (§4.3): no trailing-slash or case leniency.
        if meta.issuer().as_str() != issuer.as_str() {
            return Err(IdpError::Discovery(format!(
                "unexpected issuer URI `{}` (expected `{}`)",
                meta.issuer().as_str(),
                issuer.as_str()
            )));
        }
        // Not part of `CoreProviderMetadata`: read from the same document.
        let introspection = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|d| {
                d.get("introspection_endpoint")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|u| url::Url::parse(u).ok())
            })
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        Ok((meta, introspection))
    }

    /// The discovered endpoints; if discovery has not succeeded yet, retries it (at most every
    /// two seconds, one attempt at a time) so the broker recovers by itself.
    pub async fn endpoints(&self) -> Result<Arc<Endpoints>, IdpError> {
        if let Some(ep) = self.endpoints.read().clone() {
            return Ok(ep);
        }
        let mut last = self.discovery.lock().await;
        if let Some(ep) = self.endpoints.read().clone() {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientAuthMethod;
    use crate::idp::jwks::JwksCache;
    use crate::outbound::Outbound;
    use parking_lot::RwLock;
    use secrecy::SecretString;

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
}
