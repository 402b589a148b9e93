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
//! types the broker acts for), [`assertion`] (the RFC 7523 assertion signer), [`shared`] (the
//! second-level cache in Redis shared by replicas, `cache.shared`: entered only on a
//! first-level miss, inside the first-level cache's fetch).

pub mod assertion;
pub mod cache;
pub mod entity;
pub mod fallback;
mod keys;
mod negative;
pub mod policy;
pub mod principal;
mod refresh;
mod refresh_ahead;
pub mod shared;
mod user_mapping;

use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::{CacheKeyMode, Config, FallbackPolicy, TargetConfig, TokenType};
use crate::digest::{KeyDigest, fingerprint};
use crate::idp::exchange::ExchangeRequest;
use crate::idp::logout_token::{LogoutSubject, LogoutTokenError, LogoutTokenVerifier};
use crate::idp::realm_token::RealmTokenVerifier;
use crate::idp::{IdpClient, IdpError, TokenResponse};
use crate::metrics::Metrics;
pub use cache::{CacheStatus, SubjectIndex, TokenCache};
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
    /// Shared with every entry of the same value ([`cache::shared_str`]; issue 16 §2).
    pub token_type: Arc<str>,
    pub issued_token_type: TokenType,
    /// Shared like `token_type`.
    pub scope: Option<Arc<str>>,
    /// The token's own expiry (Unix seconds).
    pub expires_at: u64,
    /// Served from cache only while now < this (Unix seconds).
    pub cache_until: u64,
    /// When the broker obtained it (Unix seconds): the start of its cache life
    /// (`cache.refreshAhead`).
    pub created_at: u64,
    pub fingerprint: String,
    /// `kid` of the realm key that verified the subject token this was exchanged for: when
    /// the key leaves the realm's JWKS, the entry is dropped ([`TokenCache::drop_subject_kids`]).
    /// Shared like `token_type`.
    pub subject_kid: Option<Arc<str>>,
    /// Whose user and session the token derives from (digests): what a logout evicts
    /// ([`TokenCache::evict_session`], [`TokenCache::evict_subject`]).
    pub index: cache::SubjectIndex,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("fingerprint", &self.fingerprint)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a logout or `/admin/revoke` evicts, by index digest (never the `sub` / `sid` itself):
/// the message the eviction broadcast carries between replicas (sealed in Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eviction {
    Session(crate::digest::KeyDigest),
    Subject(crate::digest::KeyDigest),
}

