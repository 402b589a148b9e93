//! The token caches: bounded maps keyed by digests, with per-entry lifetimes and shared
//! in-flight fetches.
//!
//! Keys are [`KeyDigest`]s built by the caller from the subject credential and every request
//! input, never raw tokens. An entry is served until its `cache_until` (the issued token's
//! expiry, capped at the subject token's expiry, minus the safety margin): every read checks it
//! against our [`Clock`] and removes a stale entry; one whose `cache_until` has already passed
//! on arrival serves the requests that waited for it and nobody after them.
//!
//! Settled entries live in [`store::Store`], a plain sharded map (issue 16 §2: moka's
//! per-entry bookkeeping was ~0.5 KB per user; see that module). Concurrent requests for one
//! key share one fetch through a moka cache that holds only fetches in flight (`moka`'s
//! `or_try_insert_with`): the first runs it, the others wait and get its value (`coalesced`) or
//! its error, which is not cached; the first then moves the value into the store.
//!
//! Logout (issue 13): every user entry carries a [`SubjectIndex`] — digests of the subject's
//! `sub` and `sid`, never the values — so [`TokenCache::evict_session`] and
//! [`TokenCache::evict_subject`] drop every entry derived from one Keycloak session or one user.
//! They are the single eviction entry point (back-channel logout, `/admin/revoke`, and a shared
//! cache relaying evictions between replicas).

mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

use super::IssuedToken;
use crate::clock::Clock;
use crate::digest::{KeyBuilder, KeyDigest};
use crate::metrics::{EvictionCause, Metrics};

/// Where a served token came from (the `X-Token-Broker-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Coalesced,
    /// Not in this replica's cache, found in the shared cache (`cache.shared`, Redis).
    Shared,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Shared => "shared",
        }
    }
}

/// Whose user and session a cache entry derives from, as digests (the eviction index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectIndex {
    pub sub: Option<KeyDigest>,
    pub sid: Option<KeyDigest>,
}

impl SubjectIndex {
    pub fn of(sub: Option<&str>, sid: Option<&str>) -> Self {
        SubjectIndex {
            sub: sub.map(subject_digest),
            sid: sid.map(session_digest),
        }
    }
}

/// Most distinct strings [`shared_str`] keeps.
const SHARED_STRS: usize = 256;

/// One shared copy of a short string that many entries repeat (`token_type`, `scope`, the
/// verifying `kid`: a handful of values per deployment), so an entry holds a pointer instead
/// of its own allocation (issue 16 §2). Past [`SHARED_STRS`] distinct values a string gets its
/// own copy: bigger, never wrong. Never for secrets: the table lives as long as the process.
pub fn shared_str(s: &str) -> Arc<str> {
    static TABLE: parking_lot::Mutex<Vec<Arc<str>>> = parking_lot::Mutex::new(Vec::new());
    let mut table = TABLE.lock();
    if let Some(a) = table.iter().find(|a| &***a == s) {
        return a.clone();
    }
    let a: Arc<str> = Arc::from(s);
    if table.len() < SHARED_STRS {
        table.push(a.clone());
    }
    a
}

/// The index digest of a `sub`.
pub fn subject_digest(sub: &str) -> KeyDigest {
    KeyBuilder::new("index-sub").field(sub.as_bytes()).finish()
}

/// The index digest of a `sid`.
pub fn session_digest(sid: &str) -> KeyDigest {
    KeyBuilder::new("index-sid").field(sid.as_bytes()).finish()
}

/// How long a fetched value may wait in the in-flight cache for its move into the store (the
/// move follows at once; this only bounds a value whose mover was cancelled in between). Its
/// `cache_until` bounds it too ([`UntilCacheDeadline`]), so the in-flight cache never serves a
/// value the store would refuse as stale.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(5);

/// The in-flight cache's per-value lifetime: until the value's `cache_until` (a value already
/// past it on arrival is given only to the requests that waited for it).
struct UntilCacheDeadline {
    clock: Arc<dyn Clock>,
}

