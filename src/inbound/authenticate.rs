//! One principal per request: reads the caller credential (`Authorization: Bearer`, extracted
//! like Backstage's `httpAuth`, docs/reference/backstage-tokens.md §6) and the user's Keycloak
//! token, verifies
//! both, and decides who is calling.
//!
//! - A Bearer credential is a Backstage credential (plugin, user, external access) verified by
//!   [`BackstageVerifier`]; present but invalid fails closed (401), restricted elsewhere 403.
//! - A Keycloak token that verifies is accepted as *a user's* token only if it is one (issue 9
//!   §1): not issued to the broker's own client (every token the broker hands out has `azp` =
//!   the broker, and Keycloak would accept it back as a subject), not a service account's, with
//!   the broker's client in `aud` (Keycloak's own V2 rule, checked here before any call), and
//!   issued to a client listed in `userToken.allowedClients`. Otherwise 400 `invalid_request`
//!   naming the rule.
//! - A Backstage *user* principal that also brings a Keycloak token must be the same person:
//!   the token's `userToken.matchClaim` must equal `userToken.matchValue` expanded over the
//!   whole entity ref (kind and namespace included, see
//!   [`crate::broker::entity::match_value_for`]); a mismatch is 403.
//! - Without a Bearer credential, a Keycloak token alone makes the user the caller
//!   (`oidc:<sub>`) only with `userToken.allowWithoutCaller` (a trusted proxy such as
//!   oauth2-proxy in front); otherwise 401 before the token is even verified.

use std::sync::Arc;

use super::backstage::{BackstageError, BackstageIdentity, BackstageVerifier};
use super::oidc::{OidcError, OidcVerifier, VerifiedUserToken};
use super::{BackstageUser, BearerHeader, Principal, PrincipalKind, parse_bearer};
use crate::broker::entity::is_same_person;
use crate::config::UserTokenConfig;

/// The outcome of authentication.
#[derive(Debug)]
pub struct Authenticated<'a> {
    pub principal: Principal,
    /// The user's verified Keycloak token, if one came with the request (borrowing it).
    pub user: Option<VerifiedUserToken<'a>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401 with an RFC 6750 error code.
    #[error("{description}")]
    Unauthenticated {
        description: String,
        token_error: Option<crate::protocol::ErrorCode>,
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
    /// A genuine token of the realm that is not acceptable as a user's token: 400
    /// `invalid_request` (RFC 8693 §2.2.2: the subject token is invalid for this request).
    #[error("{0}")]
    NotAUserToken(Refusal),
}

/// Why a verified realm token is not accepted as a user's token (issue 9 §1). The texts name
/// the rule and never contain token material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the user's token was rejected: it was issued to the broker's own client '{0}' (azp); a token the broker obtained is never accepted back as a user's token"
    )]
    BrokerIssued(String),
    #[error(
        "the user's token was rejected: it is a service-account (client credentials) token, not a user's token"
    )]
    ServiceAccount,
    #[error(
        "the user's token was rejected: its aud does not contain the broker's client '{0}' (Keycloak's token-exchange rule; Keycloak would answer 'Client is not within the token audience')"
    )]
    NotInAudience(String),
    #[error(
        "the user's token was rejected: it was issued to client '{azp}' (azp), which userToken.allowedClients does not list"
    )]
    ClientNotAllowed { azp: String, list_empty: bool },
}

impl Refusal {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::BrokerIssued(_) => "broker_issued",
            Refusal::ServiceAccount => "service_account",
            Refusal::NotInAudience(_) => "broker_not_in_aud",
            Refusal::ClientNotAllowed { .. } => "client_not_allowed",
        }
    }

    /// The likely fix, for the error answer's `hint`.
    pub fn hint(&self) -> String {
        match self {
            Refusal::BrokerIssued(_) => "send the user's own Keycloak access token (from the client the user logged in with), never a token the broker returned".into(),
            Refusal::ServiceAccount => "a service acting as itself sends only its caller credential (Authorization); the target's servicePrincipals policy then applies".into(),
            Refusal::NotInAudience(client) => crate::idp::hints::keycloak_hint(
                "access_denied",
                Some("Client is not within the token audience"),
                client,
            )
            .unwrap_or_default(),
            Refusal::ClientNotAllowed { azp, list_empty: true } => format!(
                "userToken.allowedClients is empty, so no Keycloak user token is accepted: list the client users log in with (here '{azp}') if its users may use the broker"
            ),
            Refusal::ClientNotAllowed { azp, .. } => format!(
                "if users who log in with client '{azp}' may use the broker, add it to userToken.allowedClients"
            ),
        }
    }
}

