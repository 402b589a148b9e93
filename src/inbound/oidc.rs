//! Local verification of the user's Keycloak access token before it is ever sent to Keycloak.
//!
//! The realm's checks of any of its tokens (size, JWS shape, known `kid`, `alg` from the key,
//! signature, `iss`, `exp`/`nbf` with zero leeway) are [`crate::idp::realm_token`]'s; this module
//! adds what an access token of a user needs: `sub` present and the token typed as an access
//! token by the deployment's rule (`userToken.tokenTypeCheck`: the Keycloak `typ` claim
//! `Bearer` — an ID or refresh token is not an access token, Keycloak would answer `Invalid
//! token`, docs/reference/keycloak-token-exchange.md §3.4 step 2 — or RFC 9068's header
//! `typ: at+jwt`, or either of those or no type at all). Junk therefore never reaches the IdP.
//!
//! A token that passed is remembered in a verified-credential cache keyed by its SHA-256 and
//! bounded by its own `exp` and its key's presence in the JWKS. The cache keeps only what later
//! requests read ([`UserClaims`], packed by [`super::verified_cache`]), never the token or its
//! claim set.
//!
//! Whether a verified token is *acceptable as a user's token* (not the broker's own, not a
//! service account, the broker in `aud`, an allowed `azp`) is decided by
//! [`super::Authenticator`] from the facts recorded here: this module answers "is it a genuine,
//! current access token of this realm", which the exchange tester also asks of tokens the
//! acceptance rules would refuse.

use std::sync::Arc;

use serde::Deserialize;

use crate::clock::Clock;
use crate::config::TokenTypeCheck;
use crate::idp::claims::{aud_contains, is_service_account};
use crate::idp::jwks::JwksCache;
use crate::idp::realm_token::RealmTokenVerifier;

use super::verified_cache::{Facts, UserFacts, VerifiedCache};

pub use crate::broker::principal::VerifiedUserToken;
/// Largest subject token accepted.
pub use crate::idp::realm_token::MAX_TOKEN_LEN;
/// Why a user token was refused: the realm's reasons, plus `NotAccessToken` and a missing `sub`.
pub use crate::idp::realm_token::RealmTokenError as OidcError;

/// What the verified-credential cache keeps per token (issue 9 §5): the claims later requests
/// read, the expiry and the verifying `kid` — not the token (the request brings it again) and
/// not the whole claim set. Measured with `cargo run --example verified_cache_bytes`
/// (docs/benchmarks.md).
#[derive(Debug)]
pub struct UserClaims {
    sub: Box<str>,
    exp: u64,
    kid: Box<str>,
    preferred_username: Option<Box<str>>,
    azp: Option<Box<str>>,
    sid: Option<Box<str>>,
    match_value: Option<Box<str>>,
    service_account: bool,
    broker_in_aud: bool,
}

impl UserClaims {
    fn facts(&self) -> Facts<'_> {
        Facts {
            sub: &self.sub,
            exp: self.exp,
            kid: &self.kid,
            preferred_username: self.preferred_username.as_deref(),
            azp: self.azp.as_deref(),
            sid: self.sid.as_deref(),
            match_value: self.match_value.as_deref(),
            service_account: self.service_account,
            broker_in_aud: self.broker_in_aud,
        }
    }
}

/// What the verifier needs to know to record [`UserClaims`] beyond signature checks.
#[derive(Debug, Clone, Default)]
pub struct UserClaimRules {
    /// The broker's client id (`keycloak.clientId`): recorded as `broker_in_aud`.
    pub client_id: String,
    /// `userToken.matchClaim`: the one claim kept for the Backstage identity match.
    pub match_claim: String,
    /// `userToken.tokenTypeCheck`: how the token shows it is an access token.
    pub token_type_check: TokenTypeCheck,
}

/// The claims read from a user token, straight into the types checked; everything else in
/// the payload is skipped by serde, except the `matchClaim`, read separately.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    typ: Option<String>,
    preferred_username: Option<String>,
    azp: Option<String>,
    sid: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    client_id: Option<serde_json::Value>,
    #[serde(default, rename = "clientId")]
    client_id_legacy: Option<serde_json::Value>,
}

