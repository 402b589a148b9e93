//! The token service: from an authenticated request to a downstream token.
//!
//! Flow for one request (no actix types here):
//! 1. the target must exist and the caller must be allowed to use it ([`policy`]);
//! 2. with a verified user token: RFC 8693 exchange at Keycloak, through the user cache
//!    (keyed by a digest of the subject token, target, audience, scopes and token type), with
//!    concurrent identical requests sharing one exchange; the answer is checked before it is
//!    served or cached (Bearer type, issued type, signature, `aud` ∋ target audience, `sub` =
//!    subject `sub`);
//! 3. without one, or when the exchange fails because Keycloak is unreachable, failing, or has
//!    token exchange turned off (`unsupported_grant_type`): the target's fallback policy —
//!    `service_account` serves the broker's client-credentials token (its own cache, shared in
//!    flight), `deny` refuses. Every other Keycloak refusal is returned as is, never hidden.
//!
//! Backstage principals (issue 3): a service principal without a user token gets the broker's
//! client-credentials token (cached per principal name); a Backstage user without a Keycloak
//! token goes through the target's `userMapping` — an RFC 7523 JWT authorization grant with an
//! assertion the broker signs, or V1 impersonation — cached per user credential and capped at
//! its expiry; without a mapping the fallback policy applies.
//!
//! When a target refuses a served token (an upstream 401 in proxy mode), [`TokenService::refused`]
//! drops only the cache entry that token came from, and at most once per entry per
//! [`FORCED_REFRESH_INTERVAL`]: a target that refuses everything costs one extra exchange per
//! user and interval, not one per call, and a user's refused token never costs the shared
//! service-account token.
//!
//! This module holds the service and its request flow (the exchange, the service-account
//! token, the checks of whose token an answer is, the token's cache lifetime); the parts live
//! apart: [`policy`] (who may ask for what), [`fallback`] (which failures the fallback covers
//! and what follows), `user_mapping` (Backstage users without a Keycloak token), `keys` (every
//! cache key), [`cache`] (the token caches), `negative` (remembered failures), `refresh` (the
//! forced-refresh limit), [`entity`] (entity refs and the same-person rule), [`principal`] (the
//! types the broker acts for), [`assertion`] (the RFC 7523 assertion signer).

pub mod assertion;
pub mod cache;
pub mod entity;
pub mod fallback;
mod keys;
mod negative;
pub mod policy;
pub mod principal;
mod refresh;
mod user_mapping;

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::{Config, FallbackPolicy, TargetConfig, TokenType};
use crate::digest::{KeyDigest, fingerprint};
use crate::idp::exchange::ExchangeRequest;
use crate::idp::realm_token::RealmTokenVerifier;
use crate::idp::{IdpClient, IdpError, TokenResponse};
use crate::metrics::Metrics;
pub use cache::{CacheStatus, TokenCache};
use fallback::FailedPath;
pub use fallback::FallbackReason;
use negative::{NegativeCache, with_negative};
pub use policy::PolicyError;
use principal::{Principal, VerifiedUserToken};
pub use refresh::FORCED_REFRESH_INTERVAL;
use refresh::{FORCED_REFRESH_MAX_KEYS, ForcedRefreshLimiter};

/// Whose identity a served token carries (the `X-Token-Broker-Identity` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    User,
    Service,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::User => "user",
            Identity::Service => "service",
        }
    }
}

/// A token Keycloak issued and the broker checked.
pub struct IssuedToken {
    pub access_token: SecretString,
    pub token_type: String,
    pub issued_token_type: TokenType,
    pub scope: Option<String>,
    /// The token's own expiry (Unix seconds).
    pub expires_at: u64,
    /// Served from cache only while now < this (Unix seconds).
    pub cache_until: u64,
    pub fingerprint: String,
    /// `kid` of the realm key that verified the subject token this was exchanged for: when
    /// the key leaves the realm's JWKS, the entry is dropped ([`TokenCache::drop_subject_kids`]).
    pub subject_kid: Option<String>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("fingerprint", &self.fingerprint)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The answer to one token request.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: Arc<IssuedToken>,
    pub identity: Identity,
    pub cache: CacheStatus,
    pub fallback: Option<FallbackReason>,
    /// The cache entry the token is served from ([`TokenService::refused`] drops exactly it).
    entry: EntryRef,
}

/// Which cache holds a served token, and under which key.
#[derive(Debug, Clone, Copy)]
struct EntryRef {
    service: bool,
    key: KeyDigest,
}

/// One token request, already authenticated.
#[derive(Clone, Copy)]
pub struct TokenRequest<'a> {
    pub principal: &'a Principal,
    pub target: &'a str,
    pub scope: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
    pub user_token: Option<&'a VerifiedUserToken>,
}

