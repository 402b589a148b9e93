//! Whom the broker acts for: the authenticated caller of one request and the user's verified
//! Keycloak token, as the broker's policy and exchange need them. Defined here, at the lowest
//! layer that needs them; `inbound` builds them from the request's credentials (and re-exports
//! them).

use secrecy::SecretString;

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

/// The Backstage user credential behind a user principal (docs/reference/backstage-tokens.md §3.1,
/// §3.3).
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

/// A Keycloak access token that passed local verification: the request's token plus the
/// facts read from it.
#[derive(Clone)]
pub struct VerifiedUserToken {
    pub raw: SecretString,
    pub sub: String,
    pub exp: u64,
    pub preferred_username: Option<String>,
    pub azp: Option<String>,
    /// The Keycloak session (`sid`), when the token names one.
    pub sid: Option<String>,
    /// The value of the configured `userToken.matchClaim` (a string claim), for the Backstage
    /// identity match; `None` when the token lacks it or it is not a string.
    pub match_value: Option<String>,
    /// Keycloak marks service-account (client-credentials) tokens with a `client_id` claim
    /// (`clientId` in older versions) and `preferred_username` `service-account-<client>`.
    pub service_account: bool,
    /// The broker's own client id is in `aud` (RFC 7519 §4.1.3: string or array).
    pub broker_in_aud: bool,
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
