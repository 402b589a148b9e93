//! Local verification of the user's Keycloak access token before it is ever sent to Keycloak.
//!
//! Checks, in order: size, JWS shape, a `kid` present and known to the realm's JWKS, the
//! header `alg` equal to the key's algorithm (taken from the key, RFC 8725 §3.1), the signature,
//! `iss` equal to the configured issuer, `exp` in the future and `nbf` not in the future (zero
//! leeway, like Keycloak's own check), `sub` present, and the Keycloak `typ` claim `Bearer` (an
//! ID or refresh token is not an access token: Keycloak would answer `Invalid token`,
//! keycloak-token-exchange.md §3.4 step 2). Junk therefore never reaches Keycloak.
//!
//! A token that passed is remembered in a verified-credential cache keyed by its SHA-256 and
//! bounded by its own `exp` and its key's presence in the JWKS (see `VerifiedCache`).
//!
//! `aud` is deliberately not checked here: whether the broker's client is in the token's
//! audience is Keycloak's V2 authorisation rule, and Keycloak's own error for it
//! (`Client is not within the token audience`) is the one an admin needs to see.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use secrecy::SecretString;
use serde::Deserialize;

use super::jwks::{JwksCache, JwksError};
use crate::clock::Clock;

/// Largest subject token accepted (Backstage refuses user tokens over 32768 characters too).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

/// A Keycloak access token that passed local verification.
#[derive(Clone)]
pub struct VerifiedUserToken {
    pub raw: SecretString,
    pub sub: String,
    pub exp: u64,
    pub preferred_username: Option<String>,
    pub azp: Option<String>,
    /// The token's other claims (for the Backstage identity match, `userToken.matchClaim`).
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub kid: String,
    /// Short SHA-256 prefix of the raw token, for logs.
    pub fingerprint: String,
    /// SHA-256 of the raw token: the verified-credential cache key and the token's field in
    /// the exchange-cache key (computed once per request).
    pub digest: crate::digest::KeyDigest,
}

impl std::fmt::Debug for VerifiedUserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedUserToken")
            .field("sub", &self.sub)
            .field("exp", &self.exp)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a user token was refused. The messages are safe to show a caller: they never contain
/// token material.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
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
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the issuer's key set is unavailable: {0}")]
    KeysUnavailable(#[from] JwksError),
}

impl OidcError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            OidcError::TooLarge => "too_large",
            OidcError::Malformed => "malformed",
            OidcError::MissingKid => "missing_kid",
            OidcError::UnknownKey => "unknown_key",
            OidcError::AlgorithmMismatch => "alg_mismatch",
            OidcError::BadSignature => "bad_signature",
            OidcError::Expired => "expired",
            OidcError::NotYetValid => "not_yet_valid",
            OidcError::WrongIssuer => "wrong_issuer",
            OidcError::NotAccessToken => "not_access_token",
            OidcError::MissingClaim(_) => "missing_claim",
            OidcError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    typ: Option<String>,
    preferred_username: Option<String>,
    azp: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Verifies Keycloak access tokens of one realm.
pub struct OidcVerifier {
    issuer: String,
    jwks: Arc<JwksCache>,
    clock: Arc<dyn Clock>,
    verified: VerifiedCache,
}

/// Most verified user tokens remembered (each entry holds the token and its claims).
const VERIFIED_CACHE_ENTRIES: u64 = 100_000;

/// The verified-credential cache (issue 6 §9): a user token that passed every check is
/// remembered under the SHA-256 of its bytes, so the same token presented again costs a hash
/// and a lookup instead of a signature check. An entry never outlives its credential: moka
/// drops it at the token's `exp`, and every read re-checks `exp > now` against our clock (moka's
/// timer is coarse) and that the verifying `kid` is still in the realm's JWKS (a rotated-out
/// key ends the entry at once). Only successes are cached; a token that failed is checked in
/// full every time.
struct VerifiedCache {
    inner: moka::sync::Cache<crate::digest::KeyDigest, Arc<VerifiedUserToken>>,
}