impl moka::Expiry<KeyDigest, Arc<IssuedToken>> for UntilCacheDeadline {
    fn expire_after_create(
        &self,
        _key: &KeyDigest,
        value: &Arc<IssuedToken>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.cache_until.saturating_sub(self.clock.now_unix()),
        ))
    }
}

/// Most values waiting in the in-flight cache.
const IN_FLIGHT_ENTRIES: u64 = 10_000;

/// One cache of issued tokens.
pub struct TokenCache {
    store: store::Store,
    /// Fetches in flight (coalescing) and, for a moment, their values.
    in_flight: Cache<KeyDigest, Arc<IssuedToken>>,
    /// Counts evictions (logout, revocation, rotated-out keys): a fetch during which one ran is
    /// served to its waiters but not kept, since the eviction may have been meant for it.
    evictions: AtomicU64,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
}

impl TokenCache {
    /// `metrics` counts the entries the size bound or their deadline removes.
    pub fn new(max_entries: u64, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        let in_flight = Cache::builder()
            .max_capacity(IN_FLIGHT_ENTRIES)
            .time_to_live(IN_FLIGHT_TTL)
            .expire_after(UntilCacheDeadline {
                clock: clock.clone(),
            })
            .support_invalidation_closures()
            .build();
        TokenCache {
            store: store::Store::new(max_entries),
            in_flight,
            evictions: AtomicU64::new(0),
            clock,
            metrics,
        }
    }

    /// The cached token for `key` or the result of `fetch`, shared with concurrent callers.
    pub async fn get_or_fetch<E, Fut>(
        &self,
        key: KeyDigest,
        fetch: Fut,
    ) -> Result<(Arc<IssuedToken>, CacheStatus), Arc<E>>
    where
        E: Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<IssuedToken>, E>>,
    {
        self.get_or_fetch_until(key, u64::MAX, fetch).await
    }

    /// [`TokenCache::get_or_fetch`] for a requester whose own credential ends earlier than the
    /// entry may: a cached entry is served only while now < `min(cache_until, until)`, else it
    /// is replaced by `fetch` (`cache.key: session`, where one entry serves several subject
    /// tokens: the presenting token caps it, as its own entry would be).
    pub async fn get_or_fetch_until<E, Fut>(
        &self,
        key: KeyDigest,
        until: u64,
        fetch: Fut,
    ) -> Result<(Arc<IssuedToken>, CacheStatus), Arc<E>>
    where
        E: Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<IssuedToken>, E>>,
    {
        if let Some(v) = self.fresh_until(&key, until).await {
            return Ok((v, CacheStatus::Hit));
        }
        let evictions = self.evictions.load(Ordering::SeqCst);
        let entry = self.in_flight.entry(key).or_try_insert_with(fetch).await?;
        if !entry.is_fresh() {
            return Ok((entry.into_value(), CacheStatus::Coalesced));
        }
        let value = entry.into_value();
        // Kept only if no eviction ran meanwhile (checked after the insert: an eviction after
        // the check finds the entry in the store).
        self.store
            .insert(key, value.clone(), self.clock.now_unix(), |cause| {
                self.metrics.cache_eviction(cause)
            });
        if self.evictions.load(Ordering::SeqCst) != evictions {
            self.store.remove(&key);
        }
        self.in_flight.invalidate(&key).await;
        Ok((value, CacheStatus::Miss))
    }

    /// A cached entry that is still fresh by our clock.
    pub async fn fresh(&self, key: &KeyDigest) -> Option<Arc<IssuedToken>> {
        self.fresh_until(key, u64::MAX).await
    }

    /// [`Self::fresh`] for a requester whose own credential ends at `until`
    /// ([`Self::get_or_fetch_until`]).
    pub async fn fresh_until(&self, key: &KeyDigest, until: u64) -> Option<Arc<IssuedToken>> {
        let v = self.store.get(key)?;
        let now = self.clock.now_unix();
        if v.cache_until.min(until) > now {
            Some(v)
        } else {
            // Past its own deadline: what moka's timer used to remove (counted as expired).
            if self.store.remove(key).is_some() && v.cache_until <= now {
                self.metrics.cache_eviction(EvictionCause::Expired);
            }
            None
        }
    }

