//! What the shared cache stores, and how nothing in it is readable: Redis key names are
//! HMAC-SHA-256 of the broker's cache key under a key derived from an encryption key, values
//! are AES-256-GCM sealed under the newest encryption key with its id beside the ciphertext.
//!
//! Two keys are derived from each configured 32-byte key with HKDF-SHA-256 (RFC 5869) and
//! distinct labels, so the naming key and the sealing key are independent. The Redis key name
//! is the AEAD's associated data: a value copied under another name fails to open. A value
//! that fails to open (altered, truncated, sealed with a key no longer configured) is a miss.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac, rand};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::SharedCacheKey;
use crate::digest::KeyDigest;

/// Format tag of a sealed value (bumped if the layout changes).
const VERSION: u8 = 1;
const SALT: &[u8] = b"token-broker shared cache v1";
const NAME_LABEL: &[u8] = b"redis key names";
const SEAL_LABEL: &[u8] = b"aes-256-gcm values";

/// What one Redis key holds, after opening.
#[derive(Serialize, Deserialize)]
pub(crate) enum Record {
    /// An issued token with the facts the broker serves and checks.
    Token(TokenRecord),
    /// A shared IdP failure (the negative cache across replicas).
    Failed(FailedRecord),
    /// An eviction broadcast (`evict` channel).
    Evict(String),
}

/// An `IdpError` as stored (`Busy` is never stored: it is a local refusal).
#[derive(Serialize, Deserialize)]
pub(crate) enum FailedRecord {
    Transport(String),
    Rejected {
        status: Option<u16>,
        error: String,
        description: Option<String>,
    },
    Protocol {
        status: Option<u16>,
        detail: String,
    },
    Discovery(String),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub(crate) access_token: String,
    pub(crate) token_type: String,
    pub(crate) issued_token_type: String,
    pub(crate) scope: Option<String>,
    pub(crate) expires_at: u64,
    pub(crate) cache_until: u64,
    pub(crate) subject_kid: Option<String>,
    /// When the issuing replica obtained it (`cache.refreshAhead` measures the life from it).
    #[serde(default)]
    pub(crate) created_at: u64,
    /// The eviction index (digests of `sub` / `sid`, sealed like the rest), so an entry a
    /// replica takes from Redis is still evicted by a logout or `/admin/revoke`.
    #[serde(default)]
    pub(crate) index_sub: Option<[u8; 32]>,
    #[serde(default)]
    pub(crate) index_sid: Option<[u8; 32]>,
}

struct SealKey {
    id: String,
    name: hmac::Key,
    seal: LessSafeKey,
}

/// The configured keys, newest first.
pub(crate) struct Keyring {
    keys: Vec<SealKey>,
}

/// A length type for HKDF output (aws-lc-rs wants one).
struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &hkdf::Prk, label: &[u8]) -> Result<[u8; 32], String> {
    let info = [label];
    let okm = prk
        .expand(&info, Len(32))
        .map_err(|_| "HKDF expand failed".to_owned())?;
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| "HKDF fill failed".to_owned())?;
    Ok(out)
}

