//! Digests of secret material: cache keys and log fingerprints.
//!
//! Raw tokens never become cache keys or log fields. A cache key is SHA-256 over
//! length-prefixed fields (so `("ab","c")` and `("a","bc")` differ); a fingerprint is a short
//! SHA-256 prefix that lets an operator correlate log lines without learning the token.

use sha2::{Digest, Sha256};

/// A 256-bit digest used as a cache key.
pub type KeyDigest = [u8; 32];

/// Builds a [`KeyDigest`] from length-prefixed fields.
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key in a domain (e.g. `"exchange"`), so keys of different caches never collide.
    pub fn new(domain: &str) -> Self {
        let mut b = KeyBuilder(Sha256::new());
        b = b.field(domain.as_bytes());
        b
    }

    pub fn field(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> KeyDigest {
        self.0.finalize().into()
    }
}

/// SHA-256 of a secret, for constant-time comparison of equal-length digests.
pub fn sha256(bytes: &[u8]) -> KeyDigest {
    Sha256::digest(bytes).into()
}

/// A short, non-reversible fingerprint of a token for logs and error reports:
/// the first 12 hex digits of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    fingerprint_of(&sha256(secret.as_bytes()))
}

/// [`fingerprint`] from an already computed SHA-256 (the token is hashed once per request).
pub fn fingerprint_of(digest: &KeyDigest) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(12);
    for b in digest.iter().take(6) {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_sha256_hex_prefix() {
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
        assert_eq!(fingerprint_of(&sha256(b"abc")), "ba7816bf8f01");
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
