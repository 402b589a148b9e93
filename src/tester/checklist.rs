//! The tester's checklist: the usual prerequisites of a Keycloak token exchange, each judged
//! pass, fail or unknown from the subject token's claims, the local verification, and where
//! Keycloak's V2 pipeline stopped (recognised from its error text, in Keycloak's check order,
//! docs/reference/keycloak-token-exchange.md §2, §3.3–§3.8), with the fix for each.

use serde::Serialize;
use serde_json::Value;

use super::{Report, Tester};
use crate::config::{IdpProfile, TargetConfig};
use crate::idp::claims::aud_contains;
use crate::inbound::oidc::OidcError;

/// One checklist item. `ok` is `true` (pass), `false` (fail) or `null` (could not be
/// determined from this attempt, or not applicable); `status` says which.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: Option<bool>,
    pub status: &'static str,
    pub detail: String,
    pub fix: String,
}

/// Where in Keycloak's V2 pipeline an answer stopped (docs/reference/keycloak-token-exchange.md §2,
/// §3.3,
/// §3.4, in check order); `SUCCESS` = it went through, 0 = not recognised.
pub(super) fn stage(status: u16, error: &str, description: &str) -> u8 {
    match (error, description) {
        ("unsupported_grant_type", _) => 1,
        (_, "Invalid client or Invalid client credentials") => 2,
        (_, "Standard token exchange is not enabled for the requested client") => 3,
        (_, d) if d.starts_with("Parameter '") => 3,
        (_, "Invalid token") => 4,
        (_, "requested_token_type unsupported") => 5,
        (_, "Audience not found") => 6,
        (_, "Public client is not allowed to exchange token") | (_, "Client disabled") => 7,
        (_, "Client is not within the token audience") => 8,
        ("invalid_scope", _) => 9,
        (_, d) if d.starts_with("Requested audience not available") => 10,
        _ if status == 401 => 2,
        _ => 0,
    }
}
pub(super) const SUCCESS: u8 = 100;

fn check(name: &'static str, ok: Option<bool>, detail: String, fix: String) -> Check {
    Check {
        name,
        ok,
        status: match ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "unknown",
        },
        detail,
        fix,
    }
}

/// Verdict of a pipeline stage: fails at it, passes beyond it, unknown before it.
fn stage_verdict(reached: u8, at: &[u8]) -> Option<bool> {
    let max = at.iter().copied().max().unwrap_or(0);
    if at.contains(&reached) {
        Some(false)
    } else if reached > max {
        Some(true)
    } else {
        None
    }
}

