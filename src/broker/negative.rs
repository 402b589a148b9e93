//! The negative cache: failed IdP calls remembered for `cache.negativeTtl`, so a repeat of
//! the same request with the same credential gets the same error without a call to Keycloak.

use std::sync::Arc;

use super::{FetchError, IssuedToken};
use crate::digest::KeyDigest;
use crate::idp::IdpError;
use crate::metrics::{CacheKind, CacheResult, Metrics};

/// Failed IdP calls remembered for a short time, keyed like the user cache: by a digest of
/// the subject credential and the request inputs. A repeat of the same request with the same
/// credential gets the same error without a call to Keycloak; a new login is a new token and
/// so a new key, never blocked by an old failure. Local refusals (`Busy`) are not remembered.
pub(super) struct NegativeCache {
    inner: moka::future::Cache<KeyDigest, IdpError>,
    /// Counts the hits (`cache="negative"`): a hit is an error, not an [`IssuedToken`].
    metrics: Metrics,
}

impl NegativeCache {
    pub(super) fn new(ttl: std::time::Duration, max: u64, metrics: Metrics) -> Option<Self> {
        (!ttl.is_zero()).then(|| NegativeCache {
            metrics,
            inner: moka::future::Cache::builder()
                .max_capacity(max)
                .time_to_live(ttl)
                .build(),
        })
    }
}

/// A failure remembered by [`NegativeCache`], or `fetch`'s result (remembering its failure).
pub(super) async fn with_negative<Fut>(
    negative: Option<&NegativeCache>,
    key: KeyDigest,
    fetch: Fut,
) -> Result<Arc<IssuedToken>, FetchError>
where
    Fut: std::future::Future<Output = Result<Arc<IssuedToken>, FetchError>>,
{
    if let Some(n) = negative
        && let Some(e) = n.inner.get(&key).await
    {
        n.metrics
            .cache_request(CacheKind::Negative, CacheResult::Hit);
        return Err(FetchError::Idp(e));
    }
    let result = fetch.await;
    if let (Some(n), Err(FetchError::Idp(e))) = (negative, &result)
        && !matches!(e, IdpError::Busy)
    {
        n.inner.insert(key, e.clone()).await;
    }
    result
}