/// Verifies Keycloak access tokens of one realm.
pub struct OidcVerifier {
    realm: Arc<RealmTokenVerifier>,
    /// `userToken.verify: introspection`: the IdP client that introspects (RFC 7662).
    introspector: Option<Arc<crate::idp::IdpClient>>,
    clock: Arc<dyn Clock>,
    /// The verified-credential cache (issue 6 §9): a user token that passed every check is
    /// remembered under the SHA-256 of its bytes, so the same token presented again costs a
    /// hash and a lookup instead of a signature check. An entry never outlives its credential:
    /// every read checks `exp > now` against our clock and that the verifying `kid` is still in
    /// the realm's JWKS (a rotated-out key ends the entry at once), and removes the entry when
    /// either fails. Only successes are cached; a token that failed is checked in full every
    /// time.
    verified: VerifiedCache,
    rules: UserClaimRules,
}

impl OidcVerifier {
    pub fn new(issuer: String, jwks: Arc<JwksCache>, clock: Arc<dyn Clock>) -> Self {
        let verified = VerifiedCache::new();
        OidcVerifier {
            realm: Arc::new(RealmTokenVerifier::new(issuer, jwks, clock.clone())),
            introspector: None,
            clock,
            verified,
            rules: UserClaimRules::default(),
        }
    }

    /// Sets the broker's client id and the `userToken.matchClaim` recorded for each token.
    pub fn with_rules(mut self, rules: UserClaimRules) -> Self {
        self.rules = rules;
        self
    }

    /// Verifies users' tokens by RFC 7662 introspection at `idp` instead of the JWKS.
    pub fn with_introspection(mut self, idp: Arc<crate::idp::IdpClient>) -> Self {
        self.introspector = Some(idp);
        self
    }

    /// Entries in the verified-credential cache (approximate; for tests and metrics).
    pub fn verified_entries(&self) -> u64 {
        self.verified.len() as u64
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        self.realm.jwks()
    }

    /// The realm-token verifier underneath (also checks the tokens Keycloak issues).
    pub fn realm(&self) -> &Arc<RealmTokenVerifier> {
        &self.realm
    }

