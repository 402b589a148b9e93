//! Where [`super::TokenCache`] keeps its settled entries (issue 16 §2): a bounded, sharded map
//! from a [`KeyDigest`] to the issued token.
//!
//! Why not moka, as the in-flight coalescing still uses: moka's per-entry bookkeeping (its own
//! key copy, the access-order, write-order and timer-wheel nodes, the entry info) is ~0.5 KB per
//! entry, measured with `bench_peers --only-users 1` (docs/benchmarks.md): 50 MB at 100 000
//! users. Here an entry is its key and one `Arc` in a `HashMap` slot. What moka's timer bought,
//! removing an entry at its deadline, the readers already do: every read checks `cache_until`
//! against our clock and removes a stale entry; and a full shard first drops its stale entries.
//! When that is not enough it drops the eighth that would go stale soonest (those are
//! exchanged again when next asked for: slower, never wrong).
//!
//! The key is already a SHA-256, so its first 8 bytes are the map's hash: uniform, free, and
//! not aimable (a key digests the requester's credential and request).

use std::sync::Arc;

use parking_lot::Mutex;

use super::super::IssuedToken;
use crate::digest::{DigestKey, DigestMap, KeyDigest, make_room};
use crate::metrics::EvictionCause;

type Shard = DigestMap<Arc<IssuedToken>>;

pub(super) struct Store {
    shards: Box<[Mutex<Shard>]>,
    shard_entries: usize,
}

impl Store {
    /// Holds about `max_entries` (a large cache is sharded, and its shards may each hold an
    /// eighth more than an even share, since keys do not spread exactly evenly).
    pub fn new(max_entries: u64) -> Self {
        let max = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        let (shards, shard_entries) = if max < 1024 {
            (1, max)
        } else {
            (16, max.div_ceil(16).saturating_mul(9) / 8)
        };
        Store {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_entries,
        }
    }

    fn shard(&self, key: &KeyDigest) -> Option<&Mutex<Shard>> {
        // Byte 8: independent of the bytes the map hashes.
        self.shards.get(usize::from(key[8]) % self.shards.len())
    }

    pub fn get(&self, key: &KeyDigest) -> Option<Arc<IssuedToken>> {
        self.shard(key)?.lock().get(&DigestKey(*key)).cloned()
    }

    pub fn remove(&self, key: &KeyDigest) -> Option<Arc<IssuedToken>> {
        self.shard(key)?.lock().remove(&DigestKey(*key))
    }

    /// Inserts or replaces `key`; a full shard first frees room (`now`: Unix seconds), each
    /// entry it drops reported to `evicted`.
    pub fn insert(
        &self,
        key: KeyDigest,
        value: Arc<IssuedToken>,
        now: u64,
        mut evicted: impl FnMut(EvictionCause),
    ) {
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock();
        let key = DigestKey(key);
        if shard.len() >= self.shard_entries && !shard.contains_key(&key) {
            make_room(
                &mut shard,
                self.shard_entries,
                now,
                |v| v.cache_until,
                |expired| {
                    evicted(if expired {
                        EvictionCause::Expired
                    } else {
                        EvictionCause::Size
                    })
                },
            );
        }
        shard.insert(key, value);
    }

    /// Replaces `key` with `value` only if it is present.
    pub fn replace_if_present(&self, key: &KeyDigest, value: Arc<IssuedToken>) {
        if let Some(shard) = self.shard(key)
            && let Some(v) = shard.lock().get_mut(&DigestKey(*key))
        {
            *v = value;
        }
    }

    /// Keeps only the entries `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&IssuedToken) -> bool) {
        for shard in self.shards.iter() {
            shard.lock().retain(|_, v| keep(v));
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
