//! Remote JSON Web Key Sets cached the way Backstage caches them: jose `createRemoteJWKSet`
//! defaults (max age 10 min, cooldown 30 s, fetch timeout 5 s), plus backend-defaults'
//! `JwksClient` forced reload on a `kid` miss during the cooldown (at most 10 per 60 s for the
//! whole client, not per set) and at most 100 key sets. Key selection is jose's `LocalJWKSet`:
//! the JWK's `kty` (and curve) must fit the header `alg`, `kid` must match when the header has
//! one, the JWK's `alg` must equal the header's when present, `use` must be `sig` if present;
//! every matching key is tried. URLs come only from configuration (docs/backstage-integration.md).
//!
//! A plugin token's unverified `sub` chooses which plugin's set is needed, so an anonymous
//! caller decides which URL the broker fetches. Fetches are therefore bounded on top of
//! Backstage's rules (docs/security.md, "Forged plugin tokens driving key-set fetches"):
//! - **single flight per URL**: one fetch at a time; a caller that waited for it re-checks
//!   after taking the lock and shares the outcome of the fetch it waited for;
//! - **negative cache**: a failed fetch (network error, non-2xx, 404, malformed body) is
//!   remembered per URL for [`Limits::negative_ttl`]; within it the remembered error is the
//!   answer and nothing is fetched;
//! - **global budget for unseen URLs**: a fetch of a URL that has never served a key set (a
//!   plugin id met for the first time, or one whose set never loaded) takes a token from one
//!   bucket shared by all sets ([`Limits::new_set_burst`] at once, then one per
//!   [`Limits::new_set_interval`]); without a token the request fails closed and no set is
//!   created. URLs that served a set once (remembered, bounded) and exempt URLs (configured
//!   ones: the auth backend, `jwks` handlers, plugins named exactly in `trustedPlugins`) never
//!   need a token;
//! - the forced-reload budget belongs to all sets together, so a new set brings no new budget.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;

use crate::outbound::{Outbound, Request};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The bounds of [`KeySets`]; [`Limits::default`] is what the broker runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// jose `cacheMaxAge`: a set older than this is fetched again before use.
    pub max_age: Duration,
    /// jose `cooldownDuration`: after a fetch, a `kid` miss reloads only from the forced budget.
    pub cooldown: Duration,
    /// jose `timeoutDuration`: one fetch, connect to last byte.
    pub fetch_timeout: Duration,
    /// `JwksClient`: forced reloads per [`Self::forced_window`], for all sets together.
    pub forced_budget: usize,
    pub forced_window: Duration,
    /// `JwksClient`: sets kept (least recently used evicted).
    pub max_sets: u64,
    /// How long a failed fetch is the answer for its URL.
    pub negative_ttl: Duration,
    /// Fetches of never-loaded URLs allowed at once, then one more per
    /// [`Self::new_set_interval`].
    pub new_set_burst: u32,
    pub new_set_interval: Duration,
    /// URLs remembered as having served a set (exempt from the budget above).
    pub known_urls: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_age: Duration::from_secs(600),
            cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            forced_budget: 10,
            forced_window: Duration::from_secs(60),
            max_sets: 100,
            negative_ttl: Duration::from_secs(10),
            new_set_burst: 10,
            new_set_interval: Duration::from_secs(6),
            known_urls: 1000,
        }
    }
}
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

/// Why no keys could be had; never contains token material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("the key set could not be fetched: {0}")]
    Fetch(String),
    #[error("the key set is not a JSON object with a keys array")]
    Malformed,
    #[error("the plugin does not support plugin tokens (its JWKS endpoint answered 404)")]
    NotSupported,
    #[error("too many key sets never seen before were asked for; this one was not fetched")]
    Throttled,
}

