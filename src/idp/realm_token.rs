//! Verification of any JWT the realm signs: the user's access token before it is sent to
//! Keycloak (`inbound::oidc` adds what a *user's* token needs on top) and the tokens Keycloak
//! issues to the broker ([`crate::idp::answer`]).
//!
//! Checks, in order: size, JWS shape, a `kid` present and known to the realm's JWKS
//! ([`crate::idp::jwks`]), the header `alg` equal to the key's algorithm (taken from the key,
//! RFC 8725 §3.1), the signature, `iss` equal to the configured issuer, `exp` in the future
//! and `nbf` not in the future (zero leeway, like Keycloak's own check). Nothing from the token
//! chooses the key or the issuer.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};

use crate::clock::Clock;
use crate::idp::jwks::{JwksCache, JwksError};

/// Largest token accepted (Backstage refuses user tokens over 32768 characters too).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

/// Why a realm token was refused. The messages are safe to show a caller: they never contain
/// token material.
#[derive(Debug, thiserror::Error)]
pub enum RealmTokenError {
    #[error("the token is larger than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token header has no kid")]
    MissingKid,
    #[error("the token was not signed by a key of the configured issuer")]
    UnknownKey,
    #[error("the token's alg does not match the signing key's algorithm")]
    AlgorithmMismatch,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is not an access token (typ is not Bearer)")]
    NotAccessToken,
    #[error(
        "the token is not an access token (its header typ is not at+jwt or JWT, or its typ claim is not Bearer)"
    )]
    NotAccessTokenJwt,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the issuer's key set is unavailable: {0}")]
    KeysUnavailable(#[from] JwksError),
    #[error("the IdP's introspection says the token is not active")]
    Inactive,
    #[error("the IdP's introspection is unavailable: {0}")]
    IntrospectionUnavailable(String),
}

impl RealmTokenError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RealmTokenError::TooLarge => "too_large",
            RealmTokenError::Malformed => "malformed",
            RealmTokenError::MissingKid => "missing_kid",
            RealmTokenError::UnknownKey => "unknown_key",
            RealmTokenError::AlgorithmMismatch => "alg_mismatch",
            RealmTokenError::BadSignature => "bad_signature",
            RealmTokenError::Expired => "expired",
            RealmTokenError::NotYetValid => "not_yet_valid",
            RealmTokenError::WrongIssuer => "wrong_issuer",
            RealmTokenError::NotAccessToken | RealmTokenError::NotAccessTokenJwt => {
                "not_access_token"
            }
            RealmTokenError::MissingClaim(_) => "missing_claim",
            RealmTokenError::KeysUnavailable(_) => "keys_unavailable",
            RealmTokenError::Inactive => "inactive",
            RealmTokenError::IntrospectionUnavailable(_) => "introspection_unavailable",
        }
    }
}

/// Verifies signature, issuer and time claims of the JWTs of one realm.
pub struct RealmTokenVerifier {
    issuer: String,
    jwks: Arc<JwksCache>,
    clock: Arc<dyn Clock>,
}

impl RealmTokenVerifier {
    pub fn new(issuer: String, jwks: Arc<JwksCache>, clock: Arc<dyn Clock>) -> Self {
        RealmTokenVerifier {
            issuer,
            jwks,
            clock,
        }
    }

    /// The realm's key set.
    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// Verifies signature, issuer and time claims of any JWT from this realm. Returns the
    /// claims and the `kid`.
    pub async fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<(T, String), RealmTokenError> {
        self.verify_typed(token).await.map(|(c, kid, _)| (c, kid))
    }

    /// [`Self::verify`], also returning the JOSE header's `typ` (RFC 7515 §4.1.9), which
    /// RFC 9068 §2.1 uses to mark access tokens (`at+jwt`).
    pub async fn verify_typed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<(T, String, Option<String>), RealmTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(RealmTokenError::TooLarge);
        }
        // decode_header refuses `alg: none` and unknown algorithms: those are malformed here.
        let header = decode_header(token).map_err(|_| RealmTokenError::Malformed)?;
        let kid = header.kid.ok_or(RealmTokenError::MissingKid)?;
        let typ = header.typ;
        let key = self
            .jwks
            .key(&kid)
            .await?
            .ok_or(RealmTokenError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(RealmTokenError::AlgorithmMismatch);
        }
        let mut v = Validation::new(key.alg);
        v.leeway = 0;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_issuer(&[self.issuer.as_str()]);
        v.required_spec_claims = HashSet::from(["exp".to_owned(), "iss".to_owned()]);
        let data = decode::<serde_json::Value>(token, &key.key, &v).map_err(map_jwt_error)?;
        // jsonwebtoken accepts exp == now; RFC 7519 §4.1.4 says "on or after" exp is invalid.
        let now = self.clock.now_unix();
        match data.claims.get("exp").and_then(|e| e.as_u64()) {
            Some(exp) if exp > now => {}
            Some(_) => return Err(RealmTokenError::Expired),
            None => return Err(RealmTokenError::MissingClaim("exp")),
        }
        if let Some(nbf) = data.claims.get("nbf") {
            match nbf.as_u64() {
                Some(n) if n <= now => {}
                _ => return Err(RealmTokenError::NotYetValid),
            }
        }
        let claims =
            serde_json::from_value::<T>(data.claims).map_err(|_| RealmTokenError::Malformed)?;
        Ok((claims, kid, typ))
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> RealmTokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => RealmTokenError::BadSignature,
        ErrorKind::ExpiredSignature => RealmTokenError::Expired,
        ErrorKind::ImmatureSignature => RealmTokenError::NotYetValid,
        ErrorKind::InvalidIssuer => RealmTokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => RealmTokenError::AlgorithmMismatch,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => RealmTokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => RealmTokenError::MissingClaim("exp"),
        _ => RealmTokenError::Malformed,
    }
}