    /// Drops every entry derived from a subject token verified with one of `kids`: those keys
    /// left the issuer's JWKS, so the subject tokens no longer verify (issue 6, rotation).
    pub fn drop_subject_kids(&self, kids: &[String]) {
        if kids.is_empty() {
            return;
        }
        let kids = kids.to_vec();
        self.evict_where(move |v| {
            v.subject_kid
                .as_ref()
                .is_some_and(|k| kids.iter().any(|x| x.as_str() == &**k))
        });
    }

    /// Drops every entry derived from Keycloak session `sid` (a back-channel logout naming it,
    /// `/admin/revoke {sid}`). Takes effect at once: a later read of such an entry misses.
    pub fn evict_session(&self, sid: &str) {
        self.evict_session_digest(session_digest(sid));
    }

    /// [`Self::evict_session`] by the session's index digest (an eviction relayed by another
    /// replica carries only the digest).
    pub fn evict_session_digest(&self, d: KeyDigest) {
        self.evict_if(move |i| i.sid == Some(d));
    }

    /// Drops every entry derived from user `sub` (a back-channel logout naming only the user,
    /// `/admin/revoke {sub}`).
    pub fn evict_subject(&self, sub: &str) {
        self.evict_subject_digest(subject_digest(sub));
    }

    /// [`Self::evict_subject`] by the user's index digest.
    pub fn evict_subject_digest(&self, d: KeyDigest) {
        self.evict_if(move |i| i.sub == Some(d));
    }

    fn evict_if(&self, hit: impl Fn(&SubjectIndex) -> bool + Send + Sync + 'static) {
        self.evict_where(move |v| hit(&v.index));
    }

    /// Drops every entry `hit` selects, settled or still in flight; a fetch in flight now is
    /// not kept (see `evictions`).
    fn evict_where(&self, hit: impl Fn(&IssuedToken) -> bool + Send + Sync + 'static) {
        self.evictions.fetch_add(1, Ordering::SeqCst);
        self.store.retain(|v| !hit(v));
        if let Err(e) = self.in_flight.invalidate_entries_if(move |_, v| hit(v)) {
            tracing::warn!(error = %e, "could not drop in-flight cache entries of an eviction");
        }
    }

    /// Replaces the entry `key` with `value` if there is one (refresh ahead: an entry evicted
    /// meanwhile, by a logout for instance, stays evicted).
    pub async fn replace_if_present(&self, key: KeyDigest, value: Arc<IssuedToken>) {
        self.store.replace_if_present(&key, value);
    }

    pub async fn invalidate(&self, key: &KeyDigest) {
        self.store.remove(key);
        self.in_flight.invalidate(key).await;
    }

    /// Number of settled entries (a stale one counts until a read or a full shard drops it).
    pub fn entry_count(&self) -> u64 {
        self.store.len() as u64
    }

