//! The identity providers' key sets for the JWT authorization grant
//! (docs/reference/keycloak-token-exchange.md
//! §6): fetched over HTTP from each provider's JWKS URL and cached per URL. A cached set is
//! refetched only when it lacks the assertion's `kid`, at most once per
//! [`JWKS_REFETCH_COOLDOWN`]; a failed refetch keeps the stale set (the unknown `kid` then fails
//! verification).

use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Minimum time between two fetches of one JWKS URL for an unknown `kid`.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(10);

/// One identity provider's key set, as last fetched.
#[derive(Clone, Debug)]
struct CachedJwks {
    fetched: Instant,
    keys: Value,
}

/// The cache, with the HTTP client that fills it.
#[derive(Debug)]
pub struct IdpJwks {
    http: reqwest::Client,
    sets: Mutex<HashMap<String, CachedJwks>>,
}

impl IdpJwks {
    pub fn new() -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            http,
            sets: Mutex::new(HashMap::new()),
        })
    }

    /// A poisoned lock only means another thread panicked mid-update; the cache is still
    /// usable.
    fn sets(&self) -> MutexGuard<'_, HashMap<String, CachedJwks>> {
        self.sets.lock()
    }

    /// The IdP's outbound HTTP client (no redirects, 5 s deadline), also used for
    /// back-channel logout deliveries.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Drops the cached set of `url` (its provider was replaced).
    pub fn forget(&self, url: &str) {
        self.sets().remove(url);
    }

    /// The cached key set of `url`, refetched when it lacks `kid` (cooldown permitting).
    pub async fn get(&self, url: &str, kid: Option<&str>) -> Result<Value, String> {
        let cached = self.sets().get(url).cloned();
        if let Some(c) = &cached {
            let known = kid.is_none_or(|k| has_kid(&c.keys, k));
            if known || c.fetched.elapsed() < JWKS_REFETCH_COOLDOWN {
                return Ok(c.keys.clone());
            }
        }
        match self.fetch(url).await {
            Ok(keys) => {
                self.sets().insert(
                    url.to_owned(),
                    CachedJwks {
                        fetched: Instant::now(),
                        keys: keys.clone(),
                    },
                );
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(jwks_url = url, error = %e, "dev IdP could not fetch an identity provider's JWKS");
                // A stale set is better than none (the unknown kid then fails verification).
                cached.map(|c| c.keys).ok_or(e)
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<Value, String> {
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if v.get("keys").is_some_and(Value::is_array) {
            Ok(v)
        } else {
            Err("not a JWKS document".to_owned())
        }
    }
}

fn has_kid(jwks: &Value, kid: &str) -> bool {
    jwks.get("keys")
        .and_then(Value::as_array)
        .is_some_and(|keys| keys.iter().any(|k| k.get("kid") == Some(&Value::from(kid))))
}
