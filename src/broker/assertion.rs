//! The broker's RFC 7523 assertion signer for `userMapping: jwt_authorization_grant`
//! (docs/reference/keycloak-token-exchange.md §6): ES256 (RFC 7518 §3.4) with a key from
//! `assertion.keyFile`
//! (PKCS#8 PEM, P-256) or generated at start (development), a unique `jti` per assertion,
//! `aud` = the realm issuer, `sub` from the target's template, `exp` at most 5 min ahead
//! (Keycloak's default maximum). The public key is served at `/.well-known/jwks.json`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use crate::config::AssertionConfig;

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("assertion.keyFile could not be read: {0}")]
    Read(String),
    #[error("assertion.keyFile is not a PKCS#8 PEM P-256 private key")]
    BadKey,
    #[error("the assertion key could not be generated")]
    Generate,
    #[error("the assertion could not be signed")]
    Sign,
}

/// The signer. Its key can be replaced at run time ([`AssertionSigner::reload`], on SIGHUP):
/// the previous public key stays in the published key set so assertions signed just before
/// the rotation still verify at Keycloak (they live `assertion.lifetime`).
pub struct AssertionSigner {
    issuer: String,
    lifetime_secs: u64,
    keys: parking_lot::RwLock<std::sync::Arc<SignerKeys>>,
}

struct SignerKey {
    kid: String,
    key: EncodingKey,
    x: String,
    y: String,
}

impl SignerKey {
    fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "alg": "ES256", "use": "sig"
        })
    }
}

struct SignerKeys {
    current: SignerKey,
    previous: Option<serde_json::Value>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("issuer", &self.issuer)
            .field("kid", &self.keys().current.kid)
            .finish_non_exhaustive()
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

impl AssertionSigner {
    pub fn from_config(config: &AssertionConfig) -> Result<Self, AssertionError> {
        let current = load_key(config)?;
        Ok(AssertionSigner {
            issuer: config.issuer.clone(),
            lifetime_secs: config.lifetime.as_secs().max(1),
            keys: parking_lot::RwLock::new(std::sync::Arc::new(SignerKeys {
                current,
                previous: None,
            })),
        })
    }

    fn keys(&self) -> std::sync::Arc<SignerKeys> {
        self.keys.read().clone()
    }

    /// Re-reads `assertion.keyFile` (SIGHUP). With a new key, signs with it from now on and
    /// keeps publishing the old public key next to it. Returns whether the key changed; without
    /// a key file (a per-process development key) nothing changes.
    pub fn reload(&self, config: &AssertionConfig) -> Result<bool, AssertionError> {
        if config.key_file.is_none() {
            return Ok(false);
        }
        let new = load_key(config)?;
        let old = self.keys();
        if new.kid == old.current.kid {
            return Ok(false);
        }
        *self.keys.write() = std::sync::Arc::new(SignerKeys {
            previous: Some(old.current.public_jwk()),
            current: new,
        });
        Ok(true)
    }

    /// `kid` of the key assertions are signed with now.
    pub fn kid(&self) -> String {
        self.keys().current.kid.clone()
    }

    /// The published keys: the current one, then the previous one during a rotation.
    pub fn public_jwks(&self) -> Vec<serde_json::Value> {
        let k = self.keys();
        let mut v = vec![k.current.public_jwk()];
        v.extend(k.previous.clone());
        v
    }
}

fn load_key(config: &AssertionConfig) -> Result<SignerKey, AssertionError> {
    {
        let der = match &config.key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| AssertionError::Read(e.kind().to_string()))?;
                pem_to_der(&pem).ok_or(AssertionError::BadKey)?
            }
            None => {
                tracing::warn!(
                    "assertion.keyFile is not set: generated a signing key for this process only (development; replicas will not share it)"
                );
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| AssertionError::Generate)?
                    .as_ref()
                    .to_vec()
            }
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| AssertionError::BadKey)?;
        // Uncompressed SEC1 point: 0x04 || X || Y.
        let point = pair.public_key().as_ref();
        let (x, y) = match (point.get(1..33), point.get(33..65)) {
            (Some(x), Some(y)) if point.len() == 65 => (x, y),
            _ => return Err(AssertionError::BadKey),
        };
        // RFC 7638-style thumbprint as kid.
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        let thumb = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb.as_bytes()));
        Ok(SignerKey {
            kid,
            key: EncodingKey::from_ec_der(&der),
            x,
            y,
        })
    }
}

impl AssertionSigner {
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWK (RFC 7517 §4).
    pub fn public_jwk(&self) -> serde_json::Value {
        self.keys().current.public_jwk()
    }

    /// Signs one assertion (RFC 7523 §3) for `subject`, audience `audience` (the realm
    /// issuer). Returns the JWT and its `exp`.
    pub fn sign(
        &self,
        subject: &str,
        audience: &str,
        now: u64,
    ) -> Result<(String, u64), AssertionError> {
        let exp = now + self.lifetime_secs;
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let keys = self.keys();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(keys.current.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &keys.current.key)
            .map_err(|_| AssertionError::Sign)?;
        Ok((jwt, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn signs_verifiable_short_lived_assertions_with_unique_jti() {
        let s = AssertionSigner::from_config(&AssertionConfig {
            issuer: "https://broker.example".into(),
            key_file: None,
            lifetime: Duration::from_secs(120),
        })
        .unwrap();
        let (a, exp) = s
            .sign("user:default/alice", "http://kc/realms/dev", 1000)
            .unwrap();
        let (b, _) = s
            .sign("user:default/alice", "http://kc/realms/dev", 1000)
            .unwrap();
        assert_eq!(exp, 1120);
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(s.public_jwk()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.set_audience(&["http://kc/realms/dev"]);
        let ca = jsonwebtoken::decode::<serde_json::Value>(&a, &key, &v)
            .unwrap()
            .claims;
        let cb = jsonwebtoken::decode::<serde_json::Value>(&b, &key, &v)
            .unwrap()
            .claims;
        assert_eq!(ca["sub"], "user:default/alice");
        assert_eq!(ca["iss"], "https://broker.example");
        assert_ne!(ca["jti"], cb["jti"]);
    }

    fn write_pem(path: &std::path::Path) {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        std::fs::write(path, pem).unwrap();
    }

    #[test]
    fn reload_rotates_the_key_and_keeps_publishing_the_previous_one() {
        let dir = std::env::temp_dir().join(format!("tb-assertion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        write_pem(&file);
        let cfg = AssertionConfig {
            issuer: "https://broker.example".into(),
            key_file: Some(file.clone()),
            lifetime: Duration::from_secs(120),
        };
        let s = AssertionSigner::from_config(&cfg).unwrap();
        let first = s.kid();
        assert!(!s.reload(&cfg).unwrap(), "same file, same key");
        write_pem(&file);
        assert!(s.reload(&cfg).unwrap());
        let second = s.kid();
        assert_ne!(first, second);
        let kids: Vec<String> = s
            .public_jwks()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, vec![second.clone(), first]);
        let (jwt, _) = s.sign("user:default/alice", "aud", 1000).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&jwt).unwrap().kid.as_deref(),
            Some(second.as_str())
        );
        // An unreadable key file keeps the current key.
        std::fs::write(&file, "not a key").unwrap();
        assert!(s.reload(&cfg).is_err());
        assert_eq!(s.kid(), second);
        std::fs::remove_dir_all(&dir).ok();
    }
}