impl Keyring {
    pub(crate) fn new(keys: &[SharedCacheKey]) -> Result<Self, String> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT);
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let prk = salt.extract(k.key.expose_secret());
            let name = hmac::Key::new(hmac::HMAC_SHA256, &derive(&prk, NAME_LABEL)?);
            let seal = UnboundKey::new(&AES_256_GCM, &derive(&prk, SEAL_LABEL)?)
                .map_err(|_| "AES-256-GCM key set-up failed".to_owned())?;
            out.push(SealKey {
                id: k.id.clone(),
                name,
                seal: LessSafeKey::new(seal),
            });
        }
        if out.is_empty() {
            return Err("cache.shared.encryptionKeys is empty".into());
        }
        Ok(Keyring { keys: out })
    }

    /// The Redis key names of `digest` in namespace `ns` (`t` token, `l` lock, `e` error),
    /// one per configured key, newest first: a rotation adds a name; old names still resolve.
    pub(crate) fn names(&self, prefix: &str, ns: &str, digest: &KeyDigest) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| name(k, prefix, ns, digest))
            .collect()
    }

    /// The newest key's name only (writes and locks).
    pub(crate) fn newest_name(&self, prefix: &str, ns: &str, digest: &KeyDigest) -> String {
        // `keys` is never empty (checked in `new`).
        self.keys
            .first()
            .map(|k| name(k, prefix, ns, digest))
            .unwrap_or_default()
    }

    /// Seals `record` under the newest key, bound to `redis_key`.
    pub(crate) fn seal(&self, redis_key: &str, record: &Record) -> Option<Vec<u8>> {
        let k = self.keys.first()?;
        let plain = serde_json::to_vec(record).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).ok()?;
        let id = k.id.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + NONCE_LEN + plain.len() + 16);
        out.push(VERSION);
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        let mut body = plain;
        k.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(redis_key.as_bytes()),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        zero(&mut body);
        Some(out)
    }

    /// Opens a value read under `redis_key`; `None` when it does not authenticate.
    pub(crate) fn open(&self, redis_key: &str, value: &[u8]) -> Option<Record> {
        let (&version, rest) = value.split_first()?;
        if version != VERSION {
            return None;
        }
        let (&id_len, rest) = rest.split_first()?;
        let (id, rest) = rest.split_at_checked(usize::from(id_len))?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let k = self.keys.iter().find(|k| k.id.as_bytes() == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let record = k
            .seal
            .open_in_place(nonce, Aad::from(redis_key.as_bytes()), &mut buf)
            .ok()
            .and_then(|plain| serde_json::from_slice(plain).ok());
        zero(&mut buf);
        record
    }
}

fn name(k: &SealKey, prefix: &str, ns: &str, digest: &KeyDigest) -> String {
    let mut ctx = hmac::Context::with_key(&k.name);
    ctx.update(ns.as_bytes());
    ctx.update(b"\0");
    ctx.update(digest);
    let tag = ctx.sign();
    let mut s = String::with_capacity(prefix.len() + ns.len() + 1 + 64);
    s.push_str(prefix);
    s.push_str(ns);
    s.push(':');
    for b in tag.as_ref() {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Overwrites plaintext before its buffer is freed (best effort: `black_box` keeps the
/// compiler from dropping stores to a buffer about to be freed).
fn zero(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use secrecy::SecretBox;

    use super::*;

    fn key(id: &str, byte: u8) -> SharedCacheKey {
        SharedCacheKey {
            id: id.into(),
            key: Arc::new(SecretBox::new(Box::new([byte; 32]))),
        }
    }

    fn record() -> Record {
        Record::Failed(FailedRecord::Rejected {
            status: Some(400),
            error: "invalid_grant".into(),
            description: Some("SENTINEL-subject".into()),
        })
    }

    #[test]
    fn sealed_values_open_under_their_name_only() {
        let ring = Keyring::new(&[key("k1", 1)]).unwrap();
        let v = ring.seal("p:t:aa", &record()).unwrap();
        assert!(!v.windows(8).any(|w| w == b"SENTINEL"));
        assert!(matches!(ring.open("p:t:aa", &v), Some(Record::Failed(_))));
        assert!(ring.open("p:t:ab", &v).is_none(), "bound to its key name");
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 1;
            assert!(ring.open("p:t:aa", &bad).is_none(), "byte {i} altered");
        }
        assert!(ring.open("p:t:aa", &v[..v.len() - 1]).is_none());
    }

    #[test]
    fn rotation_opens_old_values_and_names_differ_per_key() {
        let old = Keyring::new(&[key("k1", 1)]).unwrap();
        let v = old.seal("n", &record()).unwrap();
        let new = Keyring::new(&[key("k2", 2), key("k1", 1)]).unwrap();
        assert!(new.open("n", &v).is_some());
        let d = [7u8; 32];
        let names = new.names("p:", "t", &d);
        assert_eq!(names.len(), 2);
        assert_ne!(names[0], names[1]);
        assert_eq!(names[1], old.newest_name("p:", "t", &d));
        assert_eq!(names[0], new.newest_name("p:", "t", &d));
        assert!(names[0].starts_with("p:t:"));
        // A key removed from the ring no longer opens its values.
        let only_new = Keyring::new(&[key("k2", 2)]).unwrap();
        assert!(only_new.open("n", &v).is_none());
    }
}