impl Tester<'_> {
    pub(super) fn checks(
        &self,
        tcfg: &TargetConfig,
        report: &Report,
        reached: u8,
        token_url: Option<&str>,
        local: Option<&OidcError>,
    ) -> Vec<Check> {
        if !self.keycloak_profile() {
            let mut out = self.generic_checks(tcfg, report, reached, local);
            out.extend(relaxed_check(tcfg));
            return out;
        }
        let client = self.idp.client_id();
        let issuer = self.idp.issuer();
        let claims = report.subject_claims.as_ref().map(|d| &d.claims);
        let azp = claims
            .and_then(|c| c.get("azp"))
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_owned();
        let mut out = Vec::new();

        out.push(check(
            "Broker client credentials accepted",
            stage_verdict(reached, &[2]),
            format!("client '{client}' authenticates at the token endpoint"),
            "check keycloak.clientId, keycloak.clientSecret and keycloak.clientAuthMethod against the client's Credentials tab; the client must be enabled and confidential".into(),
        ));

        out.push(check(
            "Standard token exchange enabled",
            stage_verdict(reached, &[1, 3]),
            match reached {
                1 => "Keycloak answered unsupported_grant_type: the token-exchange feature is off".into(),
                3 => format!("the 'Standard token exchange' switch is off on client '{client}'"),
                r if r > 3 => "Keycloak got past this step (inferred from its answer)".into(),
                _ => "not reached: inferred from Keycloak's error text when it gets that far".into(),
            },
            format!(
                "in the admin console open client '{client}' → Settings → Capability config and turn on 'Standard token exchange' (attribute standard.token.exchange.enabled); on Keycloak < 26.2 upgrade, or check the server feature token-exchange-standard:v2 is not disabled"
            ),
        ));

        let in_aud = claims.map(|c| {
            aud_contains(c.get("aud"), client)
                || c.get("azp").and_then(Value::as_str) == Some(client)
        });
        let aud_ok = match reached {
            8 => Some(false),
            r if r > 8 => Some(true),
            _ => in_aud,
        };
        out.push(check(
            "Requester client in the subject token's aud or azp",
            aud_ok,
            match claims {
                Some(c) => format!(
                    "aud = {}, azp = {azp}; the broker's client is '{client}'",
                    c.get("aud").map(Value::to_string).unwrap_or_else(|| "(none)".into())
                ),
                None => "the subject token is not a decodable JWT".into(),
            },
            format!(
                "add an Audience mapper with Included Client Audience '{client}' to the client the user logs in with ('{azp}'): Clients → {azp} → Client scopes → {azp}-dedicated → Add mapper → By configuration → Audience (token claim on)"
            ),
        ));

        let subject_iss = claims.and_then(|c| c.get("iss")).and_then(Value::as_str);
        let endpoint_ok = token_url.map(|u| u.starts_with(issuer));
        let iss_ok = match (subject_iss, endpoint_ok) {
            (Some(i), Some(e)) => Some(i == issuer && e),
            (Some(i), None) => Some(i == issuer),
            (None, _) => None,
        };
        out.push(check(
            "Issuer URL the same as the one Keycloak is reached by",
            iss_ok,
            format!(
                "subject iss = {}, keycloak.issuer = {issuer}, token endpoint = {}",
                subject_iss.unwrap_or("(none)"),
                token_url.unwrap_or("(not discovered)")
            ),
            "Keycloak checks iss against the URL the request came in by and answers only 'Invalid token': set keycloak.issuer to exactly the iss of users' tokens and let the broker reach Keycloak by that URL, or pin Keycloak's hostname (--hostname) so every route yields the same issuer".into(),
        ));

        let exp = claims.and_then(|c| c.get("exp")).and_then(Value::as_u64);
        out.push(check(
            "Subject token not expired",
            exp.map(|e| e > self.now),
            match exp {
                Some(e) if e > self.now => format!("expires in {} s", e - self.now),
                Some(e) => format!("expired {} s ago", self.now.saturating_sub(e)),
                None => "no exp claim".into(),
            },
            "get a fresh access token (log in again): Keycloak answers an expired subject token only with 'Invalid token'".into(),
        ));

        out.push(check(
            "Subject token verifies locally (signature, iss, typ)",
            Some(local.is_none()),
            match local {
                None => "signature by a realm key, iss, exp/nbf and typ Bearer check out".into(),
                Some(e) => format!("rejected: {e}"),
            },
            "the subject must be a Keycloak access token of the configured realm (not an ID or refresh token), signed by a key in the realm's JWKS".into(),
        ));

        let result_aud = report
            .result_claims
            .as_ref()
            .map(|d| aud_contains(d.claims.get("aud"), &tcfg.audience));
        let audience_ok = match reached {
            6 | 10 => Some(false),
            SUCCESS => result_aud.or(Some(true)),
            _ => None,
        };
        out.push(check(
            "Audience available to the requester",
            audience_ok,
            format!("target audience '{}'", tcfg.audience),
            format!(
                "'{}' must be a client of the realm, and client '{client}' must map it into its tokens: add an Audience mapper for '{}' to client '{client}' (dedicated scope), or a client scope mapping a client role of '{}' that the user has",
                tcfg.audience, tcfg.audience, tcfg.audience
            ),
        ));

        out.push(Check {
            name: "User mapping set up for the target",
            ok: None,
            status: "n/a",
            detail: "informational: the user's Keycloak token is exchanged directly; mapping Backstage users (JWT authorization grant) applies once Backstage callers are supported".into(),
            fix: "for the JWT authorization grant route see docs/keycloak-setup.md".into(),
        });
        out.extend(relaxed_check(tcfg));
        out
    }
}