/// The budgets shared by every set of one [`KeySets`].
struct Budget {
    /// Tokens left for fetches of never-loaded URLs, and when the last one was added.
    new_available: u32,
    new_refilled: Instant,
    /// A refusal has been logged since the bucket last gave a token (one warning per episode).
    throttling: bool,
    /// Forced reloads within the window, oldest first.
    forced: VecDeque<Instant>,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Budget {
            new_available: limits.new_set_burst,
            new_refilled: Instant::now(),
            throttling: false,
            forced: VecDeque::new(),
        }
    }

    /// Adds the tokens earned since the last refill (token bucket).
    fn refill(&mut self, limits: &Limits, now: Instant) {
        if self.new_available >= limits.new_set_burst {
            self.new_refilled = now;
            return;
        }
        let interval = limits.new_set_interval.max(Duration::from_millis(1));
        let earned =
            now.saturating_duration_since(self.new_refilled).as_nanos() / interval.as_nanos();
        if earned == 0 {
            return;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        self.new_available = self
            .new_available
            .saturating_add(earned)
            .min(limits.new_set_burst);
        self.new_refilled = if self.new_available >= limits.new_set_burst {
            now
        } else {
            self.new_refilled + interval.saturating_mul(earned)
        };
    }

    fn new_available(&mut self, limits: &Limits) -> bool {
        self.refill(limits, Instant::now());
        self.new_available > 0
    }

    fn take_new(&mut self, limits: &Limits) -> bool {
        self.refill(limits, Instant::now());
        if self.new_available == 0 {
            return false;
        }
        self.new_available -= 1;
        self.throttling = false;
        true
    }

    /// `JwksClient`'s forced reload: at most `forced_budget` per `forced_window`.
    fn take_forced(&mut self, limits: &Limits) -> bool {
        while self
            .forced
            .front()
            .is_some_and(|t| t.elapsed() > limits.forced_window)
        {
            self.forced.pop_front();
        }
        if self.forced.len() < limits.forced_budget {
            self.forced.push_back(Instant::now());
            true
        } else {
            false
        }
    }
}

struct Shared {
    outbound: Arc<Outbound>,
    limits: Limits,
    budget: Mutex<Budget>,
    /// URLs that have served a key set at least once: their fetches need no budget.
    known: moka::sync::Cache<String, ()>,
}

impl Shared {
    fn budget(&self) -> parking_lot::MutexGuard<'_, Budget> {
        self.budget.lock()
    }

    /// Takes a token for a fetch of a never-loaded URL; logs the first refusal of an episode.
    fn take_new(&self, url: &url::Url) -> bool {
        let mut b = self.budget();
        if b.take_new(&self.limits) {
            return true;
        }
        if !b.throttling {
            b.throttling = true;
            drop(b);
            tracing::warn!(
                url = %url,
                "key sets never seen before are being asked for faster than allowed \
                 (forged plugin tokens?): refusing such tokens without fetching until the \
                 budget refills"
            );
        }
        false
    }
}

/// Why a set is being refreshed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Never loaded, or older than the max age.
    Load,
    /// Loaded, but no key fits the token's header.
    Miss,
}

#[derive(Default)]
struct State {
    keys: Vec<Arc<Key>>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last fetch, if it failed (cleared by a success).
    failed: Option<(Instant, KeySetError)>,
    /// Fetch attempts finished: a waiter that saw another number shares that fetch's outcome.
    attempts: u64,
}

/// One remote key set.
pub struct RemoteKeySet {
    url: url::Url,
    shared: Arc<Shared>,
    state: Mutex<State>,
    fetching: tokio::sync::Mutex<()>,
}

impl RemoteKeySet {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// GETs the set; 404 is [`KeySetError::NotSupported`] (Backstage's plugin support probe).
    async fn get(&self) -> Result<Vec<Arc<Key>>, KeySetError> {
        // Unbounded by `keycloak.maxConcurrentRequests` and unmeasured as an IdP call: these
        // fetches have their own limits (negative cache, single flight, budget) here. The
        // body read is inside the same deadline as the request (`timeout`).
        let answer = self
            .shared
            .outbound
            .send(Request {
                timeout: Some(self.shared.limits.fetch_timeout),
                ..Request::get_json(self.url.clone(), MAX_JWKS_BYTES)
            })
            .await
            .map_err(|e| KeySetError::Fetch(e.to_string()))?;
        if answer.status == 404 {
            return Err(KeySetError::NotSupported);
        }
        if !(200..300).contains(&answer.status) {
            return Err(KeySetError::Fetch(format!("HTTP {}", answer.status)));
        }
        parse_set(&answer.body).ok_or(KeySetError::Malformed)
    }

