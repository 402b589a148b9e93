//! The token caches: bounded moka caches keyed by digests, with per-entry lifetimes and
//! shared in-flight fetches.
//!
//! Keys are [`KeyDigest`]s built by the caller from the subject credential and every request
//! input, never raw tokens. An entry lives until its `cache_until` (the issued token's expiry,
//! capped at the subject token's expiry, minus the safety margin); one whose `cache_until` has
//! already passed on arrival is inserted with a zero lifetime, so it serves the requests that
//! waited for it and nobody after them. Reads re-check `cache_until` against our [`Clock`],
//! because moka's own timer is coarse.
//!
//! Concurrent requests for one key share one fetch (`moka`'s `or_try_insert_with`): the first
//! runs it, the others wait and get its value (`coalesced`) or its error, which is not cached.
//!
//! Logout (issue 13): every user entry carries a [`SubjectIndex`] — digests of the subject's
//! `sub` and `sid`, never the values — so [`TokenCache::evict_session`] and
//! [`TokenCache::evict_subject`] drop every entry derived from one Keycloak session or one user.
//! They are the single eviction entry point (back-channel logout, `/admin/revoke`, and a shared
//! cache relaying evictions between replicas).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
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

/// The index digest of a `sub`.
pub fn subject_digest(sub: &str) -> KeyDigest {
    KeyBuilder::new("index-sub").field(sub.as_bytes()).finish()
}

/// The index digest of a `sid`.
pub fn session_digest(sid: &str) -> KeyDigest {
    KeyBuilder::new("index-sid").field(sid.as_bytes()).finish()
}

struct UntilCacheDeadline {
    clock: Arc<dyn Clock>,
}

impl Expiry<KeyDigest, Arc<IssuedToken>> for UntilCacheDeadline {
    fn expire_after_create(
        &self,
        _key: &KeyDigest,
        value: &Arc<IssuedToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.cache_until.saturating_sub(self.clock.now_unix()),
        ))
    }

    /// A replaced entry (refresh ahead) lives by its new value's deadline, not the old one's
    /// (moka's default keeps the old expiry).
    fn expire_after_update(
        &self,
        key: &KeyDigest,
        value: &Arc<IssuedToken>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

/// One cache of issued tokens.
pub struct TokenCache {
    inner: Cache<KeyDigest, Arc<IssuedToken>>,
    clock: Arc<dyn Clock>,
}

impl TokenCache {
    /// `metrics` counts the entries the size bound or their deadline removes.
    pub fn new(max_entries: u64, clock: Arc<dyn Clock>, metrics: Metrics) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_entries)
            .support_invalidation_closures()
            .expire_after(UntilCacheDeadline {
                clock: clock.clone(),
            })
            .eviction_listener(move |_key, _value, cause| match cause {
                moka::notification::RemovalCause::Size => {
                    metrics.cache_eviction(EvictionCause::Size)
                }
                moka::notification::RemovalCause::Expired => {
                    metrics.cache_eviction(EvictionCause::Expired)
                }
                _ => {}
            })
            .build();
        TokenCache { inner, clock }
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
        let entry = self.inner.entry(key).or_try_insert_with(fetch).await?;
        let status = if entry.is_fresh() {
            CacheStatus::Miss
        } else {
            CacheStatus::Coalesced
        };
        Ok((entry.into_value(), status))
    }

    /// A cached entry that is still fresh by our clock.
    pub async fn fresh(&self, key: &KeyDigest) -> Option<Arc<IssuedToken>> {
        self.fresh_until(key, u64::MAX).await
    }

    /// [`Self::fresh`] for a requester whose own credential ends at `until`
    /// ([`Self::get_or_fetch_until`]).
    pub async fn fresh_until(&self, key: &KeyDigest, until: u64) -> Option<Arc<IssuedToken>> {
        let v = self.inner.get(key).await?;
        if v.cache_until.min(until) > self.clock.now_unix() {
            Some(v)
        } else {
            self.inner.invalidate(key).await;
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
        let dropped = self.inner.invalidate_entries_if(move |_, v| {
            v.subject_kid
                .as_ref()
                .is_some_and(|k| kids.iter().any(|x| x == k))
        });
        if let Err(e) = dropped {
            tracing::warn!(error = %e, "could not drop cache entries of removed keys");
        }
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
        if let Err(e) = self.inner.invalidate_entries_if(move |_, v| hit(&v.index)) {
            tracing::warn!(error = %e, "could not drop cache entries of a logout");
        }
    }

    /// Replaces the entry `key` with `value` if there is one (refresh ahead: an entry evicted
    /// meanwhile, by a logout for instance, stays evicted).
    pub async fn replace_if_present(&self, key: KeyDigest, value: Arc<IssuedToken>) {
        if self.inner.get(&key).await.is_some() {
            self.inner.insert(key, value).await;
        }
    }

    pub async fn invalidate(&self, key: &KeyDigest) {
        self.inner.invalidate(key).await;
    }

    /// Approximate number of entries (moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }
}
