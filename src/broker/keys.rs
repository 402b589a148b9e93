//! Every cache key of the token service, built here and only here: what makes two requests
//! "the same" for the user cache (an exchange, a user mapping) and for the service cache
//! (see docs/architecture.md "Cache"). Keys are SHA-256 digests over length-prefixed fields
//! ([`KeyBuilder`]); a credential enters a key only hashed.

use secrecy::ExposeSecret;

use super::principal::{BackstageUser, VerifiedUserToken};
use crate::config::{TargetConfig, TokenType, UserMappingKind};
use crate::digest::{KeyBuilder, KeyDigest};

/// The user-cache key of an exchange.
pub(super) fn exchange_key(
    target_name: &str,
    target: &TargetConfig,
    scopes: &[String],
    token_type: TokenType,
    user: &VerifiedUserToken,
) -> KeyDigest {
    // The subject token's SHA-256 stands for the token (collision resistance): hashing the
    // 1-2 KB token once per request instead of once per use.
    KeyBuilder::new("exchange")
        .field(&user.digest)
        .field(target_name.as_bytes())
        .field(target.audience.as_bytes())
        .field_joined(scopes, b' ')
        .field(token_type.urn().as_bytes())
        .finish()
}

/// The user-cache key of an exchange in `cache.key: session` mode (issue 13): the verified
/// subject's issuer, `sub`, `sid` and `azp` instead of the token, so every token of one
/// Keycloak session (a refreshed access token) shares the entry. Only for a token with a
/// `sid`; the caller falls back to [`exchange_key`] otherwise. Its own domain, so a session key
/// never equals a token key.
pub(super) fn session_exchange_key(
    target_name: &str,
    target: &TargetConfig,
    scopes: &[String],
    token_type: TokenType,
    issuer: &str,
    user: &VerifiedUserToken,
    sid: &str,
) -> KeyDigest {
    KeyBuilder::new("exchange-session")
        .field(issuer.as_bytes())
        .field(user.sub().as_bytes())
        .field(sid.as_bytes())
        .field(user.azp().unwrap_or_default().as_bytes())
        .field(target_name.as_bytes())
        .field(target.audience.as_bytes())
        .field_joined(scopes, b' ')
        .field(token_type.urn().as_bytes())
        .finish()
}

/// The service-cache key of a target's client-credentials token.
pub(super) fn service_key(
    target_name: &str,
    target: &TargetConfig,
    scopes: &[String],
) -> KeyDigest {
    KeyBuilder::new("service")
        .field(target_name.as_bytes())
        .field(target.audience.as_bytes())
        .field_joined(scopes, b' ')
        .finish()
}

/// The user-cache key of a user mapping: keyed by the user credential the principal carries
/// (plugin tokens are minted per request) and the subject the mapping names.
pub(super) fn user_mapping_key(
    kind: UserMappingKind,
    user: &BackstageUser,
    subject: &str,
    target_name: &str,
    target: &TargetConfig,
    scopes: &[String],
    token_type: TokenType,
) -> KeyDigest {
    let domain = match kind {
        UserMappingKind::JwtAuthorizationGrant => "jwt-authorization-grant",
        UserMappingKind::Impersonation => "impersonation",
    };
    KeyBuilder::new(domain)
        .field(user.credential.expose_secret().as_bytes())
        .field(subject.as_bytes())
        .field(target_name.as_bytes())
        .field(target.audience.as_bytes())
        .field_joined(scopes, b' ')
        .field(token_type.urn().as_bytes())
        .finish()
}