    /// Fetches the set unless the fetch is not needed any more or not allowed. `seen` is
    /// [`State::attempts`] as the caller saw it when it decided that it needed a fetch.
    async fn refresh(&self, seen: u64, need: Need, exempt: bool) -> Result<(), KeySetError> {
        let limits = &self.shared.limits;
        let _one = self.fetching.lock().await;
        {
            let st = self.state();
            if st.attempts != seen {
                // Single flight: a fetch finished while this caller waited; its outcome is
                // this caller's too.
                return match &st.failed {
                    Some((_, e)) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            if let Some((at, e)) = &st.failed
                && at.elapsed() < limits.negative_ttl
            {
                return Err(e.clone());
            }
            if need == Need::Miss
                && st.fetched_at.is_some_and(|t| t.elapsed() < limits.cooldown)
                && !self.shared.budget().take_forced(limits)
            {
                // Within the cooldown and the forced budget is spent: no reload (jose).
                return Ok(());
            }
            let never_loaded =
                st.fetched_at.is_none() && !self.shared.known.contains_key(self.url.as_str());
            drop(st);
            if never_loaded && !exempt && !self.shared.take_new(&self.url) {
                return Err(KeySetError::Throttled);
            }
        }
        let outcome = self.get().await;
        let mut st = self.state();
        st.attempts += 1;
        match outcome {
            Ok(keys) => {
                st.keys = keys;
                st.fetched_at = Some(Instant::now());
                st.failed = None;
                drop(st);
                self.shared.known.insert(self.url.as_str().to_owned(), ());
                Ok(())
            }
            Err(e) => {
                st.failed = Some((Instant::now(), e.clone()));
                drop(st);
                tracing::warn!(url = %self.url, error = %e, "Backstage key set fetch failed");
                Err(e)
            }
        }
    }

    /// The keys fitting the header, with [`State::attempts`] at the time of selection.
    fn select(&self, alg: Algorithm, alg_name: &str, kid: Option<&str>) -> (Vec<Arc<Key>>, u64) {
        let st = self.state();
        let keys = st
            .keys
            .iter()
            .filter(|k| k.fits(alg, alg_name, kid))
            .cloned()
            .collect();
        (keys, st.attempts)
    }

    /// The keys that may have signed a token with this header, fetching as jose and
    /// `JwksClient` would, within the bounds of the module doc. `exempt`: the URL comes from
    /// configuration, not only from a token (no budget for unseen URLs).
    pub async fn candidates(
        &self,
        alg: Algorithm,
        alg_name: &str,
        kid: Option<&str>,
        exempt: bool,
    ) -> Result<Vec<Arc<Key>>, KeySetError> {
        let (seen, stale) = {
            let st = self.state();
            let stale = st
                .fetched_at
                .is_none_or(|t| t.elapsed() > self.shared.limits.max_age);
            (st.attempts, stale)
        };
        if stale {
            self.refresh(seen, Need::Load, exempt).await?;
        }
        let (found, seen) = self.select(alg, alg_name, kid);
        if !found.is_empty() {
            return Ok(found);
        }
        self.refresh(seen, Need::Miss, exempt).await?;
        Ok(self.select(alg, alg_name, kid).0)
    }

    pub fn is_loaded(&self) -> bool {
        self.state().fetched_at.is_some()
    }
}

/// Key sets by URL, at most [`Limits::max_sets`] (least recently used evicted), with the
/// budgets they share.
pub struct KeySets {
    shared: Arc<Shared>,
    sets: moka::future::Cache<String, Arc<RemoteKeySet>>,
}

impl KeySets {
    pub fn new(outbound: Arc<Outbound>) -> Self {
        Self::with_limits(outbound, Limits::default())
    }

    pub fn with_limits(outbound: Arc<Outbound>, limits: Limits) -> Self {
        KeySets {
            shared: Arc::new(Shared {
                outbound,
                limits,
                budget: Mutex::new(Budget::new(&limits)),
                known: moka::sync::Cache::builder()
                    .max_capacity(limits.known_urls)
                    .build(),
            }),
            sets: moka::future::Cache::builder()
                .max_capacity(limits.max_sets)
                .build(),
        }
    }

    /// The set at `url`. A set that would need a budget token when none is left is not even
    /// created ([`KeySetError::Throttled`]), so a flood of unseen URLs cannot evict the sets
    /// genuine callers use. `exempt` as in [`RemoteKeySet::candidates`].
    pub async fn get(
        &self,
        url: &url::Url,
        exempt: bool,
    ) -> Result<Arc<RemoteKeySet>, KeySetError> {
        if let Some(set) = self.sets.get(url.as_str()).await {
            return Ok(set);
        }
        if !exempt
            && !self.shared.known.contains_key(url.as_str())
            && !self.shared.budget().new_available(&self.shared.limits)
        {
            // Counted as a refusal by the bucket (one warning per episode).
            self.shared.take_new(url);
            return Err(KeySetError::Throttled);
        }
        let shared = self.shared.clone();
        let u = url.clone();
        Ok(self
            .sets
            .get_with(url.as_str().to_owned(), async move {
                Arc::new(RemoteKeySet {
                    url: u,
                    shared,
                    state: Mutex::new(State::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
            })
            .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_outbound() -> Arc<Outbound> {
        Arc::new(crate::outbound::Outbound::for_tests())
    }

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

    #[test]
    fn unseen_url_bucket_refills_one_token_per_interval() {
        let limits = Limits {
            new_set_burst: 2,
            new_set_interval: Duration::from_secs(10),
            ..Limits::default()
        };
        let mut b = Budget::new(&limits);
        assert!(b.take_new(&limits) && b.take_new(&limits));
        assert!(!b.take_new(&limits));
        // Refills count from the moment the bucket stopped being full.
        let t0 = b.new_refilled;
        b.refill(&limits, t0 + Duration::from_secs(9));
        assert_eq!(b.new_available, 0);
        b.refill(&limits, t0 + Duration::from_secs(15));
        assert_eq!(b.new_available, 1);
        // The 5 s left over count towards the next token.
        b.refill(&limits, t0 + Duration::from_secs(20));
        assert_eq!(b.new_available, 2);
        b.new_available = 0;
        b.refill(&limits, t0 + Duration::from_secs(1000));
        assert_eq!(b.new_available, 2, "never more than the burst");
    }

    const GOOD: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a","alg":"ES256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    /// A JWKS endpoint on 127.0.0.1:0 answering every path with `status` and `body` after
    /// `delay`, counting the requests it receives.
    fn serve(
        delay: Duration,
        status: u16,
        body: &'static str,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use actix_web::{App, HttpResponse, HttpServer, http::StatusCode, web};
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let server = HttpServer::new(move || {
            let h = h.clone();
            App::new().default_service(web::to(move || {
                let h = h.clone();
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    HttpResponse::build(StatusCode::from_u16(status).unwrap())
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        (url, hits)
    }

    fn url(base: &str, path: &str) -> url::Url {
        url::Url::parse(&format!("{base}/{path}")).unwrap()
    }

    fn hits(h: &std::sync::atomic::AtomicUsize) -> usize {
        h.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[actix_web::test]
    async fn waiters_share_one_fetch_and_a_failure_is_remembered_for_the_negative_ttl() {
        let (base, count) = serve(Duration::from_millis(300), 503, "{}");
        let sets = KeySets::with_limits(
            test_outbound(),
            Limits {
                negative_ttl: Duration::from_millis(800),
                ..Limits::default()
            },
        );
        let u = url(&base, "p/jwks.json");
        let set = sets.get(&u, false).await.unwrap();
        let t0 = Instant::now();
        let all = futures_util::future::join_all(
            (0..8).map(|_| set.candidates(Algorithm::ES256, "ES256", Some("a"), false)),
        )
        .await;
        assert!(
            all.iter()
                .all(|r| r.as_ref().err() == Some(&KeySetError::Fetch("HTTP 503".into())))
        );
        assert_eq!(hits(&count), 1, "one fetch for eight waiters");
        assert!(
            t0.elapsed() < Duration::from_millis(700),
            "{:?}",
            t0.elapsed()
        );
        // Remembered: no fetch within the negative TTL ...
        let again = set
            .candidates(Algorithm::ES256, "ES256", Some("a"), false)
            .await;
        assert_eq!(again.err(), Some(KeySetError::Fetch("HTTP 503".into())));
        assert_eq!(hits(&count), 1);
        // ... and fetched again after it.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let _ = set
            .candidates(Algorithm::ES256, "ES256", Some("a"), false)
            .await;
        assert_eq!(hits(&count), 2);
    }

    #[actix_web::test]
    async fn unseen_urls_share_one_budget_and_configured_ones_need_none() {
        let (base, count) = serve(Duration::ZERO, 200, GOOD);
        let sets = KeySets::with_limits(
            test_outbound(),
            Limits {
                new_set_burst: 2,
                new_set_interval: Duration::from_secs(3600),
                ..Limits::default()
            },
        );
        for p in ["a", "b"] {
            let set = sets.get(&url(&base, p), false).await.unwrap();
            let keys = set
                .candidates(Algorithm::ES256, "ES256", Some("a"), false)
                .await;
            assert_eq!(keys.unwrap().len(), 1);
        }
        // The budget is spent: a third unseen URL is refused without a set or a fetch.
        let third = sets.get(&url(&base, "c"), false).await;
        assert_eq!(third.err(), Some(KeySetError::Throttled));
        assert_eq!(hits(&count), 2);
        // A URL that served a set before needs no budget, even as a fresh set.
        let a = url(&base, "a");
        sets.sets.invalidate(a.as_str()).await;
        let set = sets.get(&a, false).await.unwrap();
        assert!(!set.is_loaded());
        let keys = set
            .candidates(Algorithm::ES256, "ES256", Some("a"), false)
            .await;
        assert_eq!(keys.unwrap().len(), 1);
        // A configured URL needs none either.
        let set = sets.get(&url(&base, "configured"), true).await.unwrap();
        let keys = set.candidates(Algorithm::ES256, "ES256", None, true).await;
        assert_eq!(keys.unwrap().len(), 1);
        assert_eq!(hits(&count), 4);
    }

    #[actix_web::test]
    async fn the_forced_reload_budget_is_shared_by_all_sets() {
        let (base, count) = serve(Duration::ZERO, 200, GOOD);
        let sets = KeySets::with_limits(
            test_outbound(),
            Limits {
                forced_budget: 2,
                ..Limits::default()
            },
        );
        let mut all = Vec::new();
        for p in ["a", "b", "c"] {
            let set = sets.get(&url(&base, p), false).await.unwrap();
            // Loads the set (not forced), then a kid miss within the cooldown (forced).
            let keys = set
                .candidates(Algorithm::ES256, "ES256", Some("nope"), false)
                .await;
            assert!(keys.unwrap().is_empty());
            all.push(set);
        }
        // 3 loads + 2 forced reloads: the third set got no budget of its own.
        assert_eq!(hits(&count), 5);
        let keys = all[0]
            .candidates(Algorithm::ES256, "ES256", Some("nope"), false)
            .await;
        assert!(keys.unwrap().is_empty());
        assert_eq!(hits(&count), 5);
    }
}
