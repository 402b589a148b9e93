//! The limit on forced refreshes: how often a cache entry may be dropped because a target
//! refused its token (an upstream 401 in proxy mode), so a target that refuses everything costs
//! one extra exchange per entry and interval, not one per call.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::digest::KeyDigest;

/// The shortest time between two forced refreshes of one cache entry after a target refused
/// its token (an upstream 401 in proxy mode). Within it, a refused token is not exchanged
/// again: the refusal goes to the caller, and the entry lives on until its own deadline.
pub const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Entries the forced-refresh limiter remembers at most. When it is full of entries refreshed
/// within the interval, further forced refreshes are refused (fail closed: the tokens still
/// expire on their own), so the limiter's memory is bounded whatever callers send.
pub(super) const FORCED_REFRESH_MAX_KEYS: usize = 10_000;

/// When each cache entry was last dropped because its token was refused.
pub(super) struct ForcedRefreshLimiter {
    last: Mutex<HashMap<KeyDigest, Instant>>,
    interval: Duration,
    max_keys: usize,
}

impl ForcedRefreshLimiter {
    pub(super) fn new(interval: Duration, max_keys: usize) -> Self {
        ForcedRefreshLimiter {
            last: Mutex::new(HashMap::new()),
            interval,
            max_keys,
        }
    }

    /// May `key` be refreshed now? Records the refresh when it may.
    pub(super) fn allow(&self, key: &KeyDigest, now: Instant) -> bool {
        let mut last = self.last.lock();
        let recent = |t: &Instant| now.saturating_duration_since(*t) < self.interval;
        if last.get(key).is_some_and(recent) {
            return false;
        }
        if last.len() >= self.max_keys && !last.contains_key(key) {
            last.retain(|_, t| recent(t));
            if last.len() >= self.max_keys {
                return false;
            }
        }
        last.insert(*key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_refresh_is_limited_per_key_and_bounded() {
        let l = ForcedRefreshLimiter::new(Duration::from_secs(5), 2);
        let t0 = Instant::now();
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert!(l.allow(&a, t0));
        assert!(
            !l.allow(&a, t0 + Duration::from_secs(4)),
            "within the interval"
        );
        assert!(l.allow(&b, t0), "another key is independent");
        // Full of recent keys: a new key is refused (fail closed), an old one never grows it.
        assert!(!l.allow(&c, t0 + Duration::from_secs(1)));
        assert!(
            l.allow(&a, t0 + Duration::from_secs(5)),
            "after the interval"
        );
        // Once the recent ones are stale, room is made.
        assert!(l.allow(&c, t0 + Duration::from_secs(11)));
    }
}