/// Why no token was served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown target '{0}'")]
    UnknownTarget(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("target '{target}' needs the user's token and does not fall back to a service account")]
    UserTokenRequired { target: String },
    /// `deny` target and Keycloak unreachable or without token exchange.
    #[error("the token exchange for target '{target}' failed: {source}")]
    ExchangeFailed { target: String, source: IdpError },
    /// Keycloak refused the exchange: passed on as is.
    #[error("Keycloak refused the token exchange: {0}")]
    ExchangeRejected(IdpError),
    /// The service-account token could not be obtained.
    #[error("the service-account token for target '{target}' could not be obtained: {source}")]
    ServiceAccountFailed { target: String, source: IdpError },
    /// Keycloak answered with a token that failed the broker's checks.
    #[error("the IdP's answer failed the broker's checks: {0}")]
    InvalidIdpAnswer(String),
}

/// Failure inside a cached fetch (shared by all waiters).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Idp(IdpError),
    #[error("{0}")]
    Invalid(String),
}

/// Whose token an answer must be, checked before it is served or cached.
#[derive(Clone, Copy)]
enum Expected<'a> {
    /// The broker's service account (client credentials): nothing about a user to check.
    Service,
    /// An exchange: the subject token's `sub` (the same user, RFC 8693 §2.1).
    Sub(&'a str),
    /// A user mapping for this Backstage entity ref (issue 9 §1): a user's token (a `sub`, not
    /// a service account) whose `userToken.matchClaim` names that entity, by the same rule as
    /// the Backstage ↔ Keycloak same-person check.
    Person(&'a str),
}

/// The token service shared by all workers.
pub struct TokenService {
    config: Arc<Config>,
    idp: Arc<IdpClient>,
    verifier: Arc<RealmTokenVerifier>,
    user_cache: TokenCache,
    service_cache: TokenCache,
    clock: Arc<dyn Clock>,
    assertion: Option<Arc<assertion::AssertionSigner>>,
    /// Recent IdP failures per user-cache key (`cache.negativeTtl`; `None` when 0).
    negative: Option<NegativeCache>,
    /// Rate limit on dropping an entry because a target refused its token.
    forced_refresh: ForcedRefreshLimiter,
}

impl TokenService {
    pub fn new(
        config: Arc<Config>,
        idp: Arc<IdpClient>,
        verifier: Arc<RealmTokenVerifier>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Self {
        let max = config.cache.max_entries;
        TokenService {
            user_cache: TokenCache::new(max, clock.clone(), metrics.clone()),
            // One entry per target and scope set: small.
            service_cache: TokenCache::new(1024, clock.clone(), metrics.clone()),
            negative: NegativeCache::new(config.cache.negative_ttl, max, metrics),
            forced_refresh: ForcedRefreshLimiter::new(
                FORCED_REFRESH_INTERVAL,
                FORCED_REFRESH_MAX_KEYS,
            ),
            config,
            idp,
            verifier,
            clock,
            assertion: None,
        }
    }

    /// Sets the RFC 7523 assertion signer (`userMapping: jwt_authorization_grant`).
    pub fn with_assertion_signer(
        mut self,
        signer: Option<Arc<assertion::AssertionSigner>>,
    ) -> Self {
        self.assertion = signer;
        self
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn user_cache(&self) -> &TokenCache {
        &self.user_cache
    }

    pub async fn issue(&self, req: TokenRequest<'_>) -> Result<Issued, BrokerError> {
        let target = self
            .config
            .targets
            .get(req.target)
            .ok_or_else(|| BrokerError::UnknownTarget(req.target.to_owned()))?;
        policy::check_caller(
            req.target,
            target,
            req.principal,
            &self.config.backstage.plugin_id,
        )?;
        let scopes = policy::resolve_scopes(req.target, target, req.scope)?;
        let token_type = policy::resolve_token_type(req.target, target, req.requested_token_type)?;

        let Some(user) = req.user_token else {
            if req.principal.kind == principal::PrincipalKind::Service {
                // A service acting as itself: the broker's service-account token, where the
                // target allows service principals (`servicePrincipals`).
                return match target.service_principals {
                    FallbackPolicy::ServiceAccount => {
                        Box::pin(self.service_token(
                            req.target,
                            target,
                            &scopes,
                            Some(&req.principal.name),
                            None,
                        ))
                        .await
                    }
                    FallbackPolicy::Deny => Err(BrokerError::UserTokenRequired {
                        target: req.target.to_owned(),
                    }),
                };
            }
            if let (Some(bs), Some(mapping)) = (&req.principal.backstage_user, &target.user_mapping)
            {
                return Box::pin(self.mapped_user(
                    req.target,
                    target,
                    &scopes,
                    token_type,
                    req.principal,
                    bs,
                    mapping,
                ))
                .await;
            }
            return match target.fallback {
                FallbackPolicy::ServiceAccount => {
                    tracing::debug!(
                        target = req.target,
                        "no user credential: serving the service-account token"
                    );
                    Box::pin(self.service_token(
                        req.target,
                        target,
                        &scopes,
                        None,
                        Some(FallbackReason::NoUserToken),
                    ))
                    .await
                }
                FallbackPolicy::Deny => Err(BrokerError::UserTokenRequired {
                    target: req.target.to_owned(),
                }),
            };
        };

        match self
            .exchange(req.target, target, &scopes, token_type, user)
            .await
        {
            Ok(issued) => Ok(issued),
            Err(FetchOutcome::Idp(e)) => {
                Box::pin(self.after_idp_failure(
                    req.target,
                    target,
                    &scopes,
                    e,
                    FailedPath::Exchange {
                        subject: &user.fingerprint,
                    },
                ))
                .await
            }
            Err(FetchOutcome::Invalid(msg)) => Err(BrokerError::InvalidIdpAnswer(msg)),
        }
    }

    /// Like [`TokenService::issue`], but for a call that must not run out of token: when the
    /// token served has less than `min_remaining` left (a cached one near its end), that cache
    /// entry is dropped and the token fetched once more. If the fresh token is still shorter
    /// (the IdP issues shorter-lived tokens) it is served anyway. Nothing is revoked: a token
    /// already handed out stays valid until its own `exp`.
    pub async fn issue_with_min_lifetime(
        &self,
        req: TokenRequest<'_>,
        min_remaining: std::time::Duration,
    ) -> Result<Issued, BrokerError> {
        let min = min_remaining.as_secs();
        let first = self.issue(req).await?;
        let left = |i: &Issued| i.token.expires_at.saturating_sub(self.clock.now_unix());
        if left(&first) >= min {
            return Ok(first);
        }
        self.cache_of(first.entry)
            .invalidate(&first.entry.key)
            .await;
        let second = self.issue(req).await?;
        if left(&second) < min {
            tracing::debug!(
                target = req.target,
                left = left(&second),
                wanted = min,
                "a fresh token has less than the wanted lifetime: the IdP's token lifespan is shorter; serving it"
            );
        }
        Ok(second)
    }

    /// The target refused `issued`'s token (an upstream 401 in proxy mode). Drops the one
    /// cache entry that token was served from — a user's exchanged token, or the
    /// service-account token when that is what was refused — so that asking again obtains a
    /// fresh token, but at most once per entry per [`FORCED_REFRESH_INTERVAL`].
    ///
    /// Returns whether asking again can yield another token: `true` when the entry was
    /// dropped, or already holds a newer token; `false` when the refresh is rate-limited (the
    /// caller then passes the target's refusal on instead of retrying with the same token).
    pub async fn refused(&self, issued: &Issued) -> bool {
        let cache = self.cache_of(issued.entry);
        if let Some(current) = cache.fresh(&issued.entry.key).await
            && !Arc::ptr_eq(&current, &issued.token)
        {
            // Another request already replaced it: asking again serves that one, no IdP call.
            return true;
        }
        if !self.forced_refresh.allow(&issued.entry.key, Instant::now()) {
            tracing::info!(
                token_fp = %issued.token.fingerprint,
                identity = issued.identity.as_str(),
                interval_s = FORCED_REFRESH_INTERVAL.as_secs(),
                "the target refused a token whose entry was refreshed within the interval: not obtaining it again"
            );
            return false;
        }
        cache.invalidate(&issued.entry.key).await;
        true
    }

    fn cache_of(&self, entry: EntryRef) -> &TokenCache {
        if entry.service {
            &self.service_cache
        } else {
            &self.user_cache
        }
    }

    async fn exchange(
        &self,
        target_name: &str,
        target: &TargetConfig,
        scopes: &[String],
        token_type: TokenType,
        user: &VerifiedUserToken,
    ) -> Result<Issued, FetchOutcome> {
        let key = keys::exchange_key(target_name, target, scopes, token_type, user);
        let entry = EntryRef {
            service: false,
            key,
        };
        // A hit first, before the miss path's future is even built: that future is large, and
        // building and moving it on every hit showed up as copies in the hit's profile (issue 16).
        if let Some(token) = self.user_cache.fresh(&key).await {
            return Ok(Issued {
                token,
                identity: Identity::User,
                cache: CacheStatus::Hit,
                fallback: None,
                entry,
            });
        }
        let fetch = Box::pin(with_negative(self.negative.as_ref(), key, async {
            let answer = self
                .idp
                .exchange(&ExchangeRequest {
                    subject_token: &user.raw,
                    audience: &target.audience,
                    scopes,
                    requested_token_type: token_type,
                })
                .await
                .map_err(FetchError::Idp)?;
            self.check_answer(
                answer,
                &target.audience,
                Some(token_type),
                Expected::Sub(&user.sub),
                Some(user.exp),
                Some(&user.kid),
            )
            .await
            .map_err(FetchError::Invalid)
        }));
        Box::pin(self.user_cache.get_or_fetch(key, fetch))
            .await
            .map(|(token, cache)| Issued {
                token,
                identity: Identity::User,
                cache,
                fallback: None,
                entry,
            })
            .map_err(|e| match &*e {
                FetchError::Idp(i) => FetchOutcome::Idp(i.clone()),
                FetchError::Invalid(m) => FetchOutcome::Invalid(m.clone()),
            })
    }

    async fn service_token(
        &self,
        target_name: &str,
        target: &TargetConfig,
        scopes: &[String],
        principal: Option<&str>,
        reason: Option<FallbackReason>,
    ) -> Result<Issued, BrokerError> {
        // Every service principal gets the same token (the broker's own service account), so
        // the entry is shared; the caller's name is only logged.
        if let Some(name) = principal {
            tracing::debug!(caller = %name, target = target_name, "service principal: service-account token");
        }
        let key = keys::service_key(target_name, target, scopes);
        let fetch = async {
            let answer = self
                .idp
                .client_credentials(scopes)
                .await
                .map_err(FetchError::Idp)?;
            self.check_answer(
                answer,
                &target.audience,
                None,
                Expected::Service,
                None,
                None,
            )
            .await
            .map_err(FetchError::Invalid)
        };
        match self.service_cache.get_or_fetch(key, fetch).await {
            Ok((token, cache)) => Ok(Issued {
                token,
                identity: Identity::Service,
                cache,
                fallback: reason,
                entry: EntryRef { service: true, key },
            }),
            Err(e) => match &*e {
                FetchError::Idp(i) => Err(BrokerError::ServiceAccountFailed {
                    target: target_name.to_owned(),
                    source: i.clone(),
                }),
                FetchError::Invalid(m) => Err(BrokerError::InvalidIdpAnswer(m.clone())),
            },
        }
    }

    /// Checks Keycloak's answer before anything is served or cached (RFC 8693 §2.2.1): a
    /// mismatch is an error, never a silently served token.
    async fn check_answer(
        &self,
        answer: TokenResponse,
        audience: &str,
        requested: Option<TokenType>,
        expected: Expected<'_>,
        cap_at: Option<u64>,
        subject_kid: Option<&str>,
    ) -> Result<Arc<IssuedToken>, String> {
        let answer = crate::idp::answer::check(
            &self.verifier,
            answer,
            audience,
            requested,
            &self.config.user_token.match_claim,
        )
        .await?;
        match expected {
            Expected::Service => {}
            Expected::Sub(subject) => {
                if answer.sub.as_deref() != Some(subject) {
                    return Err(
                        "the issued token's sub differs from the subject token's sub".into(),
                    );
                }
            }
            Expected::Person(entity_ref) => {
                if answer.sub.as_deref().is_none_or(str::is_empty) {
                    return Err("the issued token has no sub".into());
                }
                if answer.service_account {
                    return Err(
                        "the user mapping returned a service-account token, not the user's".into(),
                    );
                }
                if !entity::is_same_person(
                    &self.config.user_token,
                    entity_ref,
                    answer.match_value.as_deref(),
                ) {
                    return Err(format!(
                        "the user mapping returned a token of another user than '{entity_ref}' (claim '{}' differs)",
                        self.config.user_token.match_claim
                    ));
                }
            }
        }
        let now = self.clock.now_unix();
        let mut expires_at = answer.exp;
        if let Some(ei) = answer.expires_in {
            expires_at = expires_at.min(now.saturating_add(ei));
        }
        let mut cap = expires_at;
        if let Some(c) = cap_at {
            // A cached result must not outlive the credential it was derived from.
            cap = cap.min(c);
        }
        let margin = self.config.cache.safety_margin.as_secs();
        Ok(Arc::new(IssuedToken {
            fingerprint: fingerprint(&answer.access_token),
            subject_kid: subject_kid.map(str::to_owned),
            access_token: SecretString::from(answer.access_token),
            token_type: answer.token_type,
            issued_token_type: answer.issued_token_type,
            scope: answer.scope,
            expires_at,
            cache_until: cap.saturating_sub(margin),
        }))
    }
}

enum FetchOutcome {
    Idp(IdpError),
    Invalid(String),
}
