//! Refresh ahead (`cache.refreshAhead`, issue 13): a user-cache entry read in the last part of
//! its life (that percentage of the time between its creation and its cache deadline) is
//! renewed once, in the background, by the same exchange, so a user who keeps calling never
//! meets a miss. Only reads trigger it (an entry nobody reads just expires), each entry
//! instance at most once (its key and token fingerprint are remembered), and the renewal goes
//! through the IdP layer's concurrency bound like any exchange: over the bound it fails fast
//! and the entry simply expires as without refresh ahead.

use std::time::Duration;

use super::IssuedToken;
use crate::digest::{KeyBuilder, KeyDigest};

/// Which entries are due, and which renewals have been started.
pub(super) struct RefreshAhead {
    percent: u64,
    started: moka::sync::Cache<KeyDigest, ()>,
}

impl RefreshAhead {
    pub(super) fn new(percent: Option<u8>, max_entries: u64) -> Option<Self> {
        percent.map(|p| RefreshAhead {
            percent: u64::from(p),
            // A renewal mark outlives any cache entry's remaining life in practice; stale
            // marks only name entries that no longer exist.
            started: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        })
    }

    /// Whether `token`, just served from the entry `key` at `now`, is due for renewal and
    /// nobody has started it: then the caller renews (this claims it, atomically).
    pub(super) fn claim(&self, key: &KeyDigest, token: &IssuedToken, now: u64) -> bool {
        let life = token.cache_until.saturating_sub(token.created_at);
        let left = token.cache_until.saturating_sub(now);
        if life == 0 || left.saturating_mul(100) > life.saturating_mul(self.percent) {
            return false;
        }
        let mark = KeyBuilder::new("refresh-ahead")
            .field(key)
            .field(token.fingerprint.as_bytes())
            .finish();
        self.started.entry(mark).or_insert(()).is_fresh()
    }
}
