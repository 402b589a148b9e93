//! Whom the broker acts for: the authenticated caller of one request and the user's verified
//! Keycloak token, as the broker's policy and exchange need them. Defined here, at the lowest
//! layer that needs them; `inbound` builds them from the request's credentials (and re-exports
//! them).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

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

/// A Keycloak access token that passed local verification: the request's token, borrowed
/// from the request (`'a`), and the facts recorded for it, shared with the verified-credential
/// cache. A cache hit therefore copies nothing: before issue 16 each hit copied the 1.2 KB
/// token into a zeroised `SecretString` and six claims into their own `String`s, ~3 % of a
/// hit's CPU (docs/benchmarks.md). Holders that outlive the request (refresh ahead) take an
/// owned copy with [`VerifiedUserToken::into_owned`].
#[derive(Clone)]
pub struct VerifiedUserToken<'a> {
    raw: RawToken<'a>,
    facts: Arc<UserFacts>,
    /// SHA-256 of the raw token: the verified-credential cache key and the token's field in
    /// the exchange-cache key (computed once per request).
    pub digest: crate::digest::KeyDigest,
}

/// The user's token as presented: borrowed from the request on the request's path, owned
/// (and zeroised when dropped) by a background renewal. Never printed.
#[derive(Clone)]
enum RawToken<'a> {
    Borrowed(&'a str),
    Owned(SecretString),
}

impl<'a> VerifiedUserToken<'a> {
    /// `raw` with the facts verified for it; `digest` is its SHA-256.
    pub fn new(raw: &'a str, facts: Arc<UserFacts>, digest: crate::digest::KeyDigest) -> Self {
        VerifiedUserToken {
            raw: RawToken::Borrowed(raw),
            facts,
            digest,
        }
    }

    /// The same token, no longer tied to the request that presented it.
    pub fn into_owned(self) -> VerifiedUserToken<'static> {
        VerifiedUserToken {
            raw: RawToken::Owned(SecretString::from(self.raw().to_owned())),
            facts: self.facts,
            digest: self.digest,
        }
    }

    /// Short SHA-256 prefix of the raw token, for logs (from its digest: no hashing).
    pub fn fingerprint(&self) -> crate::digest::Fingerprint {
        crate::digest::Fingerprint::of(&self.digest)
    }

    /// The token itself, for the IdP's token endpoint only (RFC 8693 §2.1 `subject_token`).
    pub fn raw(&self) -> &str {
        match &self.raw {
            RawToken::Borrowed(t) => t,
            RawToken::Owned(t) => t.expose_secret(),
        }
    }

    pub fn sub(&self) -> &str {
        self.facts.sub()
    }

    pub fn exp(&self) -> u64 {
        self.facts.exp
    }

    pub fn preferred_username(&self) -> Option<&str> {
        self.facts.preferred_username()
    }

    pub fn azp(&self) -> Option<&str> {
        self.facts.azp.as_deref()
    }

    /// The Keycloak session (`sid`), when the token names one.
    pub fn sid(&self) -> Option<&str> {
        self.facts.sid()
    }

    /// The value of the configured `userToken.matchClaim` (a string claim), for the Backstage
    /// identity match; `None` when the token lacks it or it is not a string.
    pub fn match_value(&self) -> Option<&str> {
        self.facts.match_value()
    }

    /// Keycloak marks service-account (client-credentials) tokens with a `client_id` claim
    /// (`clientId` in older versions) and `preferred_username` `service-account-<client>`.
    pub fn service_account(&self) -> bool {
        self.facts.has(SERVICE_ACCOUNT)
    }

    /// The broker's own client id is in `aud` (RFC 7519 §4.1.3: string or array).
    pub fn broker_in_aud(&self) -> bool {
        self.facts.has(BROKER_IN_AUD)
    }

    /// The verifying key's `kid`, shared (empty for an introspected token).
    pub fn kid(&self) -> &Arc<str> {
        &self.facts.kid
    }
}

impl std::fmt::Debug for VerifiedUserToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedUserToken")
            .field("sub", &self.sub())
            .field("exp", &self.exp())
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// The verified facts of one user token, as the verifier reads and records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    pub sub: &'a str,
    pub exp: u64,
    /// Empty for a token verified by introspection (no signing key to rotate out).
    pub kid: &'a str,
    pub preferred_username: Option<&'a str>,
    pub azp: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub match_value: Option<&'a str>,
    pub service_account: bool,
    pub broker_in_aud: bool,
}