    pub async fn verify<'t>(&self, token: &'t str) -> Result<VerifiedUserToken<'t>, OidcError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OidcError::TooLarge);
        }
        let digest = crate::digest::sha256(token.as_bytes());
        let now = self.clock.now_unix();
        let jwks = self.realm.jwks();
        // An introspected entry has no `kid` (nothing to rotate out); it ends at `exp`.
        let current = |e: &UserFacts| {
            e.exp > now && (e.kid().is_empty() || jwks.still_has_kid(e.kid(), e.keyset))
        };
        if let Some(facts) = self.verified.get(&digest, current) {
            return Ok(VerifiedUserToken::new(token, facts, digest));
        }
        // Read before the token's key is looked up (see `JwksCache::removals`).
        let keyset = jwks.removals();
        // Boxed: the full check's future is large and only a first sight of a token needs it
        // (moving it inline cost every cached verification copies; issue 16).
        let v = match &self.introspector {
            Some(idp) => Box::pin(self.verify_introspected(idp, token)).await?,
            None => Box::pin(self.verify_uncached(token)).await?,
        };
        // `pack` fails only beyond 4 GiB of strings, which no accepted token or answer holds.
        let mut facts = UserFacts::pack(&v.facts()).ok_or(OidcError::TooLarge)?;
        facts.keyset = keyset;
        let facts = Arc::new(facts);
        self.verified
            .insert(digest, facts.clone(), self.clock.now_unix());
        Ok(VerifiedUserToken::new(token, facts, digest))
    }

    /// RFC 7662: the IdP's word instead of a local signature check. The answer is held to the
    /// same rules as a token's claims: the configured issuer (when named), a `sub`, a future
    /// `exp` (which bounds how long the verified-credential cache keeps it), and the user-token
    /// facts (`client_id`/`azp`, `aud`, the match claim). `client_id` is always present in an
    /// introspection answer, so a service account is recognised by its username only.
    async fn verify_introspected(
        &self,
        idp: &crate::idp::IdpClient,
        token: &str,
    ) -> Result<UserClaims, OidcError> {
        use crate::idp::introspection::Introspected;
        let doc = match idp.introspect(token).await {
            Ok(Introspected::Active(doc)) => doc,
            Ok(Introspected::Inactive) => return Err(OidcError::Inactive),
            Err(e) => return Err(OidcError::IntrospectionUnavailable(e.to_string())),
        };
        let text = |k: &str| doc.get(k).and_then(serde_json::Value::as_str);
        if let Some(iss) = text("iss")
            && iss != idp.issuer()
        {
            return Err(OidcError::WrongIssuer);
        }
        let sub = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or(OidcError::MissingClaim("sub"))?;
        let exp = doc
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or(OidcError::MissingClaim("exp"))?;
        if exp <= self.clock.now_unix() {
            return Err(OidcError::Expired);
        }
        let preferred_username = text("preferred_username").or(text("username"));
        let azp = text("azp").or(text("client_id"));
        let broker_in_aud =
            !self.rules.client_id.is_empty() && aud_contains(doc.get("aud"), &self.rules.client_id);
        Ok(UserClaims {
            sub: sub.into(),
            exp,
            kid: "".into(),
            preferred_username: preferred_username.map(Box::from),
            azp: azp.map(Box::from),
            match_value: text(self.rules.match_claim.as_str()).map(Box::from),
            // RFC 7662 §2.2 lists no `sid`; Keycloak's introspection answer carries it.
            sid: text("sid").filter(|s| !s.is_empty()).map(Box::from),
            service_account: is_service_account(None, preferred_username),
            broker_in_aud,
        })
    }

    async fn verify_uncached(&self, token: &str) -> Result<UserClaims, OidcError> {
        let (payload, kid, header_typ) =
            self.realm.verify_typed::<serde_json::Value>(token).await?;
        // The match claim is read from the payload before it is narrowed to `Claims`.
        let match_value = payload
            .get(self.rules.match_claim.as_str())
            .and_then(serde_json::Value::as_str)
            .map(Box::from);
        let c = serde_json::from_value::<Claims>(payload).map_err(|_| OidcError::Malformed)?;
        let sub = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(OidcError::MissingClaim("sub"))?;
        let exp = c.exp.ok_or(OidcError::MissingClaim("exp"))?;
        check_token_type(
            self.rules.token_type_check,
            header_typ.as_deref(),
            c.typ.as_deref(),
        )?;
        let service_account = is_service_account(
            c.client_id.as_ref().or(c.client_id_legacy.as_ref()),
            c.preferred_username.as_deref(),
        );
        let broker_in_aud =
            !self.rules.client_id.is_empty() && aud_contains(c.aud.as_ref(), &self.rules.client_id);
        Ok(UserClaims {
            sub: sub.into(),
            exp,
            kid: kid.into(),
            preferred_username: c.preferred_username.map(Box::from),
            azp: c.azp.map(Box::from),
            sid: c.sid.filter(|s| !s.is_empty()).map(Box::from),
            match_value,
            service_account,
            broker_in_aud,
        })
    }
}

