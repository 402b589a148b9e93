//! Digests of secret material: cache keys and log fingerprints, and the map key type of the
//! caches keyed by them ([`DigestKey`], [`DigestMap`], and [`make_room`], how a full shard of
//! either cache frees room).
//!
//! Raw tokens never become cache keys or log fields. A cache key is SHA-256 over
//! length-prefixed fields (so `("ab","c")` and `("a","bc")` differ); a fingerprint is a short
//! SHA-256 prefix that lets an operator correlate log lines without learning the token.

use aws_lc_rs::digest::{SHA256, digest};

/// A 256-bit digest used as a cache key.
pub type KeyDigest = [u8; 32];

/// A map key that is already a SHA-256 ([`KeyDigest`]): its first 8 bytes are its hash
/// ([`DigestHasher`]), uniform and free. Not aimable either: the caches keyed by it insert only
/// digests of credentials that passed verification (or of requests built from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestKey(pub KeyDigest);

impl std::hash::Hash for DigestKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write(&[a, b, c, d, e, f, g, h]);
    }
}

/// The hasher of [`DigestKey`]: takes the 8 bytes it is given as the hash.
#[derive(Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `DigestKey::hash` feeds this hasher, with exactly 8 bytes.
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
}

/// A hash map keyed by digests (the caches' storage).
pub type DigestMap<V> =
    std::collections::HashMap<DigestKey, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// Frees room in a full cache shard whose entries end at `deadline` (Unix seconds): first its
/// entries past their deadline at `now`, then, if the shard still holds `max` or more, the
/// eighth that ends soonest (those are fetched again when next asked for: slower, never
/// wrong). `dropped(expired)` is told of each entry removed and why.
pub fn make_room<V>(
    shard: &mut DigestMap<V>,
    max: usize,
    now: u64,
    deadline: impl Fn(&V) -> u64,
    mut dropped: impl FnMut(bool),
) {
    shard.retain(|_, v| {
        let keep = deadline(v) > now;
        if !keep {
            dropped(true);
        }
        keep
    });
    if shard.len() < max {
        return;
    }
    let mut deadlines: Vec<u64> = shard.values().map(&deadline).collect();
    let nth = deadlines.len() / 8;
    let (sooner, cut, _) = deadlines.select_nth_unstable(nth);
    let cut = *cut;
    // Entries made in the same second share a deadline (a burst of logins, one lifetime), so
    // "every entry ending at or before the cut" could be the whole shard. Drop all that end
    // sooner than the cut and only as many of those ending at it as make up the eighth.
    let below = sooner.iter().filter(|d| **d < cut).count();
    let mut at_cut = (nth + 1).saturating_sub(below);
    shard.retain(|_, v| {
        let d = deadline(v);
        let keep = d > cut || (d == cut && at_cut == 0);
        if d == cut && !keep {
            at_cut -= 1;
        }
        if !keep {
            dropped(false);
        }
        keep
    });
}

/// Builds a [`KeyDigest`] from length-prefixed fields. The fields are gathered and hashed in
/// one call at [`KeyBuilder::finish`]: a cache key is a few short fields, and feeding SHA-256
/// two small pieces per field cost more than the hashing itself (issue 16).
pub struct KeyBuilder(Vec<u8>);

/// A SHA-256 output as the fixed-size array keys are made of. aws-lc's SHA-256 (already in
/// the build for signatures and the shared cache's encryption) is used rather than a second
/// implementation: it picks the CPU's SHA extensions where present, like `sha2`, and its
/// vectorised code elsewhere (and under valgrind, which does not emulate SHA extensions,
/// where `sha2`'s portable code made hashing half of a cache hit's counted instructions).
fn array(d: aws_lc_rs::digest::Digest) -> KeyDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl KeyBuilder {
    /// Starts a key in a domain (e.g. `"exchange"`), so keys of different caches never collide.
    pub fn new(domain: &str) -> Self {
        KeyBuilder(Vec::with_capacity(256)).field(domain.as_bytes())
    }

    pub fn field(mut self, bytes: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// The same bytes as `field(parts.join(sep))`, without building the joined string.
    pub fn field_joined(mut self, parts: &[String], sep: u8) -> Self {
        let len = parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_sub(1);
        self.0.extend_from_slice(&(len as u64).to_be_bytes());
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.0.push(sep);
            }
            self.0.extend_from_slice(p.as_bytes());
        }
        self
    }

    pub fn finish(self) -> KeyDigest {
        sha256(&self.0)
    }
}

/// SHA-256 of a secret, for constant-time comparison of equal-length digests.
pub fn sha256(bytes: &[u8]) -> KeyDigest {
    array(digest(&SHA256, bytes))
}

/// A short, non-reversible fingerprint of a token for logs and error reports:
/// the first 12 hex digits of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    Fingerprint::of(&sha256(secret.as_bytes()))
        .as_str()
        .to_owned()
}

