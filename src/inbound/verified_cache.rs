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
//! Layout: 16 shards, each a `parking_lot::Mutex` over a `HashMap` whose value is a fixed-size
//! [`Entry`]: `exp`, the verifying `kid` and `azp` as shared strings (a realm has a handful of
//! each: [`crate::broker::cache::shared_str`]), the per-user strings (`sub`,
//! `preferred_username`, `sid`, the match claim) packed into one boxed `str`, and two flags. The key is the token's SHA-256 — never the token — and its first 8
//! bytes are the map's hash: a uniform hash that costs nothing, and one an attacker cannot aim,
//! since only tokens whose signature verified are ever inserted.
//!
//! Bound: at most [`SHARD_ENTRIES`] per shard. A full shard first drops its expired entries;
//! if that frees too little, it drops the eighth of its entries that expire soonest (those
//! tokens are checked in full again when next presented: slower, never wrong).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::cache::shared_str;
use crate::digest::{DigestKey, DigestMap, KeyDigest, make_room};

const SHARDS: usize = 16;

/// Entries per shard: 100 000 verified tokens in all, with an eighth of headroom because
/// tokens do not spread over the shards exactly evenly.
pub(super) const SHARD_ENTRIES: usize = 100_000 / SHARDS * 9 / 8;

/// The verified facts of one user token, as [`super::oidc`] reads and records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Facts<'a> {
    pub sub: &'a str,
    pub exp: u64,
    /// Empty for a token verified by introspection (no signing key to rotate out).
    pub kid: &'a str,
    pub preferred_username: Option<&'a str>,
    pub azp: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub match_value: Option<&'a str>,
    pub service_account: bool,
    pub broker_in_aud: bool,
}

const SERVICE_ACCOUNT: u8 = 1;
const BROKER_IN_AUD: u8 = 1 << 1;
const HAS_USERNAME: u8 = 1 << 2;
const HAS_SID: u8 = 1 << 3;
const HAS_MATCH: u8 = 1 << 4;
/// The match claim's value equals `preferred_username` (the common `matchClaim`): kept once.
const MATCH_IS_USERNAME: u8 = 1 << 5;

/// One entry: fixed size, one allocation for the per-user strings.
#[derive(Debug)]
pub(super) struct Entry {
    pub exp: u64,
    kid: Arc<str>,
    azp: Option<Arc<str>>,
    /// `sub`, then `preferred_username`, `sid` and the match claim (each when present).
    text: Box<str>,
    /// End offsets in `text` of `sub`, `preferred_username` and `sid`.
    ends: [u16; 3],
    flags: u8,
}

impl Entry {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The recorded facts, borrowed from the entry.
    pub fn facts(&self) -> Facts<'_> {
        let [a, b, c] = self.ends.map(usize::from);
        let part = |from: usize, to: usize| self.text.get(from..to).unwrap_or_default();
        let has = |f: u8| self.flags & f != 0;
        let preferred_username = has(HAS_USERNAME).then(|| part(a, b));
        let match_value = if has(MATCH_IS_USERNAME) {
            preferred_username
        } else {
            has(HAS_MATCH).then(|| part(c, self.text.len()))
        };
        Facts {
            sub: part(0, a),
            exp: self.exp,
            kid: &self.kid,
            preferred_username,
            azp: self.azp.as_deref(),
            sid: has(HAS_SID).then(|| part(b, c)),
            match_value,
            service_account: has(SERVICE_ACCOUNT),
            broker_in_aud: has(BROKER_IN_AUD),
        }
    }

    /// Heap and inline bytes of one entry (for the size regression test): the interned
    /// `kid` and `azp` are shared, so not counted.
    #[cfg(test)]
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<KeyDigest>() + std::mem::size_of::<Self>() + self.text.len()
    }
}

