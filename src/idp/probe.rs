//! Side-effect-free probes of the IdP for `token-broker check-config --online` and the start-up
//! check of `serve`: discovery (the issuer matches), the JWKS (reachable, usable keys), the
//! broker's own client authentication, and per target whether the IdP knows the audience.
//!
//! The client-authentication and audience probes send a token exchange (RFC 8693 §2.1) whose
//! `subject_token` is a fixed dummy that is no token at all: nothing can be issued for it, so
//! the IdP answers with an error and creates nothing. The answer tells what was reached:
//! `invalid_client` (RFC 6749 §5.2) or a 401 means the client authentication was refused;
//! any other OAuth error means it was accepted (the IdP went on to judge the request);
//! `unsupported_grant_type` is judged *before* the client by Keycloak, so it tells nothing.
//! An unknown audience is `invalid_target` (RFC 8693 §2.2.2) or Keycloak's `Audience not
//! found`; an IdP that checks the subject token first cannot tell (the verdict is unknown).

use super::exchange::{ExchangeRequest, exchange_form};
use super::{IdpClient, IdpError, parse_token_answer};
use crate::config::TokenType;
use crate::metrics::IdpRequest;

/// The dummy subject token of the probes: not a JWT, so no IdP can accept it.
const DUMMY_SUBJECT: &str = "token-broker-probe-not-a-token";

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed,
    /// The probe could not decide (IdP unreachable, or it cannot tell).
    Unknown,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Failed => "failed",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One probe's result: what was checked, the verdict, what was seen and (unless ok) the fix.
/// No text contains a secret or a token.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: String,
}

fn probe(name: impl Into<String>, verdict: Verdict, detail: String, fix: &str) -> Probe {
    Probe {
        name: name.into(),
        verdict,
        detail,
        fix: fix.to_owned(),
    }
}

const FIX_CLIENT: &str = "check keycloak.clientId, keycloak.clientSecret and keycloak.clientAuthMethod against the broker's client at the IdP (it must be confidential and enabled)";

impl IdpClient {
    /// Loads discovery now: ok when the document names exactly the configured issuer.
    pub async fn probe_discovery(&self) -> Probe {
        match self.discover().await {
            Ok(ep) => probe(
                "discovery",
                Verdict::Ok,
                format!(
                    "the document's issuer equals keycloak.issuer; token endpoint {}",
                    ep.token
                ),
                "",
            ),
            Err(e) => probe(
                "discovery",
                Verdict::Failed,
                e.to_string(),
                "keycloak.issuer must be exactly the `issuer` of the IdP's discovery document (a trailing / included or not), fetched from {issuer}/.well-known/openid-configuration, and the IdP must be reachable from the broker",
            ),
        }
    }

    /// Fetches the JWKS named by discovery: ok when it has at least one usable signing key.
    pub async fn probe_jwks(&self) -> Probe {
        const FIX: &str = "the discovery document's jwks_uri must be reachable from the broker and list the IdP's signing keys (RSA, EC or OKP with a kid)";
        if !self.is_discovered() {
            return probe(
                "jwks",
                Verdict::Unknown,
                "not checked: discovery failed".into(),
                FIX,
            );
        }
        match self.jwks.refresh().await {
            Ok(()) if self.jwks.key_count() > 0 => probe(
                "jwks",
                Verdict::Ok,
                format!("{} usable signing key(s)", self.jwks.key_count()),
                "",
            ),
            Ok(()) => probe(
                "jwks",
                Verdict::Failed,
                "the key set has no usable signing key".into(),
                FIX,
            ),
            Err(e) => probe("jwks", Verdict::Failed, e.to_string(), FIX),
        }
    }

