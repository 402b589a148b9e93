//! The broker's client at one Keycloak realm ([`IdpClient`]): its identity (issuer, client id,
//! the rotatable secret, the client authentication method) and the parts of the Keycloak wire,
//! one module each: [`discovery`] (the realm's endpoints), [`token_endpoint`] (the one POST every
//! grant goes through, and the answer parser), the grants ([`exchange`], [`client_credentials`],
//! [`user_mapping`]), [`jwks`] (the realm keys), [`realm_token`] (verifying a realm's JWT),
//! [`logout_token`] (back-channel logout tokens),
//! [`answer`] and [`claims`] (checks of the tokens Keycloak issues), [`hints`] (Keycloak error
//! hints), [`probe`] (side-effect-free checks of discovery, keys, client authentication and
//! audiences) and [`error`] (why a call failed).
//!
//! Every call goes through the outbound layer (`crate::outbound`): no redirects (a redirected
//! token request would carry the broker's client secret to wherever the redirect points: an
//! SSRF and credential leak, RFC 9700 §4.11), bounded connect and total time, bounded answers
//! ([`MAX_RESPONSE_BYTES`]); token-endpoint calls also share one bound on calls in flight
//! (`keycloak.maxConcurrentRequests`), one retry rule and one set of metrics. Endpoints come only
//! from the issuer's discovery document.

pub mod answer;
pub mod claims;
pub mod client_credentials;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod hints;
pub mod introspection;
pub mod jwks;
pub mod logout_token;
pub mod probe;
pub mod realm_token;
pub mod token_endpoint;
pub mod user_mapping;

use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{ClientAuthMethod, KeycloakConfig};
use crate::outbound::Outbound;
pub use discovery::Endpoints;
pub use error::IdpError;
use jwks::JwksCache;
pub use token_endpoint::{
    MAX_RESPONSE_BYTES, Pairs, RawAnswer, TokenResponse, basic_auth, parse_token_answer,
};

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
            // Exactly as configured: `iss` is compared byte for byte (RFC 8414 §3.3, OIDC Core §3.1.3.7).
            issuer: cfg.issuer_id.clone(),
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
        self.client_secret.read().clone()
    }

    /// Replaces the client secret (rotation without restart); returns whether it changed.
    pub fn set_client_secret(&self, secret: &SecretString) -> bool {
        let mut cur = self.client_secret.write();
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
}

pub use crate::outbound::{describe_reqwest, read_limited};
