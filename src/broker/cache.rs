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

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::IssuedToken;
use crate::clock::Clock;
use crate::digest::KeyDigest;
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
        if let Some(v) = self.fresh(&key).await {
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
        let v = self.inner.get(key).await?;
        if v.cache_until > self.clock.now_unix() {
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
