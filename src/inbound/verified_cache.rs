//! The verified-credential cache's storage (issue 6 §9, issue 16 §2): a bounded map from the
//! SHA-256 of a user token that passed every check to the few facts later requests read.
//!
//! Why not moka, as the exchange cache uses: an entry here is ~150 bytes of facts, and moka's
//! per-entry bookkeeping (its own key copy, the access-order, write-order and timer-wheel nodes,
//! the entry info) cost ~0.5 KB more per entry, i.e. ~50 MB at 100 000 users (measured with
//! `bench_peers --only-users 1`, docs/benchmarks.md). Nothing here needs what that buys: an entry
//! is never updated, its lifetime is its token's `exp` (checked on every read against our clock,
//! as before), and under pressure it is enough to drop the entries closest to their end.
//!
//! Layout: 16 shards, each a `parking_lot::Mutex` over a `HashMap` whose value is a shared
//! [`UserFacts`] (`exp`, the verifying `kid` and `azp` as shared strings, the per-user strings
//! packed into one boxed `str`, flags): a hit hands the request the same `Arc` instead of
//! copying the claims out (issue 16). The key is the token's SHA-256 — never the token — and its first 8
//! bytes are the map's hash: a uniform hash that costs nothing, and one an attacker cannot aim,
//! since only tokens whose signature verified are ever inserted.
//!
//! Bound: at most [`SHARD_ENTRIES`] per shard. A full shard first drops its expired entries;
//! if that frees too little, it drops the eighth of its entries that expire soonest (those
//! tokens are checked in full again when next presented: slower, never wrong).

use std::sync::Arc;

use parking_lot::Mutex;

pub(super) use crate::broker::principal::{Facts, UserFacts};
use crate::digest::{DigestKey, DigestMap, KeyDigest, make_room};

const SHARDS: usize = 16;

/// Entries per shard: 100 000 verified tokens in all, with an eighth of headroom because
/// tokens do not spread over the shards exactly evenly.
pub(super) const SHARD_ENTRIES: usize = 100_000 / SHARDS * 9 / 8;

type Shard = DigestMap<Arc<UserFacts>>;

pub(super) struct VerifiedCache {
    shards: Box<[Mutex<Shard>]>,
}

impl VerifiedCache {
    pub fn new() -> Self {
        VerifiedCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, key: &KeyDigest) -> Option<&Mutex<Shard>> {
        // Byte 8: independent of the bytes the map hashes.
        self.shards.get(usize::from(key[8]) % SHARDS)
    }

    /// The entry for `key`, shared, unless `keep` rejects it (expired, key rotated out):
    /// then it is removed and `None` returned.
    pub fn get(
        &self,
        key: &KeyDigest,
        keep: impl FnOnce(&UserFacts) -> bool,
    ) -> Option<Arc<UserFacts>> {
        let mut shard = self.shard(key)?.lock();
        let k = DigestKey(*key);
        let entry = shard.get(&k)?;
        if keep(entry) {
            return Some(entry.clone());
        }
        shard.remove(&k);
        None
    }

    /// Remembers `entry` under `key`; `now` (Unix seconds) decides which entries a full shard
    /// drops first.
    pub fn insert(&self, key: KeyDigest, entry: Arc<UserFacts>, now: u64) {
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock();
        if shard.len() >= SHARD_ENTRIES && !shard.contains_key(&DigestKey(key)) {
            make_room(&mut shard, SHARD_ENTRIES, now, |e| e.exp, |_| {});
        }
        shard.insert(DigestKey(key), entry);
    }