impl Eviction {
    fn namespace(&self) -> &'static str {
        match self {
            Eviction::Session(_) => shared::REVOKED_SESSION,
            Eviction::Subject(_) => shared::REVOKED_SUBJECT,
        }
    }

    fn digest(&self) -> &crate::digest::KeyDigest {
        match self {
            Eviction::Session(d) | Eviction::Subject(d) => d,
        }
    }

    fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(4 + 64);
        s.push_str(match self {
            Eviction::Session(_) => "sid:",
            Eviction::Subject(_) => "sub:",
        });
        for b in self.digest() {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    fn decode(s: &str) -> Option<Eviction> {
        let (kind, hex) = s.split_once(':')?;
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        match kind {
            "sid" => Some(Eviction::Session(d)),
            "sub" => Some(Eviction::Subject(d)),
            _ => None,
        }
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
    pub user_token: Option<&'a VerifiedUserToken<'a>>,
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
    /// Back-channel logout tokens (OIDC Back-Channel Logout 1.0), with their replay memory.
    logout_tokens: LogoutTokenVerifier,
    /// `cache.refreshAhead` (`None` when off).
    refresh_ahead: Option<refresh_ahead::RefreshAhead>,
    /// This service, for the background renewals of refresh ahead ([`TokenService::into_shared`]).
    me: std::sync::Weak<TokenService>,
    /// `cache.shared`: the eviction broadcast to every replica's first-level cache.
    eviction: Option<Arc<shared::EvictionChannel>>,
    /// `cache.shared`: the second level in Redis and the cluster-wide single-flight.
    shared: Option<Arc<shared::SharedCache>>,
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
            refresh_ahead: refresh_ahead::RefreshAhead::new(
                config.cache.refresh_ahead_percent,
                max,
            ),
            me: std::sync::Weak::new(),
            logout_tokens: LogoutTokenVerifier::new(
                verifier.clone(),
                std::iter::once(&config.keycloak.client_id)
                    .chain(&config.user_token.allowed_clients)
                    .cloned()
                    .collect(),
                clock.clone(),
            ),
            config,
            idp,
            verifier,
            clock,
            assertion: None,
            shared: None,
            eviction: None,
        }
    }

    /// Sets the shared second-level cache (`cache.shared`).
    pub fn with_shared_cache(mut self, shared: Option<Arc<shared::SharedCache>>) -> Self {
        self.shared = shared;
        self
    }

    /// The shared cache, when configured (for the eviction broadcast).
    pub fn shared_cache(&self) -> Option<&Arc<shared::SharedCache>> {
        self.shared.as_ref()
    }

    /// Sets the RFC 7523 assertion signer (`userMapping: jwt_authorization_grant`).
    pub fn with_assertion_signer(
        mut self,
        signer: Option<Arc<assertion::AssertionSigner>>,
    ) -> Self {
        self.assertion = signer;
        self
    }

    /// The service behind an `Arc`, knowing itself, so refresh ahead can renew entries in the
    /// background (without it, refresh ahead does nothing).
    pub fn into_shared(self) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let mut s = self;
            s.me = me.clone();
            if let Some(shared) = &s.shared {
                // Every replica drops its first-level entries of a logout published anywhere.
                let me = me.clone();
                s.eviction = Some(shared.eviction_channel(Arc::new(move |selector: &str| {
                    if let (Some(svc), Some(e)) = (me.upgrade(), Eviction::decode(selector)) {
                        svc.evict_local(e);
                    }
                })));
            }
            s
        })
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn user_cache(&self) -> &TokenCache {
        &self.user_cache
    }

    /// A back-channel logout (OIDC Back-Channel Logout 1.0 §2.5): verifies the logout token
    /// (§2.6) and evicts what it names — the session's entries when it has a `sid` (Keycloak
    /// sends `sub` too; the user's other sessions stay), else every entry of the `sub`.
    pub async fn backchannel_logout(
        &self,
        logout_token: &str,
    ) -> Result<LogoutSubject, LogoutTokenError> {
        let who = self.logout_tokens.verify(logout_token).await?;
        match (&who.sid, &who.sub) {
            (Some(sid), _) => self.evict_session(sid).await,
            (None, Some(sub)) => self.evict_subject(sub).await,
            (None, None) => {}
        }
        Ok(who)
    }

    /// Drops every user-cache entry derived from Keycloak session `sid`: here, in the shared
    /// cache and (through the eviction broadcast) on every other replica.
    pub async fn evict_session(&self, sid: &str) {
        self.evict(Eviction::Session(cache::session_digest(sid)))
            .await;
    }

    /// Drops every user-cache entry derived from user `sub`, as [`Self::evict_session`].
    pub async fn evict_subject(&self, sub: &str) {
        self.evict(Eviction::Subject(cache::subject_digest(sub)))
            .await;
    }

    async fn evict(&self, e: Eviction) {
        self.evict_local(e);
        if let Some(shared) = &self.shared {
            // Redis first: a replica that misses the broadcast (pub/sub keeps nothing) still
            // finds the revocation when it next reads the shared entry.
            shared.revoke(e.namespace(), e.digest()).await;
        }
        if let Some(channel) = &self.eviction
            && let Err(err) = channel.publish(&e.encode()).await
        {
            tracing::warn!(error = %err, "could not broadcast a cache eviction to the other replicas");
        }
    }

    fn evict_local(&self, e: Eviction) {
        match e {
            Eviction::Session(d) => self.user_cache.evict_session_digest(d),
            Eviction::Subject(d) => self.user_cache.evict_subject_digest(d),
        }
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
                        subject: user.fingerprint().as_str(),
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
        if let Some(s) = &self.shared {
            s.remove(&first.entry.key).await;
        }
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
        if let Some(s) = &self.shared {
            // The other replicas would serve the refused token again from Redis.
            s.remove(&issued.entry.key).await;
        }
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
        user: &VerifiedUserToken<'_>,
    ) -> Result<Issued, FetchOutcome> {
        // `cache.key: session` with a verified `sid`: one entry per Keycloak session. The entry
        // lives by the issued token's deadline (any valid token of the session may present
        // itself later), and is served only while the presenting token (minus the margin) is
        // valid. Otherwise (the default, or a token without `sid`): one entry per token, capped
        // at that token's expiry.
        let margin = self.config.cache.safety_margin.as_secs();
        let (key, until, cap) = match (self.config.cache.key, user.sid()) {
            (CacheKeyMode::Session, Some(sid)) => (
                keys::session_exchange_key(
                    target_name,
                    target,
                    scopes,
                    token_type,
                    self.config.keycloak.issuer.as_str(),
                    user,
                    sid,
                ),
                user.exp().saturating_sub(margin),
                None,
            ),
            _ => (
                keys::exchange_key(target_name, target, scopes, token_type, user),
                u64::MAX,
                Some(user.exp()),
            ),
        };
        let entry = EntryRef {
            service: false,
            key,
        };
        // A hit first, before the miss path's future is even built: that future is large, and
        // building and moving it on every hit showed up as copies in the hit's profile (issue 16).
        if let Some(token) = self.user_cache.fresh_until(&key, until).await {
            if let Some(ra) = &self.refresh_ahead
                && ra.claim(&key, &token, self.clock.now_unix())
            {
                self.renew_in_background(key, cap, target_name, target, scopes, token_type, user);
            }
            return Ok(Issued {
                token,
                identity: Identity::User,
                cache: CacheStatus::Hit,
                fallback: None,
                entry,
            });
        }
        let from_shared = std::sync::atomic::AtomicBool::new(false);
        let fetch = Box::pin(with_negative(
            self.negative.as_ref(),
            key,
            shared::through(self.shared.as_deref(), key, &from_shared, async {
                let answer = self
                    .idp
                    .exchange(&ExchangeRequest {
                        subject_token: user.raw(),
                        audience: &target.audience,
                        scopes,
                        requested_token_type: token_type,
                    })
                    .await
                    .map_err(FetchError::Idp)?;
                self.check_answer(
                    answer,
                    target,
                    Some(token_type),
                    Expected::Sub(user.sub()),
                    cap,
                    Some(user),
                )
                .await
                .map_err(FetchError::Invalid)
            }),
        ));
        Box::pin(self.user_cache.get_or_fetch_until(key, until, fetch))
            .await
            .map(|(token, cache)| Issued {
                token,
                identity: Identity::User,
                cache: shared_status(cache, &from_shared),
                fallback: None,
                entry,
            })
            .map_err(|e| match &*e {
                FetchError::Idp(i) => FetchOutcome::Idp(i.clone()),
                FetchError::Invalid(m) => FetchOutcome::Invalid(m.clone()),
            })
    }

    /// Refresh ahead: the same exchange again, in the background; its checked answer replaces
    /// the entry if the entry still exists (a logout that evicted it meanwhile wins).
    #[allow(clippy::too_many_arguments)]
    fn renew_in_background(
        &self,
        key: KeyDigest,
        cap: Option<u64>,
        target_name: &str,
        target: &TargetConfig,
        scopes: &[String],
        token_type: TokenType,
        user: &VerifiedUserToken<'_>,
    ) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let (target_name, target) = (target_name.to_owned(), target.clone());
        let (scopes, user) = (scopes.to_vec(), user.clone().into_owned());
        tokio::spawn(async move {
            let answer = me
                .idp
                .exchange(&ExchangeRequest {
                    subject_token: user.raw(),
                    audience: &target.audience,
                    scopes: &scopes,
                    requested_token_type: token_type,
                })
                .await;
            let checked = match answer {
                Ok(a) => {
                    me.check_answer(
                        a,
                        &target,
                        Some(token_type),
                        Expected::Sub(user.sub()),
                        cap,
                        Some(&user),
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            };
            match checked {
                Ok(token) => {
                    me.user_cache.replace_if_present(key, token).await;
                    tracing::debug!(target = %target_name, subject = %user.fingerprint(), "refresh ahead: entry renewed");
                }
                Err(e) => {
                    tracing::info!(target = %target_name, subject = %user.fingerprint(), error = %e, "refresh ahead: renewal failed; the entry expires as usual");
                }
            }
        });
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
        let from_shared = std::sync::atomic::AtomicBool::new(false);
        let fetch = shared::through(self.shared.as_deref(), key, &from_shared, async {
            let answer = self
                .idp
                .client_credentials(scopes)
                .await
                .map_err(FetchError::Idp)?;
            self.check_answer(answer, target, None, Expected::Service, None, None)
                .await
                .map_err(FetchError::Invalid)
        });
        match self.service_cache.get_or_fetch(key, fetch).await {
            Ok((token, cache)) => Ok(Issued {
                token,
                identity: Identity::Service,
                cache: shared_status(cache, &from_shared),
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
        target: &TargetConfig,
        requested: Option<TokenType>,
        expected: Expected<'_>,
        cap_at: Option<u64>,
        subject: Option<&VerifiedUserToken<'_>>,
    ) -> Result<Arc<IssuedToken>, String> {
        let answer = crate::idp::answer::check(
            &self.verifier,
            answer,
            crate::idp::answer::Expect {
                audience: &target.audience,
                aud_rule: target.issued_token_audience,
                format: target.issued_token_format,
            },
            requested,
            &self.config.user_token.match_claim,
            self.clock.now_unix(),
        )
        .await?;
        match expected {
            Expected::Service => {}
            // An opaque token has no `sub` to compare: the target declared so
            // (`issuedTokenFormat: opaque`, warned at start). Never for a user mapping (config).
            Expected::Sub(_) if answer.opaque => {}
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
        // A user's token (exchange, user mapping) is indexed by its `sub`, and by the subject
        // token's `sid` when there is one; the service account's by nothing.
        let index = match expected {
            Expected::Service => SubjectIndex::default(),
            Expected::Sub(_) | Expected::Person(_) => {
                SubjectIndex::of(answer.sub.as_deref(), subject.and_then(|s| s.sid()))
            }
        };
        Ok(Arc::new(IssuedToken {
            created_at: now,
            fingerprint: fingerprint(&answer.access_token),
            subject_kid: subject.map(|s| s.kid().clone()),
            index,
            access_token: SecretString::from(answer.access_token),
            token_type: cache::shared_str(&answer.token_type),
            issued_token_type: answer.issued_token_type,
            scope: answer.scope.as_deref().map(cache::shared_str),
            expires_at,
            cache_until: cap.saturating_sub(margin),
        }))
    }
}

enum FetchOutcome {
    Idp(IdpError),
    Invalid(String),
}

/// `shared` when this request's first-level miss was served from the shared cache.
fn shared_status(cache: CacheStatus, from_shared: &std::sync::atomic::AtomicBool) -> CacheStatus {
    if cache == CacheStatus::Miss && from_shared.load(std::sync::atomic::Ordering::Relaxed) {
        CacheStatus::Shared
    } else {
        cache
    }
}