const SERVICE_ACCOUNT: u8 = 1;
const BROKER_IN_AUD: u8 = 1 << 1;
const HAS_USERNAME: u8 = 1 << 2;
const HAS_SID: u8 = 1 << 3;
const HAS_MATCH: u8 = 1 << 4;
/// The match claim's value equals `preferred_username` (the common `matchClaim`): kept once.
const MATCH_IS_USERNAME: u8 = 1 << 5;

/// [`Facts`] packed: fixed size, one allocation for the per-user strings (`sub`,
/// `preferred_username`, `sid`, the match claim), `kid` and `azp` shared with every other
/// token of the realm ([`crate::broker::cache::shared_str`]: a realm has a handful of each).
/// What the verified-credential cache keeps per token (issue 16 §2), and what each request
/// presenting the token shares with it.
#[derive(Debug)]
pub struct UserFacts {
    pub exp: u64,
    /// The realm's key-removal count read before the token's `kid` was found in its key set
    /// (`idp::jwks::JwksCache::removals`): while the count is unchanged the key is still there.
    pub keyset: u64,
    kid: Arc<str>,
    azp: Option<Arc<str>>,
    /// `sub`, then `preferred_username`, `sid` and the match claim (each when present).
    text: Box<str>,
    /// End offsets in `text` of `sub`, `preferred_username` and `sid`.
    ends: [u32; 3],
    flags: u8,
}

impl UserFacts {
    /// Packs `f`; `None` only when its strings exceed 4 GiB, which no token or IdP answer the
    /// broker accepts can hold (tokens are at most 32 KiB, answers a few MiB).
    pub fn pack(f: &Facts<'_>) -> Option<Self> {
        let mut flags = 0;
        let mut set = |on: bool, flag: u8| {
            if on {
                flags |= flag;
            }
        };
        set(f.service_account, SERVICE_ACCOUNT);
        set(f.broker_in_aud, BROKER_IN_AUD);
        set(f.preferred_username.is_some(), HAS_USERNAME);
        set(f.sid.is_some(), HAS_SID);
        set(f.match_value.is_some(), HAS_MATCH);
        let match_is_username = f.match_value.is_some() && f.match_value == f.preferred_username;
        set(match_is_username, MATCH_IS_USERNAME);
        let mut text = String::with_capacity(
            f.sub.len()
                + f.preferred_username.map_or(0, str::len)
                + f.sid.map_or(0, str::len)
                + f.match_value.map_or(0, str::len),
        );
        let mut ends = [0u32; 3];
        for (end, part) in ends
            .iter_mut()
            .zip([Some(f.sub), f.preferred_username, f.sid])
        {
            text.push_str(part.unwrap_or_default());
            *end = u32::try_from(text.len()).ok()?;
        }
        if !match_is_username {
            text.push_str(f.match_value.unwrap_or_default());
            u32::try_from(text.len()).ok()?;
        }
        Some(UserFacts {
            exp: f.exp,
            keyset: 0,
            kid: crate::broker::cache::shared_str(f.kid),
            azp: f.azp.map(crate::broker::cache::shared_str),
            text: text.into_boxed_str(),
            ends,
            flags,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn part(&self, from: u32, to: u32) -> &str {
        let (from, to) = (from as usize, to as usize);
        self.text.get(from..to).unwrap_or_default()
    }

    fn sub(&self) -> &str {
        let [a, _, _] = self.ends;
        self.part(0, a)
    }

    fn preferred_username(&self) -> Option<&str> {
        let [a, b, _] = self.ends;
        self.has(HAS_USERNAME).then(|| self.part(a, b))
    }

    fn sid(&self) -> Option<&str> {
        let [_, b, c] = self.ends;
        self.has(HAS_SID).then(|| self.part(b, c))
    }

    fn match_value(&self) -> Option<&str> {
        if self.has(MATCH_IS_USERNAME) {
            self.preferred_username()
        } else {
            let [_, _, c] = self.ends;
            self.has(HAS_MATCH)
                .then(|| self.text.get(c as usize..).unwrap_or_default())
        }
    }

    /// The recorded facts, borrowed.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            sub: self.sub(),
            exp: self.exp,
            kid: &self.kid,
            preferred_username: self.preferred_username(),
            azp: self.azp.as_deref(),
            sid: self.sid(),
            match_value: self.match_value(),
            service_account: self.has(SERVICE_ACCOUNT),
            broker_in_aud: self.has(BROKER_IN_AUD),
        }
    }

    /// Heap and inline bytes of one entry (for the size regression test): the interned
    /// `kid` and `azp` are shared, so not counted.
    #[cfg(test)]
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.text.len()
    }

    #[cfg(test)]
    pub fn shares_kid_and_azp_with(&self, other: &UserFacts) -> bool {
        Arc::ptr_eq(&self.kid, &other.kid)
            && matches!((&self.azp, &other.azp), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }
}
