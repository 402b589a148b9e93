//! Inbound authentication: who is calling, and whose user token came with the call.
//!
//! A request carries at most two credentials:
//! - the *caller credential* in `Authorization: Bearer` (RFC 6750 §2.1), matched the way
//!   Backstage extracts it: `^Bearer[ ]+(\S+)$`, case-insensitive scheme (backstage-tokens.md §6);
//! - the *user token*: the user's Keycloak access token in the configured header (default
//!   `X-Forwarded-Access-Token`) or in the RFC 8693 `subject_token` form field.
//!
//! A caller credential that is present but unknown fails closed (401), even when a valid user
//! token is also present. A user token is accepted only if it is a user's (not a token the
//! broker obtained, not a service account's, the broker in `aud`, its `azp` in
//! `userToken.allowedClients`). A request with no caller credential but a user token is the
//! user calling through a trusted proxy (oauth2-proxy sets that header) only where
//! `userToken.allowWithoutCaller` says so; its principal is then the user. Nothing from the
//! request decides which key or issuer verifies a token.

pub mod backstage;
pub mod oidc;

mod authenticate;
pub use authenticate::{
    AuthError, Authenticated, Authenticator, Refusal, expand_template, is_same_person,
    match_value_for,
};

use crate::config::AccessRestriction;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The name allow-lists match: a static or external subject verbatim (as Backstage
    /// does), `plugin:<id>`, a Backstage user entity ref (`user:default/alice`), or
    /// `oidc:<sub>` for a user authenticated by a Keycloak token alone.
    pub name: String,
    pub kind: PrincipalKind,
    /// Backstage `accessRestrictions` of the matched external-access entry.
    pub restrictions: Option<Vec<AccessRestriction>>,
    /// For a user via a plugin (`obo`): the plugin, `plugin:<id>`.
    pub actor: Option<String>,
    /// For a Backstage user principal: the user credential it carries.
    pub backstage_user: Option<BackstageUser>,
}

/// The Backstage user credential behind a user principal (backstage-tokens.md §3.1, §3.3).
#[derive(Debug, Clone)]
pub struct BackstageUser {
    /// `exp` of the user (or `obo`) token: nothing derived from it outlives it.
    pub expires_at: u64,
    /// The user or limited user token; a cache key, never sent anywhere.
    pub credential: secrecy::SecretString,
}

impl Principal {
    /// A service principal (static caller, plugin, external subject).
    pub fn service(name: impl Into<String>, restrictions: Option<Vec<AccessRestriction>>) -> Self {
        Principal {
            name: name.into(),
            kind: PrincipalKind::Service,
            restrictions,
            actor: None,
            backstage_user: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A service caller (static external-access token).
    Service,
    /// A user authenticated by their own Keycloak access token.
    User,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Service => "service",
            PrincipalKind::User => "user",
        }
    }
}

/// The result of reading `Authorization`.
#[derive(Debug, PartialEq, Eq)]
pub enum BearerHeader<'a> {
    Absent,
    Token(&'a str),
    /// Present but not `Bearer <token>`: treated as no caller credential, as Backstage does.
    NotBearer,
}

/// Extracts a Bearer token the way Backstage's `httpAuth` does: `^Bearer[ ]+(\S+)$`, scheme
/// case-insensitive, spaces (not tabs) between scheme and token, trailing whitespace ignored.
pub fn parse_bearer(value: Option<&[u8]>) -> BearerHeader<'_> {
    let Some(raw) = value else {
        return BearerHeader::Absent;
    };
    let Ok(s) = std::str::from_utf8(raw) else {
        return BearerHeader::NotBearer;
    };
    let s = s.trim_end();
    let Some(scheme) = s.get(..6) else {
        return BearerHeader::NotBearer;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return BearerHeader::NotBearer;
    }
    let rest = s.get(6..).unwrap_or("");
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() || token.is_empty() || token.chars().any(char::is_whitespace) {
        return BearerHeader::NotBearer;
    }
    BearerHeader::Token(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_matches_backstage() {
        assert_eq!(parse_bearer(None), BearerHeader::Absent);
        assert_eq!(
            parse_bearer(Some(b"Bearer abc")),
            BearerHeader::Token("abc")
        );
        assert_eq!(
            parse_bearer(Some(b"bearer abc")),
            BearerHeader::Token("abc")
        );
        assert_eq!(
            parse_bearer(Some(b"BEARER   abc")),
            BearerHeader::Token("abc")
        );
        assert_eq!(
            parse_bearer(Some(b"Bearer abc ")),
            BearerHeader::Token("abc")
        );
        assert_eq!(parse_bearer(Some(b"Bearer\tabc")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(b"Bearerabc")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(b"Bearer a b")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(b"Bearer ")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(b"Basic abc")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(b"Token abc")), BearerHeader::NotBearer);
        assert_eq!(parse_bearer(Some(&[0xff, 0xfe])), BearerHeader::NotBearer);
    }
}