/// The checks of the issued token this target relaxes, named (never accepted silently).
fn relaxed_check(tcfg: &TargetConfig) -> Option<Check> {
    let relaxed = crate::config::advice::relaxed_checks(tcfg);
    (!relaxed.is_empty()).then(|| Check {
        name: "Relaxed checks of the issued token",
        ok: None,
        status: "n/a",
        detail: format!("this target relaxes: {}", relaxed.join("; ")),
        fix: "only if the IdP really issues such tokens for this audience; otherwise remove issuedTokenAudience / issuedTokenFormat from the target".into(),
    })
}

impl Tester<'_> {
    pub(super) fn keycloak_profile(&self) -> bool {
        self.config.keycloak.profile == IdpProfile::Keycloak
    }

    /// The checklist under `keycloak.profile: generic`: only what holds for any RFC 8693
    /// server (no Keycloak console steps, no stages inferred from Keycloak's texts); the IdP's
    /// own error is the answer's `error` / `error_description`.
    fn generic_checks(
        &self,
        tcfg: &TargetConfig,
        report: &Report,
        reached: u8,
        local: Option<&OidcError>,
    ) -> Vec<Check> {
        let issuer = self.idp.issuer();
        let claims = report.subject_claims.as_ref().map(|d| &d.claims);
        let mut out = Vec::new();
        out.push(check(
            "Subject token verifies locally (signature, iss, access-token type)",
            Some(local.is_none()),
            match local {
                None => "signature by a key of the issuer's JWKS, iss, exp/nbf and the access-token type check out".into(),
                Some(e) => format!("rejected: {e}"),
            },
            "the subject must be an access token of the configured issuer (not an ID or refresh token), signed by a key in its JWKS; userToken.tokenTypeCheck says how it must be typed".into(),
        ));
        let subject_iss = claims.and_then(|c| c.get("iss")).and_then(Value::as_str);
        out.push(check(
            "Subject token's iss is keycloak.issuer, byte for byte",
            subject_iss.map(|i| i == issuer),
            format!(
                "subject iss = {}, keycloak.issuer = {issuer}",
                subject_iss.unwrap_or("(none)")
            ),
            "set keycloak.issuer to exactly the iss of users' tokens, including or excluding a trailing /".into(),
        ));
        let exp = claims.and_then(|c| c.get("exp")).and_then(Value::as_u64);
        out.push(check(
            "Subject token not expired",
            exp.map(|e| e > self.now),
            match exp {
                Some(e) if e > self.now => format!("expires in {} s", e - self.now),
                Some(e) => format!("expired {} s ago", self.now.saturating_sub(e)),
                None => "no exp claim".into(),
            },
            "get a fresh access token (log in again)".into(),
        ));
        out.push(check(
            "The IdP issued a token (RFC 8693)",
            match (reached, report.response.is_some()) {
                (SUCCESS, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            match (&report.error, &report.error_description) {
                (Some(e), d) => format!("the IdP answered {e}: {}", d.as_deref().unwrap_or("")),
                (None, _) => report.summary.clone(),
            },
            "the error is the IdP's own: check in its documentation that token exchange is enabled for the broker's client and that it may issue tokens for the target's audience".into(),
        ));
        let result_aud = report
            .result_claims
            .as_ref()
            .map(|d| aud_contains(d.claims.get("aud"), &tcfg.audience));
        out.push(check(
            "Issued token's aud contains the target audience",
            result_aud,
            format!("target audience '{}'", tcfg.audience),
            "the IdP must put the target's audience into the tokens it issues for it".into(),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_keycloak_order() {
        assert_eq!(
            stage(400, "unsupported_grant_type", "Unsupported grant_type"),
            1
        );
        assert_eq!(
            stage(
                403,
                "access_denied",
                "Client is not within the token audience"
            ),
            8
        );
        assert_eq!(
            stage(
                400,
                "invalid_request",
                "Requested audience not available: x"
            ),
            10
        );
        assert_eq!(stage_verdict(8, &[8]), Some(false));
        assert_eq!(stage_verdict(10, &[1, 3]), Some(true));
        assert_eq!(stage_verdict(2, &[1, 3]), None);
    }
}
