//! The `error` codes of OAuth error answers: RFC 6749 §5.2 (token endpoint), §4.1.2.1
//! (`server_error`, `temporarily_unavailable`, `access_denied`), RFC 6750 §3.1 (resource
//! requests), RFC 8693 §2.2.2 (`invalid_target`), the broker's own codes for answers that are
//! not about OAuth (an unknown route, a proxied upstream failing), and a code another server
//! (Keycloak) answered, passed on as it came. Which HTTP status a code gets is decided at the
//! edge (`http::error`), not here.

use std::fmt;

/// An OAuth error code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// RFC 6749 §5.2: a parameter is missing, repeated, malformed or unsupported.
    InvalidRequest,
    /// RFC 6749 §5.2: client (here: caller) authentication failed.
    InvalidClient,
    /// RFC 6749 §5.2: the grant (here: the subject token at the IdP) is invalid.
    InvalidGrant,
    /// RFC 6749 §5.2: the client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749 §5.2: the grant type is not supported.
    UnsupportedGrantType,
    /// RFC 6749 §5.2: the requested scope is invalid or exceeds what is allowed.
    InvalidScope,
    /// RFC 8693 §2.2.2: the target (audience) is unknown or not allowed.
    InvalidTarget,
    /// RFC 6749 §4.1.2.1: the request is refused.
    AccessDenied,
    /// RFC 6749 §4.1.2.1: the server (here: the IdP or its answer) failed.
    ServerError,
    /// RFC 6749 §4.1.2.1: try again later.
    TemporarilyUnavailable,
    /// RFC 6750 §3.1: the access token is invalid (expired, revoked, malformed).
    InvalidToken,
    /// RFC 6750 §3.1: the token lacks the required scope.
    InsufficientScope,
    /// The broker's own: no such route, target or endpoint.
    NotFound,
    /// The broker's own: a proxied target's upstream failed or gave an unusable answer.
    UpstreamUnavailable,
    /// The broker's own: a proxied target's upstream stayed silent too long.
    UpstreamTimeout,
    /// A code another server answered (Keycloak's `error`), passed on unchanged.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears in `error` (and in a `WWW-Authenticate` challenge).
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::Other(s) => s,
        }
    }

    /// The code for `error` as another server sent it: a known code when it is one, else
    /// [`ErrorCode::Other`] with the text unchanged.
    pub fn parse(s: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|c| c.as_str() == s)
            .cloned()
            .unwrap_or_else(|| ErrorCode::Other(s.to_owned()))
    }

    /// Every code except [`ErrorCode::Other`].
    pub const KNOWN: [ErrorCode; 15] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidClient,
        ErrorCode::InvalidGrant,
        ErrorCode::UnauthorizedClient,
        ErrorCode::UnsupportedGrantType,
        ErrorCode::InvalidScope,
        ErrorCode::InvalidTarget,
        ErrorCode::AccessDenied,
        ErrorCode::ServerError,
        ErrorCode::TemporarilyUnavailable,
        ErrorCode::InvalidToken,
        ErrorCode::InsufficientScope,
        ErrorCode::NotFound,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_foreign_codes_pass_unchanged() {
        for c in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(c.as_str()), c);
        }
        assert_eq!(
            ErrorCode::parse("Invalid_Grant"),
            ErrorCode::Other("Invalid_Grant".into())
        );
        assert_eq!(ErrorCode::parse("invalid_grant").as_str(), "invalid_grant");
    }
}