pub struct Authenticator {
    backstage: Arc<BackstageVerifier>,
    oidc: Arc<OidcVerifier>,
    user_token: UserTokenConfig,
    /// `keycloak.clientId`: the broker's own client.
    client_id: String,
}

impl Authenticator {
    pub fn new(
        backstage: Arc<BackstageVerifier>,
        oidc: Arc<OidcVerifier>,
        user_token: UserTokenConfig,
        client_id: String,
    ) -> Self {
        Authenticator {
            backstage,
            oidc,
            user_token,
            client_id,
        }
    }

    pub fn backstage(&self) -> &Arc<BackstageVerifier> {
        &self.backstage
    }

    /// Authenticates one request from its `Authorization` value and the user's Keycloak token
    /// (already extracted from the configured header or `subject_token`).
    pub async fn authenticate<'t>(
        &self,
        authorization: Option<&[u8]>,
        user_token: Option<&'t str>,
    ) -> Result<Authenticated<'t>, AuthError> {
        let caller = match parse_bearer(authorization) {
            BearerHeader::Token(t) => match self.backstage.authenticate(t).await {
                Ok(id) => Some(id),
                Err(BackstageError::Forbidden(m)) => return Err(AuthError::Forbidden(m)),
                Err(BackstageError::Unauthenticated(m)) => {
                    tracing::info!(reason = %m, "caller credential refused");
                    return Err(AuthError::Unauthenticated {
                        description: format!("the caller credential is not valid: {m}"),
                        token_error: Some(crate::protocol::ErrorCode::InvalidToken),
                    });
                }
            },
            BearerHeader::Absent | BearerHeader::NotBearer => None,
        };
        if caller.is_none() && !self.user_token.allow_without_caller {
            // A user token alone is not a credential unless the operator says a trusted proxy
            // stands in front: refused before any verification work.
            let description = if user_token.is_some() {
                "no caller credential: send Authorization: Bearer <token>; a user's token alone is accepted only with userToken.allowWithoutCaller (behind a trusted proxy)"
            } else {
                "no caller credential: send Authorization: Bearer <token>"
            };
            return Err(AuthError::Unauthenticated {
                description: description.into(),
                token_error: None,
            });
        }
        let user = match user_token {
            None => None,
            Some(t) => match self.oidc.verify(t).await {
                Ok(v) => {
                    if let Err(r) = self.check_user_token(&v) {
                        tracing::info!(reason = r.kind(), subject = %v.fingerprint(), "token refused as a user's token");
                        return Err(AuthError::NotAUserToken(r));
                    }
                    Some(v)
                }
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
                // Only reached with userToken.allowWithoutCaller; allowedCallers still apply
                // to this principal like to any other (broker::policy::check_caller).
                Some(u) => Principal {
                    name: format!("oidc:{}", u.sub()),
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

    /// The acceptance rules of a user's token (issue 9 §1), in the order an admin fixes them:
    /// the broker's own tokens and service accounts are never users; then Keycloak's own
    /// audience rule; then the operator's list of login clients.
    fn check_user_token(&self, u: &VerifiedUserToken<'_>) -> Result<(), Refusal> {
        if u.azp() == Some(self.client_id.as_str()) {
            return Err(Refusal::BrokerIssued(self.client_id.clone()));
        }
        if u.service_account() {
            return Err(Refusal::ServiceAccount);
        }
        if !u.broker_in_aud() {
            return Err(Refusal::NotInAudience(self.client_id.clone()));
        }
        let allowed = u
            .azp()
            .is_some_and(|azp| self.user_token.allowed_clients.iter().any(|c| c == azp));
        if !allowed {
            return Err(Refusal::ClientNotAllowed {
                azp: u.azp().unwrap_or("(none)").into(),
                list_empty: self.user_token.allowed_clients.is_empty(),
            });
        }
        Ok(())
    }

    /// The Keycloak token must name the Backstage user (issue 3 §3): mismatch → 403.
    fn check_same_person(
        &self,
        entity_ref: &str,
        u: &VerifiedUserToken<'_>,
    ) -> Result<(), AuthError> {
        if is_same_person(&self.user_token, entity_ref, u.match_value()) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "the user's Keycloak token does not belong to the Backstage user '{entity_ref}' (claim '{}' differs)",
                self.user_token.match_claim
            )))
        }
    }
}