/// Is this JWT an access token, by the deployment's rule (`userToken.tokenTypeCheck`)? An ID
/// or refresh token must never be exchanged as the user's access token.
fn check_token_type(
    rule: TokenTypeCheck,
    header_typ: Option<&str>,
    claim_typ: Option<&str>,
) -> Result<(), OidcError> {
    // RFC 9068 §4: `at+jwt`, or the full media type `application/at+jwt`; media types compare
    // case-insensitively (RFC 7515 §4.1.9).
    let at_jwt =
        |t: &str| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt");
    match rule {
        // Keycloak's private claim; its TokenVerifier compares it case-insensitively.
        TokenTypeCheck::KeycloakClaim => match claim_typ {
            Some(t) if t.eq_ignore_ascii_case("Bearer") => Ok(()),
            _ => Err(OidcError::NotAccessToken),
        },
        TokenTypeCheck::AtJwt => match header_typ {
            Some(t) if at_jwt(t) => Ok(()),
            _ => Err(OidcError::NotAccessTokenJwt),
        },
        TokenTypeCheck::Jwt => {
            let header_ok = match header_typ {
                None => true,
                Some(t) => at_jwt(t) || t.eq_ignore_ascii_case("JWT"),
            };
            // A `typ` claim other than Bearer marks Keycloak's ID and refresh tokens.
            let claim_ok = claim_typ.is_none_or(|t| t.eq_ignore_ascii_case("Bearer"));
            if header_ok && claim_ok {
                Ok(())
            } else {
                Err(OidcError::NotAccessTokenJwt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three rules of `userToken.tokenTypeCheck` over the token shapes seen in the field:
    /// Keycloak (header JWT, claim Bearer/ID/Refresh), RFC 9068 (header at+jwt, no claim),
    /// and IdPs that type nothing.
    #[test]
    fn token_type_rules() {
        use TokenTypeCheck::*;
        let cases: &[(TokenTypeCheck, Option<&str>, Option<&str>, bool)] = &[
            (KeycloakClaim, Some("JWT"), Some("Bearer"), true),
            (KeycloakClaim, Some("JWT"), Some("bearer"), true),
            (KeycloakClaim, Some("at+jwt"), None, false),
            (KeycloakClaim, None, None, false),
            (KeycloakClaim, Some("JWT"), Some("ID"), false),
            (AtJwt, Some("at+jwt"), None, true),
            (AtJwt, Some("application/AT+JWT"), None, true),
            (AtJwt, Some("JWT"), Some("Bearer"), false),
            (AtJwt, None, None, false),
            (Jwt, Some("at+jwt"), None, true),
            (Jwt, Some("JWT"), None, true),
            (Jwt, None, None, true),
            (Jwt, Some("JWT"), Some("Bearer"), true),
            (Jwt, Some("JWT"), Some("ID"), false),
            (Jwt, Some("JWT"), Some("Refresh"), false),
            (Jwt, Some("dpop+jwt"), None, false),
        ];
        for (rule, header, claim, ok) in cases {
            assert_eq!(
                check_token_type(*rule, *header, *claim).is_ok(),
                *ok,
                "{rule:?} {header:?} {claim:?}"
            );
        }
    }

    /// The verified-credential cache keeps a few short claims per token, not the ~1.2 KB
    /// token and its claim set (issue 9 §5: ~5.9 KB per entry before, measured); the entry's
    /// size is checked in `verified_cache` (`an_entry_is_small_and_shares_kid_and_azp`).
    #[test]
    fn a_cache_entry_holds_only_the_claims_later_requests_read() {
        let c = UserClaims {
            sub: "3f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11".into(),
            exp: 1_735_689_900,
            kid: "Jc1VhkqmFzQ1Aw3h8o3WcXhV0k0M8c6Q2yTq1lq0xgE".into(),
            preferred_username: Some("alice".into()),
            azp: Some("dev-frontend".into()),
            sid: Some("5a8b2c4e-9d1f-4e3a-b7c6-0f2e1d3c4b5a".into()),
            match_value: Some("alice".into()),
            service_account: false,
            broker_in_aud: true,
        };
        let facts = Arc::new(UserFacts::pack(&c.facts()).unwrap());
        let v = VerifiedUserToken::new("a.b.c", facts, [7; 32]);
        assert_eq!(v.sub(), "3f0c2a8e-41b7-4a36-9a77-1c2f5b0d9e11");
        assert_eq!(v.match_value(), Some("alice"));
        assert!(v.broker_in_aud() && !v.service_account());
        assert_eq!(v.raw(), "a.b.c");
        assert_eq!(v.clone().into_owned().raw(), "a.b.c");
    }

    #[test]
    fn service_accounts_and_audiences_are_recognised() {
        use serde_json::json;
        assert!(is_service_account(Some(&json!("robot")), None));
        assert!(is_service_account(None, Some("service-account-robot")));
        assert!(!is_service_account(
            Some(&serde_json::Value::Null),
            Some("alice")
        ));
        assert!(!is_service_account(None, None));
        assert!(aud_contains(Some(&json!("token-broker")), "token-broker"));
        assert!(aud_contains(
            Some(&json!(["a", "token-broker"])),
            "token-broker"
        ));
        assert!(!aud_contains(Some(&json!(["a"])), "token-broker"));
        assert!(!aud_contains(Some(&json!(7)), "token-broker"));
        assert!(!aud_contains(None, "token-broker"));
    }
}