struct UntilTokenExpiry {
    clock: Arc<dyn Clock>,
}

impl moka::Expiry<crate::digest::KeyDigest, Arc<VerifiedUserToken>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &crate::digest::KeyDigest,
        value: &Arc<VerifiedUserToken>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            value.exp.saturating_sub(self.clock.now_unix()),
        ))
    }
}

impl OidcVerifier {
    pub fn new(issuer: String, jwks: Arc<JwksCache>, clock: Arc<dyn Clock>) -> Self {
        let verified = VerifiedCache {
            inner: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_ENTRIES)
                .expire_after(UntilTokenExpiry {
                    clock: clock.clone(),
                })
                .build(),
        };
        OidcVerifier {
            issuer,
            jwks,
            clock,
            verified,
        }
    }

    /// Entries in the verified-credential cache (approximate; for tests and metrics).
    pub fn verified_entries(&self) -> u64 {
        self.verified.inner.run_pending_tasks();
        self.verified.inner.entry_count()
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedUserToken, OidcError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OidcError::TooLarge);
        }
        let digest = crate::digest::sha256(token.as_bytes());
        if let Some(v) = self.verified.inner.get(&digest) {
            if v.exp > self.clock.now_unix() && self.jwks.has_kid(&v.kid) {
                return Ok((*v).clone());
            }
            self.verified.inner.invalidate(&digest);
        }
        let v = self.verify_uncached(token, digest).await?;
        self.verified.inner.insert(digest, Arc::new(v.clone()));
        Ok(v)
    }

    async fn verify_uncached(
        &self,
        token: &str,
        digest: crate::digest::KeyDigest,
    ) -> Result<VerifiedUserToken, OidcError> {
        let (c, kid) = self.verify_any::<Claims>(token).await?;
        let sub = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(OidcError::MissingClaim("sub"))?;
        let exp = c.exp.ok_or(OidcError::MissingClaim("exp"))?;
        match c.typ.as_deref() {
            // Keycloak's TokenVerifier compares the type case-insensitively.
            Some(t) if t.eq_ignore_ascii_case("Bearer") => {}
            _ => return Err(OidcError::NotAccessToken),
        }
        Ok(VerifiedUserToken {
            raw: SecretString::from(token.to_owned()),
            sub,
            exp,
            preferred_username: c.preferred_username,
            azp: c.azp,
            claims: c.rest,
            kid,
            fingerprint: crate::digest::fingerprint_of(&digest),
            digest,
        })
    }

    /// Verifies signature, issuer and time claims of any JWT from this realm (also used on the
    /// tokens Keycloak issues to the broker). Returns the claims and the `kid`.
    pub async fn verify_any<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<(T, String), OidcError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OidcError::TooLarge);
        }
        // decode_header refuses `alg: none` and unknown algorithms: those are malformed here.
        let header = decode_header(token).map_err(|_| OidcError::Malformed)?;
        let kid = header.kid.ok_or(OidcError::MissingKid)?;
        let key = self.jwks.key(&kid).await?.ok_or(OidcError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(OidcError::AlgorithmMismatch);
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
            Some(_) => return Err(OidcError::Expired),
            None => return Err(OidcError::MissingClaim("exp")),
        }
        if let Some(nbf) = data.claims.get("nbf") {
            match nbf.as_u64() {
                Some(n) if n <= now => {}
                _ => return Err(OidcError::NotYetValid),
            }
        }
        let claims = serde_json::from_value::<T>(data.claims).map_err(|_| OidcError::Malformed)?;
        Ok((claims, kid))
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> OidcError {
    match e.kind() {
        ErrorKind::InvalidSignature => OidcError::BadSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => OidcError::AlgorithmMismatch,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => OidcError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => OidcError::MissingClaim("exp"),
        _ => OidcError::Malformed,
    }
}
