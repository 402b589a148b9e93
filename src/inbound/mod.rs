//! Inbound authentication: who is calling, and whose user token came with the call.
//!
//! A request carries at most two credentials:
//! - the *caller credential* in `Authorization: Bearer` (RFC 6750 §2.1), matched the way
//!   Backstage extracts it: `^Bearer[ ]+(\S+)$`, case-insensitive scheme
//!   (docs/reference/backstage-tokens.md §6);
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
mod verified_cache;
pub use authenticate::{AuthError, Authenticated, Authenticator, Refusal};

pub use crate::broker::entity::{expand_template, is_same_person, match_value_for};

pub use crate::broker::principal::{BackstageUser, Principal, PrincipalKind};

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
