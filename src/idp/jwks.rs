//! A cached JSON Web Key Set (RFC 7517) with rate-limited refresh on an unknown `kid`.
//!
//! Keys are selected by `kid` and the algorithm comes from the key (its `alg`, or its `kty` and
//! curve), never from the token header alone, so a token cannot pick a weaker algorithm
//! (RFC 8725 §3.1). Keys whose `use` is not `sig` (Keycloak also publishes an `RSA-OAEP`
//! encryption key) are skipped, and so is any key jsonwebtoken cannot use: one odd key never
//! makes the whole set unusable. Keycloak serves `/certs` with `Cache-Control: no-cache`, so
//! HTTP caching is not relied on; the set is held here and refetched when a `kid` is unknown,
//! at most once per `min_refresh_interval` (docs/reference/keycloak-token-exchange.md §1).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

use crate::metrics::IdpRequest;
use crate::outbound::{Outbound, Request};

/// Largest JWKS document accepted (a realm with dozens of keys is a few tens of KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One usable verification key.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the key set could not be fetched: {0}")]
    Fetch(String),
    #[error("the key set is not a JSON object with a `keys` array")]
    Malformed,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

/// A JWKS endpoint's keys, fetched on demand.
pub struct JwksCache {
    url: RwLock<Option<url::Url>>,
    outbound: Arc<Outbound>,
    keys: RwLock<Arc<KeySet>>,
    min_refresh_interval: Duration,
    /// Serialises fetches and remembers when the last one started.
    fetch: Mutex<Option<Instant>>,
    /// Called with the `kid`s a refetch removed (the broker drops cache entries they verified).
    on_removed: RwLock<Option<RemovedKeysListener>>,
    /// How many key-set changes removed a `kid`, counted after the change is installed. A `kid`
    /// found in the set after this read `n` is still there while it reads `n` (up to the
    /// instant between a removal and its count): the verified-credential cache checks a hit's
    /// `kid` with one load instead of the lock, the key set's `Arc` and a hash (issue 16).
    removals: AtomicU64,
}

/// A callback for `kid`s that disappeared from the key set.
pub type RemovedKeysListener = Arc<dyn Fn(&[String]) + Send + Sync>;

impl JwksCache {
    pub fn new(outbound: Arc<Outbound>, min_refresh_interval: Duration) -> Self {
        JwksCache {
            url: RwLock::new(None),
            outbound,
            keys: RwLock::new(Arc::new(KeySet::default())),
            min_refresh_interval,
            fetch: Mutex::new(None),
            on_removed: RwLock::new(None),
            removals: AtomicU64::new(0),
        }
    }

    /// Registers the listener for removed keys (one; a later call replaces it).
    pub fn on_keys_removed(&self, listener: RemovedKeysListener) {
        *self.on_removed.write() = Some(listener);
    }