    /// The broker's client authentication at the token endpoint (see the module doc).
    pub async fn probe_client_auth(&self) -> Probe {
        const NAME: &str = "client authentication";
        let client = self.client_id().to_owned();
        match self.dummy_exchange(&client).await {
            Err(e) => probe(
                NAME,
                Verdict::Unknown,
                format!("the token endpoint could not be asked: {e}"),
                "make the IdP's token endpoint reachable from the broker",
            ),
            Ok(Answer::Error {
                status,
                error,
                description,
            }) => {
                if status == 401 || error == "invalid_client" {
                    probe(
                        NAME,
                        Verdict::Failed,
                        format!(
                            "the IdP refused client '{client}': HTTP {status} {error}: {description}"
                        ),
                        FIX_CLIENT,
                    )
                } else if error == "unsupported_grant_type" {
                    probe(
                        NAME,
                        Verdict::Unknown,
                        "the IdP does not offer token exchange (unsupported_grant_type), which it judges before the client".into(),
                        "enable token exchange (RFC 8693) at the IdP (Keycloak: standard token exchange, 26.2+)",
                    )
                } else if status >= 500 {
                    probe(
                        NAME,
                        Verdict::Unknown,
                        format!("the IdP failed: HTTP {status} {error}"),
                        "check the IdP's health",
                    )
                } else {
                    probe(
                        NAME,
                        Verdict::Ok,
                        format!(
                            "client '{client}' authenticated (the IdP went on to refuse the dummy subject token: {error})"
                        ),
                        "",
                    )
                }
            }
            Ok(Answer::Issued) => probe(
                NAME,
                Verdict::Ok,
                format!("client '{client}' authenticated"),
                "",
            ),
            Ok(Answer::NotOAuth(status)) => probe(
                NAME,
                Verdict::Unknown,
                format!("the token endpoint answered HTTP {status} without an OAuth answer"),
                "check that nothing (a gateway, a WAF) stands between the broker and the IdP's token endpoint",
            ),
        }
    }

    /// Whether the IdP knows `audience` (target `name`), where it can tell.
    pub async fn probe_audience(&self, name: &str, audience: &str) -> Probe {
        let label = format!("target {name}: audience '{audience}'");
        let fix =
            "make the audience a client (resource) the IdP knows, or fix targets.<name>.audience";
        match self.dummy_exchange(audience).await {
            Ok(Answer::Error {
                error, description, ..
            }) if error == "invalid_target" || description == "Audience not found" => probe(
                label,
                Verdict::Failed,
                format!("the IdP does not know it: {error}: {description}"),
                fix,
            ),
            Ok(Answer::Error { error, .. }) => probe(
                label,
                Verdict::Unknown,
                format!("the IdP cannot tell without a user's token (it answered {error} first)"),
                "run `token-broker exchange --target NAME` with a user's token to check it",
            ),
            Ok(Answer::Issued) => probe(label, Verdict::Ok, "accepted".into(), ""),
            Ok(Answer::NotOAuth(status)) => probe(
                label,
                Verdict::Unknown,
                format!("HTTP {status} without an OAuth answer"),
                fix,
            ),
            Err(e) => probe(label, Verdict::Unknown, e.to_string(), fix),
        }
    }

    async fn dummy_exchange(&self, audience: &str) -> Result<Answer, IdpError> {
        let form = exchange_form(&ExchangeRequest {
            subject_token: DUMMY_SUBJECT,
            audience,
            scopes: &[],
            requested_token_type: TokenType::AccessToken,
        });
        // Counted as `probe`, not `token_exchange`: the dummy exchange is refused by design, and
        // a start-up check must not read as a failed user exchange on the dashboards.
        let ep = self.endpoints().await?;
        let raw = self
            .post_form_raw(ep.token.clone(), form, IdpRequest::Probe)
            .await?;
        Ok(match parse_token_answer(raw.status, &raw.body) {
            Ok(_) => Answer::Issued,
            Err(IdpError::Rejected {
                status,
                error,
                description,
            }) => Answer::Error {
                status: status.unwrap_or(raw.status),
                error,
                description: description.unwrap_or_default(),
            },
            Err(_) => Answer::NotOAuth(raw.status),
        })
    }
}

enum Answer {
    Issued,
    Error {
        status: u16,
        error: String,
        description: String,
    },
    NotOAuth(u16),
}
