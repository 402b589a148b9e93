//! Verification of an OpenID Connect Back-Channel Logout 1.0 logout token (§2.4), as §2.6
//! demands of the receiver: the realm's signature, `iss` and `exp` ([`RealmTokenVerifier`]:
//! the key chosen by `kid` from the realm's JWKS, the algorithm from the key), `aud` naming the
//! broker's client or one of the login clients (`userToken.allowedClients`), `iat`, the back-channel logout `events` member, a `sub` and/or a `sid`, no
//! `nonce` (so an ID token cannot pass for a logout token, §2.4), and a `jti` not seen before
//! within the token's lifetime (§2.6 step 10, replay).
//!
//! Why the login clients too: Keycloak sends a logout token only to the clients that have a
//! client session in the ended user session, and standard token exchange (V2) gives the
//! requester only a transient one (observed on Keycloak 26.7.3: after an exchange, the admin
//! API lists only the login client in the session). So the broker hears of a logout when its
//! URL is the *login client's* "Backchannel logout URL"; the token then names that client in
//! `aud`. Accepting it is safe: it is still the realm's signed statement that the session
//! ended, and its only effect here is an eviction.
//!
//! The verifier owns the replay memory: SHA-256 digests of `iss` + `jti` (never the token),
//! kept until the token's `exp` and at most [`MAX_LOGOUT_TOKEN_LIFETIME`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::clock::Clock;
use crate::digest::{KeyBuilder, KeyDigest};
use crate::idp::realm_token::{RealmTokenError, RealmTokenVerifier};

/// The `events` member's key (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token whose `exp` lies further ahead is refused: the replay memory keeps a `jti`
/// this long at most. Keycloak's tokens live two minutes (the spec's recommendation).
pub const MAX_LOGOUT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Tolerated clock difference for `iat` in the future.
const IAT_SKEW_SECS: u64 = 60;

/// Replayed-`jti` memory bound.
const MAX_REMEMBERED_JTIS: u64 = 100_000;

/// Why a logout token was refused (§2.8: 400). The messages never contain token material.
#[derive(Debug, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("the logout token failed verification: {0}")]
    Realm(#[from] RealmTokenError),
    #[error(
        "the logout token's aud names neither the broker's client nor a userToken.allowedClients client"
    )]
    WrongAudience,
    #[error("the logout token has no valid iat")]
    MissingIat,
    #[error("the logout token's iat is in the future")]
    IssuedInFuture,
    #[error("the logout token lives longer than the broker remembers logout tokens")]
    TooLongLived,
    #[error("the logout token has no back-channel logout events member")]
    MissingEvents,
    #[error("the logout token names neither sub nor sid")]
    NoSubject,
    #[error("a logout token must not contain a nonce")]
    NoncePresent,
    #[error("the logout token has no jti")]
    MissingJti,
    #[error("the logout token was already used (jti replayed)")]
    Replayed,
}

impl LogoutTokenError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LogoutTokenError::Realm(e) => e.kind(),
            LogoutTokenError::WrongAudience => "wrong_audience",
            LogoutTokenError::MissingIat => "missing_iat",
            LogoutTokenError::IssuedInFuture => "iat_in_future",
            LogoutTokenError::TooLongLived => "too_long_lived",
            LogoutTokenError::MissingEvents => "missing_events",
            LogoutTokenError::NoSubject => "no_sub_or_sid",
            LogoutTokenError::NoncePresent => "nonce_present",
            LogoutTokenError::MissingJti => "missing_jti",
            LogoutTokenError::Replayed => "replayed",
        }
    }
}

/// Who a verified logout token logs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutSubject {
    pub sub: Option<String>,
    pub sid: Option<String>,
}

/// Verifies the logout tokens of one realm for one client.
pub struct LogoutTokenVerifier {
    realm: Arc<RealmTokenVerifier>,
    /// Accepted `aud` values: the broker's client id, then the login clients.
    audiences: Vec<String>,
    clock: Arc<dyn Clock>,
    seen: moka::sync::Cache<KeyDigest, ()>,
}

impl LogoutTokenVerifier {
    pub fn new(
        realm: Arc<RealmTokenVerifier>,
        audiences: Vec<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        LogoutTokenVerifier {
            realm,
            audiences,
            clock,
            seen: moka::sync::Cache::builder()
                .max_capacity(MAX_REMEMBERED_JTIS)
                .time_to_live(MAX_LOGOUT_TOKEN_LIFETIME)
                .build(),
        }
    }

    /// §2.6, in its order; the `jti` is remembered only once every other check passed.
    pub async fn verify(&self, token: &str) -> Result<LogoutSubject, LogoutTokenError> {
        let (claims, _kid) = self.realm.verify::<Value>(token).await?;
        let now = self.clock.now_unix();
        let str_claim = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let ours = |a: &str| self.audiences.iter().any(|x| x == a);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => ours(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(ours),
            _ => false,
        };
        if !aud_ok {
            return Err(LogoutTokenError::WrongAudience);
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or(LogoutTokenError::MissingIat)?;
        if iat > now.saturating_add(IAT_SKEW_SECS) {
            return Err(LogoutTokenError::IssuedInFuture);
        }
        // `exp` is checked (present, in the future) by the realm verifier.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if exp > now.saturating_add(MAX_LOGOUT_TOKEN_LIFETIME.as_secs()) {
            return Err(LogoutTokenError::TooLongLived);
        }
        let event_ok = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return Err(LogoutTokenError::MissingEvents);
        }
        let subject = LogoutSubject {
            sub: str_claim("sub").map(str::to_owned),
            sid: str_claim("sid").map(str::to_owned),
        };
        if subject.sub.is_none() && subject.sid.is_none() {
            return Err(LogoutTokenError::NoSubject);
        }
        if claims.get("nonce").is_some() {
            return Err(LogoutTokenError::NoncePresent);
        }
        let jti = str_claim("jti").ok_or(LogoutTokenError::MissingJti)?;
        let iss = str_claim("iss").unwrap_or_default();
        let key = KeyBuilder::new("logout-jti")
            .field(iss.as_bytes())
            .field(jti.as_bytes())
            .finish();
        // Atomic insert-if-absent: two concurrent deliveries of one token, one wins.
        if !self.seen.entry(key).or_insert(()).is_fresh() {
            return Err(LogoutTokenError::Replayed);
        }
        Ok(subject)
    }
}
