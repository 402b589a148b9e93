//! The realm keys of the dev IdP: RSA-2048 generation with aws-lc-rs, compact JWS signing with
//! RS256, verification of the IdP's own tokens, and the JWKS document served at `/certs`.
//!
//! Like Keycloak's default realm (docs/reference/keycloak-token-exchange.md §1) there are two keys:
//! an RS256
//! `use:"sig"` key and an `RSA-OAEP` `use:"enc"` key. The enc key is only published (nothing is
//! ever encrypted), so that clients learn to select keys by `kid` and `use`. `x5c`/`x5t` are
//! omitted (Keycloak publishes a self-signed certificate; building one needs an X.509 encoder we
//! do not have).

use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One published RSA key.
struct RsaKey {
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaKey {
    fn from_pair(pair: &KeyPair) -> Self {
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        // Keycloak's kids are opaque base64url strings; a digest of the public key keeps them
        // unique per generated key.
        let mut hasher = Sha256::new();
        hasher.update(&n);
        hasher.update(&e);
        let kid = URL_SAFE_NO_PAD.encode(hasher.finalize());
        Self { kid, n, e }
    }

    fn jwk(&self, alg: &str, use_: &str) -> Value {
        json!({
            "kid": self.kid,
            "kty": "RSA",
            "alg": alg,
            "use": use_,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }
}

/// The realm's key material.
pub struct RealmKeys {
    sig_pair: KeyPair,
    sig: RsaKey,
    enc: RsaKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for RealmKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealmKeys")
            .field("sig_kid", &self.sig.kid)
            .field("enc_kid", &self.enc.kid)
            .finish_non_exhaustive()
    }
}

/// Why a compact JWS was not accepted; callers map every variant to Keycloak's single
/// `Invalid token` (docs/reference/keycloak-token-exchange.md §3.4 step 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm or unknown key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
}

impl RealmKeys {
    /// Generates both RSA-2048 keys. This is CPU work (tens to hundreds of milliseconds), so
    /// `start` runs it on the blocking pool.
    pub fn generate() -> std::io::Result<Self> {
        let started = Instant::now();
        let sig_pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|e| std::io::Error::other(format!("RSA key generation failed: {e}")))?;
        let enc_pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|e| std::io::Error::other(format!("RSA key generation failed: {e}")))?;
        let keys = Self {
            sig: RsaKey::from_pair(&sig_pair),
            enc: RsaKey::from_pair(&enc_pair),
            sig_pair,
            rng: SystemRandom::new(),
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            sig_kid = %keys.sig.kid,
            "dev IdP generated its RSA-2048 realm keys"
        );
        Ok(keys)
    }

    /// `kid` of the signing key.
    #[cfg(test)]
    pub fn sig_kid(&self) -> &str {
        &self.sig.kid
    }

    /// The JWKS document served at `/protocol/openid-connect/certs`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.sig.jwk("RS256", "sig"), self.enc.jwk("RSA-OAEP", "enc")] })
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"RS256","typ":"JWT","kid"}`
    /// (docs/reference/keycloak-token-exchange.md §4).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.sig.kid });
        self.sign_with_header(&header, claims)
    }

    /// Signs with the JOSE header `typ` given (`None`: no `typ`), for the generic mode's
    /// RFC 9068 access tokens (not Keycloak's shape).
    pub fn sign_typed(&self, typ: Option<&str>, claims: &Value) -> String {
        let header = match typ {
            Some(t) => json!({ "alg": "RS256", "typ": t, "kid": self.sig.kid }),
            None => json!({ "alg": "RS256", "kid": self.sig.kid }),
        };
        self.sign_with_header(&header, claims)
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.sig_pair.public_modulus_len()];
        match self.sig_pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &self.rng,
            signing_input.as_bytes(),
            &mut sig,
        ) {
            Ok(()) => format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&sig)),
            Err(e) => {
                // Signing with a freshly generated, valid key does not fail in practice; if it
                // ever did, an unsigned-looking token that every verifier rejects is the safe
                // outcome for a dev IdP.
                tracing::error!(error = %e, "dev IdP failed to sign a token");
                format!("{signing_input}.")
            }
        }
    }

    /// Verifies a compact JWS signed by the realm's signing key and returns its claims. Only
    /// the signature is checked here; claim checks belong to the grant.
    pub fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        // The signing input is everything before the last dot: `header.payload`.
        let (signing_input, s) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
        let (h, p) = signing_input
            .split_once('.')
            .ok_or(VerifyError::Malformed)?;
        if p.contains('.') {
            return Err(VerifyError::Malformed);
        }
        let header: Value = decode_json(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(VerifyError::UnknownKey);
        }
        if let Some(kid) = header.get("kid")
            && kid.as_str() != Some(self.sig.kid.as_str())
        {
            return Err(VerifyError::UnknownKey);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| VerifyError::Malformed)?;
        let public = PublicKeyComponents {
            n: self.sig.n.as_slice(),
            e: self.sig.e.as_slice(),
        };
        public
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                signing_input.as_bytes(),
                &sig,
            )
            .map_err(|_| VerifyError::BadSignature)?;
        decode_json(p)
    }
}

/// The realm's keys behind a lock, so a running dev IdP can rotate them
/// ([`super::DevIdpHandle::rotate_keys`]): like deleting the realm's key provider in Keycloak
/// and creating a new one, the old key disappears from the JWKS and its tokens stop verifying.
#[derive(Debug)]
pub struct KeyRing {
    current: RwLock<Arc<RealmKeys>>,
}

impl KeyRing {
    pub fn new(keys: RealmKeys) -> Self {
        Self {
            current: RwLock::new(Arc::new(keys)),
        }
    }

    fn get(&self) -> Arc<RealmKeys> {
        self.current.read().clone()
    }

    /// Replaces the keys.
    pub fn rotate(&self, keys: RealmKeys) {
        *self.current.write() = Arc::new(keys);
    }

    /// `kid` of the current signing key.
    pub fn sig_kid(&self) -> String {
        self.get().sig.kid.clone()
    }

    pub fn jwks(&self) -> Value {
        self.get().jwks()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.get().sign(claims)
    }

    pub fn sign_typed(&self, typ: Option<&str>, claims: &Value) -> String {
        self.get().sign_typed(typ, claims)
    }

    pub fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        self.get().verify(token)
    }
}

fn decode_json(part: &str) -> Result<Value, VerifyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_tamper() {
        let started = Instant::now();
        let keys = RealmKeys::generate().unwrap();
        eprintln!("RSA-2048 x2 generation took {:?}", started.elapsed());
        let token = keys.sign(&json!({"sub": "x", "typ": "Bearer"}));
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims["sub"], "x");

        let other = RealmKeys::generate().unwrap();
        assert!(other.verify(&token).is_err(), "foreign key must not verify");

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "y", "typ": "Bearer"}).to_string());
        parts[1] = &forged;
        assert!(matches!(
            keys.verify(&parts.join(".")),
            Err(VerifyError::BadSignature)
        ));

        let jwks = keys.jwks();
        let ks = jwks["keys"].as_array().unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[0]["use"], "sig");
        assert_eq!(ks[0]["alg"], "RS256");
        assert_eq!(ks[0]["kid"], keys.sig_kid());
        assert_eq!(ks[1]["use"], "enc");
        assert_eq!(ks[1]["alg"], "RSA-OAEP");
        assert_ne!(ks[0]["kid"], ks[1]["kid"]);
    }
}