    pub async fn run_pending_tasks(&self) {
        self.in_flight.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use secrecy::SecretString;

    use super::*;
    use crate::config::TokenType;

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now_unix(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn token(cache_until: u64, sub: &str) -> Arc<IssuedToken> {
        Arc::new(IssuedToken {
            access_token: SecretString::from("a.b.c"),
            token_type: shared_str("Bearer"),
            issued_token_type: TokenType::AccessToken,
            scope: None,
            expires_at: cache_until,
            cache_until,
            created_at: 0,
            fingerprint: "f".into(),
            subject_kid: Some(shared_str("kid-1")),
            index: SubjectIndex::of(Some(sub), None),
        })
    }

    fn cache(now: u64) -> (TokenCache, Arc<TestClock>) {
        let clock = Arc::new(TestClock(AtomicU64::new(now)));
        (
            TokenCache::new(100, clock.clone(), Metrics::default()),
            clock,
        )
    }

    /// A logout while the user's exchange is in flight: the waiting request gets its token,
    /// but it is not kept, so the next request exchanges again (with moka alone the value
    /// inserted after the eviction survived it).
    #[actix_web::test]
    async fn a_fetch_during_an_eviction_is_served_but_not_kept() {
        let (c, _) = cache(10);
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let fetch = async {
            let _ = wait.await;
            Ok::<_, ()>(token(100, "alice"))
        };
        let evict = async {
            tokio::task::yield_now().await;
            c.evict_subject("alice");
            let _ = release.send(());
        };
        let (got, ()) = tokio::join!(c.get_or_fetch([1; 32], fetch), evict);
        let (v, status) = got.unwrap();
        assert_eq!((v.cache_until, status), (100, CacheStatus::Miss));
        assert!(c.fresh(&[1; 32]).await.is_none());
        assert_eq!(c.entry_count(), 0);
        // Without an eviction the value is kept and served as a hit.
        let got = c.get_or_fetch([1; 32], async { Ok::<_, ()>(token(100, "alice")) });
        assert_eq!(got.await.unwrap().1, CacheStatus::Miss);
        let again = c.get_or_fetch([1; 32], async { Ok::<_, ()>(token(100, "alice")) });
        assert_eq!(again.await.unwrap().1, CacheStatus::Hit);
    }

    /// Evictions by subject and by key: only the selected entries go.
    #[actix_web::test]
    async fn evictions_drop_only_the_selected_entries() {
        let (c, _) = cache(10);
        for (k, sub) in [(1u8, "alice"), (2, "bob"), (3, "alice")] {
            let _ = c
                .get_or_fetch([k; 32], async { Ok::<_, ()>(token(100, sub)) })
                .await;
        }
        assert_eq!(c.entry_count(), 3);
        c.evict_subject("alice");
        assert!(c.fresh(&[1; 32]).await.is_none());
        assert!(c.fresh(&[2; 32]).await.is_some());
        c.drop_subject_kids(&["kid-1".to_owned()]);
        assert_eq!(c.entry_count(), 0);
    }

    /// A read past an entry's deadline misses and removes it; a requester whose own
    /// credential ends earlier misses too.
    #[actix_web::test]
    async fn stale_entries_are_not_served() {
        let (c, clock) = cache(10);
        let _ = c
            .get_or_fetch([1; 32], async { Ok::<_, ()>(token(100, "alice")) })
            .await;
        assert!(c.fresh_until(&[1; 32], 10).await.is_none());
        let _ = c
            .get_or_fetch([1; 32], async { Ok::<_, ()>(token(100, "alice")) })
            .await;
        assert!(c.fresh(&[1; 32]).await.is_some());
        clock.0.store(100, Ordering::SeqCst);
        assert!(c.fresh(&[1; 32]).await.is_none());
        assert_eq!(c.entry_count(), 0);
    }

    /// The store stays within its bound: stale entries go first, then those closest to
    /// their deadline; each removal is reported with its cause.
    #[test]
    fn the_store_is_bounded() {
        let s = store::Store::new(4);
        let mut causes = Vec::new();
        for k in 0..4u8 {
            s.insert([k; 32], token(100 + u64::from(k), "u"), 0, |c| {
                causes.push(c)
            });
        }
        s.insert([9; 32], token(200, "u"), 0, |c| causes.push(c));
        assert_eq!(s.len(), 4);
        assert!(s.get(&[0; 32]).is_none(), "the soonest deadline went");
        assert_eq!(causes, [EvictionCause::Size]);
        causes.clear();
        s.insert([10; 32], token(300, "u"), 150, |c| causes.push(c));
        assert_eq!(s.len(), 2, "the three stale entries went");
        assert_eq!(causes, [EvictionCause::Expired; 3]);
        let large = store::Store::new(100_000);
        for k in 0..200_000u32 {
            let key = crate::digest::sha256(&k.to_be_bytes());
            large.insert(key, token(100, "u"), 0, |_| {});
        }
        assert!(large.len() <= 100_000 * 9 / 8 + 16, "{}", large.len());
    }
}
