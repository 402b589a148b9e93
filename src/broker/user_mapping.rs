//! User mapping: a Backstage user without a Keycloak token obtains a token of the same person
//! through the target's `userMapping` — an RFC 7523 JWT authorization grant with an assertion
//! the broker signs, or Keycloak's V1 impersonation — cached per user credential and capped
//! at its expiry. The answer must be that user's (a `sub`, not a service account, the
//! `userToken.matchClaim` rule of [`super::entity`]).

use super::fallback::FailedPath;
use super::negative::with_negative;
use super::principal::{BackstageUser, Principal};
use super::{BrokerError, EntryRef, Expected, FetchError, Identity, Issued, TokenService};
use super::{entity, keys};
use crate::config::{TargetConfig, TokenType, UserMapping, UserMappingKind};

impl TokenService {
    /// A Backstage user without a Keycloak token, through the target's `userMapping`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mapped_user(
        &self,
        target_name: &str,
        target: &TargetConfig,
        scopes: &[String],
        token_type: TokenType,
        principal: &Principal,
        bs: &BackstageUser,
        mapping: &UserMapping,
    ) -> Result<Issued, BrokerError> {
        let subject = entity::expand_template(&mapping.subject, &principal.name);
        // Capped at the user credential's expiry (`check_answer`'s `cap_at` below).
        let key = keys::user_mapping_key(
            mapping.kind,
            bs,
            &subject,
            target_name,
            target,
            scopes,
            token_type,
        );
        let signer = self.assertion.clone();
        let from_shared = std::sync::atomic::AtomicBool::new(false);
        let shared = self.shared.as_deref();
        let fetch = with_negative(
            self.negative.as_ref(),
            key,
            super::shared::through(shared, key, &from_shared, async {
                let answer = match mapping.kind {
                    UserMappingKind::JwtAuthorizationGrant => {
                        let signer = signer.ok_or_else(|| {
                            FetchError::Invalid("no assertion signer is configured".into())
                        })?;
                        let now = self.clock.now_unix();
                        let (jwt, _) = signer
                            .sign(&subject, self.idp.issuer(), now)
                            .map_err(|e| FetchError::Invalid(e.to_string()))?;
                        self.idp.jwt_bearer(&jwt, scopes).await
                    }
                    UserMappingKind::Impersonation => {
                        self.idp
                            .impersonate(&subject, &target.audience, scopes, token_type)
                            .await
                    }
                }
                .map_err(FetchError::Idp)?;
                let requested = match mapping.kind {
                    UserMappingKind::JwtAuthorizationGrant => None,
                    UserMappingKind::Impersonation => Some(token_type),
                };
                self.check_answer(
                    answer,
                    target,
                    requested,
                    Expected::Person(&principal.name),
                    Some(bs.expires_at),
                    None,
                )
                .await
                .map_err(FetchError::Invalid)
            }),
        );
        match self.user_cache.get_or_fetch(key, fetch).await {
            Ok((token, cache)) => Ok(Issued {
                token,
                identity: Identity::User,
                cache: super::shared_status(cache, &from_shared),
                fallback: None,
                entry: EntryRef {
                    service: false,
                    key,
                },
            }),
            Err(e) => match &*e {
                FetchError::Idp(i) => {
                    self.after_idp_failure(
                        target_name,
                        target,
                        scopes,
                        i.clone(),
                        FailedPath::UserMapping,
                    )
                    .await
                }
                FetchError::Invalid(m) => Err(BrokerError::InvalidIdpAnswer(m.clone())),
            },
        }
    }
}
