//! Whom the broker acts for: the authenticated caller of one request as the broker's policy
//! needs it. Defined here, at the lowest layer that needs it; `inbound` builds it from the
//! request's credentials (and re-exports it).

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
