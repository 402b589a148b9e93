//! Remote JSON Web Key Sets cached the way Backstage caches them (backstage-tokens.md §2.5):
//! jose `createRemoteJWKSet` defaults (max age 10 min, cooldown 30 s, fetch timeout 5 s), plus
//! backend-defaults' `JwksClient` forced reload on a `kid` miss during the cooldown (at most 10
//! per 60 s per key set) and at most 100 key sets. Key selection is jose's `LocalJWKSet`: the
//! JWK's `kty` (and curve) must fit the header `alg`, `kid` must match when the header has
//! one, the JWK's `alg` must equal the header's when present, `use` must be `sig` if present;
//! every matching key is tried. URLs come only from configuration (§9 item 8).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

const MAX_AGE: Duration = Duration::from_secs(600);
const COOLDOWN: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const FORCED_BUDGET: usize = 10;
const FORCED_WINDOW: Duration = Duration::from_secs(60);
const MAX_SETS: u64 = 100;
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One public key of a set.
pub struct Key {
    kid: Option<String>,
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    usage: Option<String>,
    pub key: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm, alg_name: &str, kid: Option<&str>) -> bool {
        let kty_ok = match alg {
            Algorithm::ES256 => self.kty == "EC" && self.crv.as_deref() == Some("P-256"),
            Algorithm::ES384 => self.kty == "EC" && self.crv.as_deref() == Some("P-384"),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.kty == "RSA",
            Algorithm::EdDSA => self.kty == "OKP",
            // HMAC: a public key set never verifies a shared-secret signature (RFC 8725 §2.1).
            _ => false,
        };
        kty_ok
            && kid.is_none_or(|k| self.kid.as_deref() == Some(k))
            && self.alg.as_deref().is_none_or(|a| a == alg_name)
            && self.usage.as_deref().is_none_or(|u| u == "sig")
    }
}

/// Parses a JWKS body; `None` when it is not an object with a `keys` array. Keys jsonwebtoken
/// cannot use are skipped.
pub fn parse_set(body: &[u8]) -> Option<Vec<Arc<Key>>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let keys = doc.get("keys")?.as_array()?;
    let mut out = Vec::new();
    for raw in keys {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let Some(kty) = s("kty") else { continue };
        if kty == "oct" {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(Arc::new(Key {
            kid: s("kid"),
            kty,
            crv: s("crv"),
            alg: s("alg"),
            usage: s("use"),
            key,
        }));
    }
    Some(out)
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set could not be fetched: {0}")]
    Fetch(String),
    #[error("the key set is not a JSON object with a keys array")]
    Malformed,
    #[error("the plugin does not support plugin tokens (its JWKS endpoint answered 404)")]
    NotSupported,
}

#[derive(Default)]
struct State {
    keys: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
    forced: VecDeque<Instant>,
}

/// One remote key set.
pub struct RemoteKeySet {
    url: url::Url,
    http: reqwest::Client,
    state: Mutex<State>,
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeySet {
    pub fn new(url: url::Url, http: reqwest::Client) -> Self {
        RemoteKeySet {
            url,
            http,
            state: Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// GETs the set; 404 is [`KeySetError::NotSupported`] (the plugin support probe of §2.5).
    pub async fn fetch(&self) -> Result<(), KeySetError> {
        let _one = self.fetching.lock().await;
        let resp = self
            .http
            .get(self.url.clone())
            .header("accept", "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| KeySetError::Fetch(crate::idp::describe_reqwest(&e)))?;
        if resp.status().as_u16() == 404 {
            return Err(KeySetError::NotSupported);
        }
        if !resp.status().is_success() {
            return Err(KeySetError::Fetch(format!(
                "HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = crate::idp::read_limited(resp, MAX_JWKS_BYTES)
            .await
            .map_err(KeySetError::Fetch)?;
        let keys = parse_set(&body).ok_or(KeySetError::Malformed)?;
        let mut st = self.state();
        st.keys = keys;
        st.fetched_at = Some(Instant::now());
        Ok(())
    }

    fn select(&self, alg: Algorithm, alg_name: &str, kid: Option<&str>) -> Vec<Arc<Key>> {
        self.state()
            .keys
            .iter()
            .filter(|k| k.fits(alg, alg_name, kid))
            .cloned()
            .collect()
    }

    /// The keys that may have signed a token with this header, fetching as jose and
    /// `JwksClient` would.
    pub async fn candidates(
        &self,
        alg: Algorithm,
        alg_name: &str,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<Key>>, KeySetError> {
        let age = self.state().fetched_at.map(|t| t.elapsed());
        if age.is_none_or(|a| a > MAX_AGE) {
            self.fetch().await?;
        }
        let found = self.select(alg, alg_name, kid);
        if !found.is_empty() {
            return Ok(found);
        }
        // A miss: reload unless within the cooldown; during the cooldown a forced reload is
        // allowed at most FORCED_BUDGET times per FORCED_WINDOW.
        let reload = {
            let mut st = self.state();
            let since = st.fetched_at.map(|t| t.elapsed());
            if since.is_none_or(|s| s >= COOLDOWN) {
                true
            } else {
                while st
                    .forced
                    .front()
                    .is_some_and(|t| t.elapsed() > FORCED_WINDOW)
                {
                    st.forced.pop_front();
                }
                if st.forced.len() < FORCED_BUDGET {
                    st.forced.push_back(Instant::now());
                    true
                } else {
                    false
                }
            }
        };
        if reload {
            self.fetch().await?;
        }
        Ok(self.select(alg, alg_name, kid))
    }

    pub fn is_loaded(&self) -> bool {
        self.state().fetched_at.is_some()
    }
}

/// Key sets by URL, at most [`MAX_SETS`] (least recently used evicted).
pub struct KeySets {
    http: reqwest::Client,
    sets: moka::future::Cache<String, Arc<RemoteKeySet>>,
}

impl KeySets {
    pub fn new(http: reqwest::Client) -> Self {
        KeySets {
            http,
            sets: moka::future::Cache::builder()
                .max_capacity(MAX_SETS)
                .build(),
        }
    }

    pub async fn get(&self, url: &url::Url) -> Arc<RemoteKeySet> {
        let http = self.http.clone();
        let u = url.clone();
        self.sets
            .get_with(url.as_str().to_owned(), async move {
                Arc::new(RemoteKeySet::new(u, http))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_jose() {
        let body = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "a", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "b", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"}
        ]});
        let keys = parse_set(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        let fits = |alg, name, kid| keys.iter().filter(|k| k.fits(alg, name, kid)).count();
        assert_eq!(fits(Algorithm::ES256, "ES256", Some("a")), 1);
        assert_eq!(fits(Algorithm::ES256, "ES256", None), 1);
        assert_eq!(fits(Algorithm::ES256, "ES256", Some("b")), 0);
        assert_eq!(fits(Algorithm::HS256, "HS256", Some("a")), 0);
        assert_eq!(fits(Algorithm::HS256, "HS256", Some("h")), 0);
        assert_eq!(fits(Algorithm::RS256, "RS256", Some("a")), 0);
        assert!(parse_set(b"{}").is_none());
    }
}
