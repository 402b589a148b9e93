//! The checks of a token Keycloak issued to the broker that need nothing but the answer and
//! the realm (RFC 8693 §2.2.1, RFC 6749 §5.1): a non-empty token, the `issued_token_type`
//! that was asked for, a Bearer `token_type`, a signature by a realm key with the realm's
//! issuer and a future `exp` ([`RealmTokenVerifier`]), and the target's audience in `aud`.
//! The answer's claims whose meaning depends on *whom* the token was for (`sub`, service
//! account, the match claim) are returned as facts; the broker decides with them.
//!
//! A target may relax two of these checks, explicitly (`targets.<name>.issuedTokenAudience`,
//! `issuedTokenFormat`; each logged at start): an absent `aud`, or an opaque token, which is
//! not decoded at all (its lifetime is then the answer's `expires_in`, which it must have).

use crate::config::{IssuedAudience, IssuedFormat, TokenType};
use crate::idp::TokenResponse;
use crate::idp::claims::{aud_contains, is_service_account};
use crate::idp::realm_token::RealmTokenVerifier;

/// A token answer that passed [`check`].
pub struct CheckedAnswer {
    pub access_token: String,
    /// `Bearer` for an access token; Keycloak's literal `token_type` for an ID token.
    pub token_type: String,
    pub issued_token_type: TokenType,
    pub scope: Option<String>,
    /// The answer's `expires_in`, when given.
    pub expires_in: Option<u64>,
    /// The issued token's `exp` (an opaque token's: now + `expires_in`).
    pub exp: u64,
    /// `None` for an opaque token.
    pub sub: Option<String>,
    /// The token was not decoded (`issuedTokenFormat: opaque`): `sub` and the claim facts are
    /// unknown, and the caller must not expect them.
    pub opaque: bool,
    /// Keycloak's marks of a service-account token ([`is_service_account`]).
    pub service_account: bool,
    /// The value of the `match_claim` passed to [`check`] (a string claim), if any.
    pub match_value: Option<String>,
}

#[derive(serde::Deserialize)]
struct IssuedClaims {
    exp: u64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    client_id: Option<serde_json::Value>,
    #[serde(default, rename = "clientId")]
    client_id_legacy: Option<serde_json::Value>,
}

/// What a target expects of the tokens issued for it.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub audience: &'a str,
    pub aud_rule: IssuedAudience,
    pub format: IssuedFormat,
}

/// Checks Keycloak's `answer` for a token as `expect` says. `requested` is the token type the
/// grant asked for (`None`: a grant without one, which issues an access token); `now` is Unix
/// seconds. The error is a message safe to show: it never contains token material.
pub async fn check(
    verifier: &RealmTokenVerifier,
    answer: TokenResponse,
    expect: Expect<'_>,
    requested: Option<TokenType>,
    match_claim: &str,
    now: u64,
) -> Result<CheckedAnswer, String> {
    let audience = expect.audience;
    if answer.access_token.is_empty() {
        return Err("the answer has an empty access_token".into());
    }
    let issued_type = match requested {
        Some(t) => {
            // issued_token_type is REQUIRED in an exchange answer (RFC 8693 §2.2.1).
            if answer.issued_token_type.as_deref() != Some(t.urn()) {
                return Err("issued_token_type differs from the requested type".into());
            }
            t
        }
        None => TokenType::AccessToken,
    };
    let type_ok = match issued_type {
        TokenType::AccessToken => answer.token_type.eq_ignore_ascii_case("bearer"),
        // Keycloak returns an ID token with token_type N_A (docs/reference/keycloak-token-exchange.md
        // §3.6).
        TokenType::IdToken => {
            answer.token_type == "N_A" || answer.token_type.eq_ignore_ascii_case("bearer")
        }
    };
    if !type_ok {
        return Err("token_type is not Bearer".into());
    }
    if expect.format == IssuedFormat::Opaque && issued_type == TokenType::AccessToken {
        // Not decoded: the lifetime can only come from the answer (RFC 6749 §5.1).
        let Some(ei) = answer.expires_in.filter(|e| *e > 0) else {
            return Err("the opaque issued token comes without a positive expires_in".into());
        };
        return Ok(CheckedAnswer {
            token_type: "Bearer".to_owned(),
            access_token: answer.access_token,
            issued_token_type: issued_type,
            scope: answer.scope,
            expires_in: Some(ei),
            exp: now.saturating_add(ei),
            sub: None,
            opaque: true,
            service_account: false,
            match_value: None,
        });
    }
    let (payload, _kid) = verifier
        .verify::<serde_json::Value>(&answer.access_token)
        .await
        .map_err(|e| format!("the issued token did not verify: {e}"))?;
    let match_value = payload
        .get(match_claim)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let claims = serde_json::from_value::<IssuedClaims>(payload)
        .map_err(|_| "the issued token's claims are malformed".to_owned())?;
    let aud_ok = aud_contains(claims.aud.as_ref(), audience)
        || (expect.aud_rule == IssuedAudience::MayBeAbsent && claims.aud.is_none());
    if issued_type == TokenType::AccessToken && !aud_ok {
        return Err(format!(
            "the issued token's aud does not contain '{audience}'"
        ));
    }
    let service_account = is_service_account(
        claims
            .client_id
            .as_ref()
            .or(claims.client_id_legacy.as_ref()),
        claims.preferred_username.as_deref(),
    );
    Ok(CheckedAnswer {
        token_type: if issued_type == TokenType::AccessToken {
            "Bearer".to_owned()
        } else {
            answer.token_type
        },
        access_token: answer.access_token,
        issued_token_type: issued_type,
        scope: answer.scope,
        expires_in: answer.expires_in,
        exp: claims.exp,
        sub: claims.sub,
        opaque: false,
        service_account,
        match_value,
    })
}