    /// Whether a `kid` is in the current set (no fetch).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.read().by_kid.contains_key(kid)
    }

    /// The count of removals (see the field): read it before looking a `kid` up, and pass it
    /// to [`JwksCache::still_has_kid`] later.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// Whether `kid`, found in the set after [`JwksCache::removals`] returned `seen`, is still
    /// in the set: no key left since, or the set still holds it.
    pub fn still_has_kid(&self, kid: &str, seen: u64) -> bool {
        self.removals() == seen || self.has_kid(kid)
    }

    /// Sets the JWKS URL (from the issuer's discovery document: never from a token).
    pub fn set_url(&self, url: url::Url) {
        *self.url.write() = Some(url);
    }

    pub fn is_loaded(&self) -> bool {
        !self.snapshot().by_kid.is_empty()
    }

    /// Usable keys in the current set.
    pub fn key_count(&self) -> usize {
        self.snapshot().by_kid.len()
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// The key with this `kid`; an unknown `kid` causes at most one rate-limited refetch.
    pub async fn key(&self, kid: &str) -> Result<Option<Arc<VerifyKey>>, JwksError> {
        if let Some(k) = self.snapshot().by_kid.get(kid) {
            return Ok(Some(k.clone()));
        }
        self.refresh_if_due().await?;
        Ok(self.snapshot().by_kid.get(kid).cloned())
    }

    /// Refetches unless a fetch started less than `min_refresh_interval` ago.
    pub async fn refresh_if_due(&self) -> Result<(), JwksError> {
        let mut last = self.fetch.lock().await;
        if let Some(t) = *last
            && t.elapsed() < self.min_refresh_interval
        {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.fetch_now().await
    }

    /// Fetches unconditionally (start-up and readiness).
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_now().await
    }

    async fn fetch_now(&self) -> Result<(), JwksError> {
        let result = self.fetch_now_inner().await;
        self.outbound.metrics().jwks_refresh(result.is_ok());
        result
    }

    async fn fetch_now_inner(&self) -> Result<(), JwksError> {
        let url = self
            .url
            .read()
            .clone()
            .ok_or_else(|| JwksError::Fetch("no JWKS URL known yet".into()))?;
        let answer = self
            .outbound
            .send(Request {
                metric: Some(IdpRequest::Jwks),
                ..Request::get_json(url, MAX_JWKS_BYTES)
            })
            .await
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        if !(200..300).contains(&answer.status) {
            return Err(JwksError::Fetch(format!("HTTP {}", answer.status)));
        }
        let set = parse_jwks(&answer.body)?;
        tracing::debug!(keys = set.by_kid.len(), "JWKS loaded");
        let old = std::mem::replace(&mut *self.keys.write(), Arc::new(set));
        let now = self.snapshot();
        let removed: Vec<String> = old
            .by_kid
            .keys()
            .filter(|k| !now.by_kid.contains_key(*k))
            .cloned()
            .collect();
        if !removed.is_empty() {
            // Counted after the new set is in place (see the field).
            self.removals.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                removed = removed.len(),
                "signing keys left the issuer's JWKS"
            );
            let listener = self.on_removed.read().clone();
            if let Some(l) = listener {
                l(&removed);
            }
        }
        Ok(())
    }

    /// Installs a key set directly (tests).
    #[cfg(test)]
    pub fn install(&self, body: &[u8]) -> Result<(), JwksError> {
        let set = parse_jwks(body)?;
        *self.keys.write() = Arc::new(set);
        self.removals.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn parse_jwks(body: &[u8]) -> Result<KeySet, JwksError> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| JwksError::Malformed)?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(JwksError::Malformed)?;
    let mut set = KeySet::default();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if let Some(k) = usable_key(&jwk) {
            // A duplicated kid is ambiguous: keep the first, as selection must be deterministic.
            set.by_kid
                .entry(k.kid.clone())
                .or_insert_with(|| Arc::new(k));
        }
    }
    Ok(set)
}

/// The signature algorithm a JWK is for, from its `alg` or else its key type.
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(ka) = jwk.common.key_algorithm {
        return match ka {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            // HMAC keys in a public JWKS would make the "public" key a shared secret, and
            // encryption algorithms are not for signatures: never verify with them.
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

fn usable_key(jwk: &Jwk) -> Option<VerifyKey> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    let kid = jwk.common.key_id.clone()?;
    if kid.is_empty() {
        return None;
    }
    let alg = key_algorithm(jwk)?;
    // An `oct` key must never be accepted from a JWKS (alg confusion, RFC 8725 §2.1).
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { kid, alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_enc_and_oct_keys_and_keeps_sig_key() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "enc1", "use": "enc", "alg": "RSA-OAEP",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "sig1", "use": "sig", "alg": "RS256",
             "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
             "e": "AQAB"},
            {"kty": "weird"}
        ]});
        let set = parse_jwks(body.to_string().as_bytes()).unwrap();
        assert!(set.by_kid.contains_key("sig1"));
        assert!(!set.by_kid.contains_key("enc1"));
        assert!(!set.by_kid.contains_key("hmac"));
        assert_eq!(set.by_kid["sig1"].alg, Algorithm::RS256);
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse_jwks(b"not json").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"{\"keys\": 1}").is_err());
    }
}