type Shard = DigestMap<Entry>;

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

    /// Reads the entry for `key` with `read`, unless `keep` rejects it (expired, key rotated
    /// out): then it is removed and `None` returned.
    pub fn get<T>(
        &self,
        key: &KeyDigest,
        keep: impl FnOnce(&Entry) -> bool,
        read: impl FnOnce(&Entry) -> T,
    ) -> Option<T> {
        let mut shard = self.shard(key)?.lock();
        let k = DigestKey(*key);
        let entry = shard.get(&k)?;
        if keep(entry) {
            return Some(read(entry));
        }
        shard.remove(&k);
        None
    }

    /// Remembers `facts` under `key`; `now` (Unix seconds) decides which entries a full shard
    /// drops first. Facts too long to pack (over 64 KiB of strings) are not remembered.
    pub fn insert(&self, key: KeyDigest, facts: &Facts<'_>, now: u64) {
        let Some(entry) = self.pack(facts) else {
            return;
        };
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock();
        if shard.len() >= SHARD_ENTRIES && !shard.contains_key(&DigestKey(key)) {
            make_room(&mut shard, SHARD_ENTRIES, now, |e| e.exp, |_| {});
        }
        shard.insert(DigestKey(key), entry);
    }

    fn pack(&self, f: &Facts<'_>) -> Option<Entry> {
        let mut flags = 0;
        let mut set = |on: bool, flag: u8| {
            if on {
                flags |= flag;
            }
        };
        set(f.service_account, SERVICE_ACCOUNT);
        set(f.broker_in_aud, BROKER_IN_AUD);
        set(f.preferred_username.is_some(), HAS_USERNAME);
        set(f.sid.is_some(), HAS_SID);
        set(f.match_value.is_some(), HAS_MATCH);
        let match_is_username = f.match_value.is_some() && f.match_value == f.preferred_username;
        set(match_is_username, MATCH_IS_USERNAME);
        let mut text = String::with_capacity(
            f.sub.len()
                + f.preferred_username.map_or(0, str::len)
                + f.sid.map_or(0, str::len)
                + f.match_value.map_or(0, str::len),
        );
        let mut ends = [0u16; 3];
        for (end, part) in ends
            .iter_mut()
            .zip([Some(f.sub), f.preferred_username, f.sid])
        {
            text.push_str(part.unwrap_or_default());
            *end = u16::try_from(text.len()).ok()?;
        }
        if !match_is_username {
            text.push_str(f.match_value.unwrap_or_default());
            u16::try_from(text.len()).ok()?;
        }
        Some(Entry {
            exp: f.exp,
            kid: shared_str(f.kid),
            azp: f.azp.map(shared_str),
            text: text.into_boxed_str(),
            ends,
            flags,
        })
    }

    /// Entries in all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            c.insert(key(i), f, 0);
            let back = c.get(&key(i), |_| true, |e| format!("{:?}", e.facts()));
            assert_eq!(back, Some(format!("{f:?}")), "variant {i}");
        }
        assert_eq!(c.get(&key(99), |_| true, |_| ()), None);
    }

    /// A rejected entry (expired, its key rotated out) is removed by the read that saw it.
    #[test]
    fn a_rejected_entry_is_removed() {
        let c = VerifiedCache::new();
        c.insert(key(1), &facts("u", 100), 0);
        assert_eq!(c.get(&key(1), |e| e.exp > 100, |_| ()), None);
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
            c.insert(key(i), &facts("u", 1000 + i as u64), 0);
        }
        assert!(c.len() <= SHARD_ENTRIES * SHARDS, "{}", c.len());
        assert!(c.len() > SHARD_ENTRIES * SHARDS / 2, "{}", c.len());
        assert!(c.get(&key(n - 1), |_| true, |_| ()).is_some());
        assert!(c.get(&key(0), |_| true, |_| ()).is_none());
        // Once every entry has expired, a full shard drops them all for a new one.
        let now = 1000 + n as u64;
        for i in n..n + SHARD_ENTRIES * SHARDS {
            c.insert(key(i), &facts("u", now + 10), now);
        }
        assert!(c.get(&key(n - 1), |_| true, |_| ()).is_none());
        assert!(c.len() <= SHARD_ENTRIES * SHARDS);
    }

    /// An entry is a few dozen bytes plus its strings, the `kid` and `azp` shared.
    #[test]
    fn an_entry_is_small_and_shares_kid_and_azp() {
        let c = VerifiedCache::new();
        let e1 = c
            .pack(&facts("3f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11", 1))
            .unwrap();
        let e2 = c
            .pack(&facts("4f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11", 1))
            .unwrap();
        assert!(e1.approx_bytes() < 192, "{}", e1.approx_bytes());
        assert!(Arc::ptr_eq(&e1.kid, &e2.kid));
        assert!(Arc::ptr_eq(
            e1.azp.as_ref().unwrap(),
            e2.azp.as_ref().unwrap()
        ));
    }
}