    /// Entries in all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(f: &Facts<'_>) -> Arc<UserFacts> {
        Arc::new(UserFacts::pack(f).unwrap())
    }

    fn facts(sub: &str, exp: u64) -> Facts<'_> {
        Facts {
            sub,
            exp,
            kid: "Jc1VhkqmFzQ1Aw3h8o3WcXhV0k0M8c6Q2yTq1lq0xgE",
            preferred_username: Some("alice"),
            azp: Some("dev-frontend"),
            sid: Some("5a8b2c4e-9d1f-4e3a-b7c6-0f2e1d3c4b5a"),
            match_value: Some("alice"),
            service_account: false,
            broker_in_aud: true,
        }
    }

    fn key(i: usize) -> KeyDigest {
        crate::digest::sha256(&i.to_be_bytes())
    }

    /// Every fact comes back as recorded, for each combination of absent optional claims.
    #[test]
    fn facts_round_trip() {
        let c = VerifiedCache::new();
        let base = facts("3f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11", 100);
        let variants = [
            base.clone(),
            Facts {
                match_value: Some("alice@example.com"),
                ..base.clone()
            },
            Facts {
                preferred_username: None,
                sid: None,
                azp: None,
                ..base.clone()
            },
            Facts {
                match_value: None,
                service_account: true,
                broker_in_aud: false,
                kid: "",
                ..base.clone()
            },
            Facts {
                preferred_username: Some(""),
                sid: Some(""),
                match_value: Some(""),
                ..base.clone()
            },
        ];
        for (i, f) in variants.iter().enumerate() {
            c.insert(key(i), packed(f), 0);
            let back = c.get(&key(i), |_| true).map(|e| format!("{:?}", e.facts()));
            assert_eq!(back, Some(format!("{f:?}")), "variant {i}");
        }
        assert!(c.get(&key(99), |_| true).is_none());
    }

    /// A rejected entry (expired, its key rotated out) is removed by the read that saw it.
    #[test]
    fn a_rejected_entry_is_removed() {
        let c = VerifiedCache::new();
        c.insert(key(1), packed(&facts("u", 100)), 0);
        assert!(c.get(&key(1), |e| e.exp > 100).is_none());
        assert_eq!(c.len(), 0);
    }

    /// The cache stays within its bound under a flood of distinct tokens, drops expired
    /// entries first, and among live ones those that end soonest.
    #[test]
    fn the_cache_is_bounded() {
        let c = VerifiedCache::new();
        let n = SHARD_ENTRIES * SHARDS * 2;
        for i in 0..n {
            // Expiries 1000..; the later half of the tokens lives longer.
            c.insert(key(i), packed(&facts("u", 1000 + i as u64)), 0);
        }
        assert!(c.len() <= SHARD_ENTRIES * SHARDS, "{}", c.len());
        assert!(c.len() > SHARD_ENTRIES * SHARDS / 2, "{}", c.len());
        assert!(c.get(&key(n - 1), |_| true).is_some());
        assert!(c.get(&key(0), |_| true).is_none());
        // Once every entry has expired, a full shard drops them all for a new one.
        let now = 1000 + n as u64;
        for i in n..n + SHARD_ENTRIES * SHARDS {
            c.insert(key(i), packed(&facts("u", now + 10)), now);
        }
        assert!(c.get(&key(n - 1), |_| true).is_none());
        assert!(c.len() <= SHARD_ENTRIES * SHARDS);
    }

    /// An entry is a few dozen bytes plus its strings, the `kid` and `azp` shared.
    #[test]
    fn an_entry_is_small_and_shares_kid_and_azp() {
        let e1 = packed(&facts("3f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11", 1));
        let e2 = packed(&facts("4f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11", 1));
        // The key, the map's pointer, the `Arc`'s two counts and the facts: 40 bytes more
        // than the facts held inline in the map (173 bytes), the price of handing each hit the
        // same `Arc` instead of copying the claims out, and of the key-set count that spares
        // each hit the JWKS lock (issue 16).
        let bytes = std::mem::size_of::<KeyDigest>() + 8 + 16 + e1.approx_bytes();
        assert!(bytes <= 216, "{bytes}");
        assert!(e1.shares_kid_and_azp_with(&e2));
    }
}