/// The first 12 hex digits of a token's SHA-256 ([`fingerprint`]), kept
/// inline: no allocation per request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    pub fn of(digest: &KeyDigest) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'0'; 12];
        for (pair, b) in out.chunks_exact_mut(2).zip(digest.iter()) {
            if let [hi, lo] = pair {
                *hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                *lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            }
        }
        Fingerprint(out)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_with(deadlines: &[u64]) -> DigestMap<u64> {
        deadlines
            .iter()
            .enumerate()
            .map(|(i, d)| (DigestKey(sha256(&i.to_be_bytes())), *d))
            .collect()
    }

    /// A full shard gives up an eighth (plus one), never more, even when every entry ends in
    /// the same second (a burst of logins), and the ones it gives up end soonest.
    #[test]
    fn a_full_shard_drops_an_eighth_even_at_equal_deadlines() {
        let mut shard = shard_with(&[1000; 64]);
        let mut n = 0;
        make_room(
            &mut shard,
            64,
            10,
            |d| *d,
            |expired| {
                assert!(!expired);
                n += 1;
            },
        );
        assert_eq!((n, shard.len()), (9, 55));

        // 16 end at 500, 48 at 1000: the eighth (9 entries) all come from the 500s.
        let mut shard = shard_with(&[&[500; 16][..], &[1000; 48][..]].concat());
        make_room(&mut shard, 64, 10, |d| *d, |_| {});
        assert_eq!(shard.len(), 55);
        assert_eq!(shard.values().filter(|d| **d == 500).count(), 7);

        // Distinct deadlines: exactly the nine soonest go.
        let mut shard = shard_with(&(100..164).collect::<Vec<u64>>());
        make_room(&mut shard, 64, 10, |d| *d, |_| {});
        assert_eq!(shard.values().min(), Some(&109));

        // Expired entries go first, and when that makes room nothing else does.
        let mut shard = shard_with(&[&[5; 10][..], &[1000; 54][..]].concat());
        let mut expired = 0;
        make_room(&mut shard, 64, 10, |d| *d, |e| expired += usize::from(e));
        assert_eq!((expired, shard.len()), (10, 54));
    }

    /// `field_joined` keeps the cache keys of `field(join)` (the form before issue 16), so
    /// entries shared through Redis by replicas of either version keep matching.
    #[test]
    fn a_joined_field_is_the_field_of_the_joined_string() {
        for parts in [
            vec![],
            vec!["a"],
            vec!["openid", "profile", ""],
            vec!["", ""],
        ] {
            let parts: Vec<String> = parts.into_iter().map(String::from).collect();
            assert_eq!(
                KeyBuilder::new("d").field_joined(&parts, b' ').finish(),
                KeyBuilder::new("d")
                    .field(parts.join(" ").as_bytes())
                    .finish(),
                "{parts:?}"
            );
        }
    }

    #[test]
    fn fingerprint_is_the_sha256_hex_prefix() {
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
        let f = Fingerprint::of(&sha256(b"abc"));
        assert_eq!(f.as_str(), "ba7816bf8f01");
        assert_eq!(f.to_string(), "ba7816bf8f01");
    }

    #[test]
    fn keys_are_sha256_of_the_length_prefixed_fields() {
        // The same bytes as before aws-lc computed them (sha2): keys stay stable across
        // versions, e.g. between replicas sharing a Redis cache during an upgrade.
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for f in [&b"exchange"[..], b"", b"token bytes"] {
            h.update((f.len() as u64).to_be_bytes());
            h.update(f);
        }
        let want: KeyDigest = h.finalize().into();
        let got = KeyBuilder::new("exchange")
            .field(b"")
            .field(b"token bytes")
            .finish();
        assert_eq!(got, want);
        let long = vec![b'x'; 1300];
        assert_eq!(sha256(&long), <[u8; 32]>::from(sha2::Sha256::digest(&long)));
    }

    #[test]
    fn a_digest_keys_hash_is_its_first_eight_bytes() {
        use std::hash::BuildHasher as _;
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_be_bytes());
        d[8..].fill(0xff);
        let h = std::hash::BuildHasherDefault::<DigestHasher>::default().hash_one(DigestKey(d));
        assert_eq!(h, 0x0123_4567_89ab_cdef);
        let mut m: DigestMap<u8> = DigestMap::default();
        m.insert(DigestKey(d), 1);
        assert_eq!(m.get(&DigestKey(d)), Some(&1));
    }

    #[test]
    fn length_prefix_separates_fields() {
        let a = KeyBuilder::new("x").field(b"ab").field(b"c").finish();
        let b = KeyBuilder::new("x").field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn domains_separate_keys() {
        let a = KeyBuilder::new("exchange").field(b"t").finish();
        let b = KeyBuilder::new("service").field(b"t").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let f = fingerprint("secret-token");
        assert_eq!(f.len(), 12);
        assert_eq!(f, fingerprint("secret-token"));
        assert!(!f.contains("secret"));
    }
}
