//! One principal per request: reads the caller credential (`Authorization: Bearer`, extracted
//! like Backstage's `httpAuth`, backstage-tokens.md §6) and the user's Keycloak token, verifies
//! both, and decides who is calling.
//!
//! - A Bearer credential is a Backstage credential (plugin, user, external access) verified by
//!   [`BackstageVerifier`]; present but invalid fails closed (401), restricted elsewhere 403.
//! - A Backstage *user* principal that also brings a Keycloak token must be the same person:
//!   the token's `userToken.matchClaim` must equal `userToken.matchValue` expanded over the
//!   entity ref; a mismatch is 403.
//! - Without a Bearer credential, a valid Keycloak token alone makes the user the caller
//!   (`oidc:<sub>`), as through a trusted proxy.

use std::sync::Arc;

use super::backstage::{BackstageError, BackstageIdentity, BackstageVerifier};
use super::oidc::{OidcError, OidcVerifier, VerifiedUserToken};
use super::{BackstageUser, BearerHeader, Principal, PrincipalKind, parse_bearer};
use crate::config::UserTokenConfig;

/// The outcome of authentication.
#[derive(Debug)]
pub struct Authenticated {
    pub principal: Principal,
    /// The user's verified Keycloak token, if one came with the request.
    pub user: Option<VerifiedUserToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401 with an RFC 6750 error code.
    #[error("{description}")]
    Unauthenticated {
        description: String,
        token_error: Option<&'static str>,
    },
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// The user's Keycloak token was refused.
    #[error("the user's token was rejected: {error}")]
    UserToken {
        error: OidcError,
        caller_is_user: bool,
    },
}

/// Expands `{ref}`, `{kind}`, `{namespace}`, `{name}` over a Backstage entity ref
/// (`[kind:][namespace/]name`, defaults `user` and `default`).
pub fn expand_template(template: &str, entity_ref: &str) -> String {
    let (kind, rest) = match entity_ref.split_once(':') {
        Some((k, r)) => (k, r),
        None => ("user", entity_ref),
    };
    let (namespace, name) = match rest.split_once('/') {
        Some((n, m)) => (n, m),
        None => ("default", rest),
    };
    template
        .replace("{ref}", entity_ref)
        .replace("{kind}", kind)
        .replace("{namespace}", namespace)
        .replace("{name}", name)
}

pub struct Authenticator {
    backstage: Arc<BackstageVerifier>,
    oidc: Arc<OidcVerifier>,
    user_token: UserTokenConfig,
}

impl Authenticator {
    pub fn new(
        backstage: Arc<BackstageVerifier>,
        oidc: Arc<OidcVerifier>,
        user_token: UserTokenConfig,
    ) -> Self {
        Authenticator {
            backstage,
            oidc,
            user_token,
        }
    }

    pub fn backstage(&self) -> &Arc<BackstageVerifier> {
        &self.backstage
    }

    /// Authenticates one request from its `Authorization` value and the user's Keycloak token
    /// (already extracted from the configured header or `subject_token`).
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        user_token: Option<&str>,
    ) -> Result<Authenticated, AuthError> {
        let caller = match parse_bearer(authorization) {
            BearerHeader::Token(t) => match self.backstage.authenticate(t).await {
                Ok(id) => Some(id),
                Err(BackstageError::Forbidden(m)) => return Err(AuthError::Forbidden(m)),
                Err(BackstageError::Unauthenticated(m)) => {
                    tracing::info!(reason = %m, "caller credential refused");
                    return Err(AuthError::Unauthenticated {
                        description: format!("the caller credential is not valid: {m}"),
                        token_error: Some("invalid_token"),
                    });
                }
            },
            BearerHeader::Absent | BearerHeader::NotBearer => None,
        };
        let user = match user_token {
            None => None,
            Some(t) => match self.oidc.verify(t).await {
                Ok(v) => Some(v),
                Err(error) => {
                    tracing::info!(reason = error.kind(), "user token rejected");
                    return Err(AuthError::UserToken {
                        error,
                        caller_is_user: caller.is_none(),
                    });
                }
            },
        };
        let principal = match caller {
            Some(BackstageIdentity::Service {
                subject,
                restrictions,
            }) => Principal::service(subject, restrictions),
            Some(BackstageIdentity::User {
                entity_ref,
                actor,
                expires_at,
                credential,
            }) => {
                if let Some(u) = &user {
                    self.check_same_person(&entity_ref, u)?;
                }
                Principal {
                    name: entity_ref,
                    kind: PrincipalKind::User,
                    restrictions: None,
                    actor,
                    backstage_user: Some(BackstageUser {
                        expires_at,
                        credential,
                    }),
                }
            }
            None => match &user {
                Some(u) => Principal {
                    name: format!("oidc:{}", u.sub),
                    kind: PrincipalKind::User,
                    restrictions: None,
                    actor: None,
                    backstage_user: None,
                },
                None => {
                    return Err(AuthError::Unauthenticated {
                        description:
                            "no caller credential: send Authorization: Bearer <token> or the user's token"
                                .into(),
                        token_error: None,
                    });
                }
            },
        };
        Ok(Authenticated { principal, user })
    }

    /// The Keycloak token must name the Backstage user (issue 3 §3): mismatch → 403.
    fn check_same_person(&self, entity_ref: &str, u: &VerifiedUserToken) -> Result<(), AuthError> {
        let claim = self.user_token.match_claim.as_str();
        let actual = match claim {
            "sub" => Some(u.sub.clone()),
            "preferred_username" => u.preferred_username.clone(),
            "azp" => u.azp.clone(),
            other => u
                .claims
                .get(other)
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        };
        let expected = expand_template(&self.user_token.match_value, entity_ref);
        if actual.as_deref() == Some(expected.as_str()) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "the user's Keycloak token does not belong to the Backstage user '{entity_ref}' (claim '{claim}' differs)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_over_entity_refs() {
        assert_eq!(expand_template("{name}", "user:default/alice"), "alice");
        assert_eq!(
            expand_template("{kind}|{namespace}|{name}|{ref}", "user:team-a/bob"),
            "user|team-a|bob|user:team-a/bob"
        );
        assert_eq!(
            expand_template("{namespace}/{name}", "carol"),
            "default/carol"
        );
    }
}
