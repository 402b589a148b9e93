//! The broker's RFC 7523 assertion signer for `userMapping: jwt_authorization_grant`
//! (keycloak-token-exchange.md §6): ES256 (RFC 7518 §3.4) with a key from `assertion.keyFile`
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

pub struct AssertionSigner {
    issuer: String,
    lifetime_secs: u64,
    kid: String,
    key: EncodingKey,
    x: String,
    y: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
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
        Ok(AssertionSigner {
            issuer: config.issuer.clone(),
            lifetime_secs: config.lifetime.as_secs().max(1),
            kid,
            key: EncodingKey::from_ec_der(&der),
            x,
            y,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWK (RFC 7517 §4).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "alg": "ES256", "use": "sig"
        })
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
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let jwt =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| AssertionError::Sign)?;
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
}
