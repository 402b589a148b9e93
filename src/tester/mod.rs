//! The exchange tester: one RFC 8693 token exchange at Keycloak **without the cache**, through
//! the broker's own [`IdpClient`], explained for a Keycloak admin — the exact form sent (secrets
//! redacted), Keycloak's literal status and body (tokens redacted), the decoded header and
//! claims of the subject token and of the result, and a checklist of the usual prerequisites
//! with the fix for each (docs/reference/keycloak-token-exchange.md §3.3–§3.8).
//!
//! Shared by the admin API (`POST /admin/exchange`, `http/admin.rs`), the web page
//! (`GET /tester`) and the command `token-broker exchange` (`cli.rs`): no duplicated logic.
//! No actix types here. This module runs the exchange; [`checklist`] judges it, [`view`] and
//! [`redact`] prepare what is shown.

pub mod checklist;
pub mod cli;
#[cfg(feature = "dev")]
pub mod dev_login;
pub mod online;
pub mod redact;
pub mod view;

use serde::Serialize;

use crate::config::Config;
use crate::idp::exchange::{ExchangeRequest, exchange_form};
use crate::idp::hints::keycloak_hint;
use crate::idp::{IdpClient, IdpError, parse_token_answer};
use crate::inbound::oidc::OidcVerifier;
pub use checklist::Check;
use checklist::{SUCCESS, stage};
pub use redact::redacted;
use redact::shown_body;
pub use view::{Decoded, RequestView, ResponseView, decode_jwt};

/// The tester's answer (the dev-contract JSON plus a summary).
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub audience: String,
    pub issuer: String,
    /// `success`, `keycloak_error` or `idp_unreachable`.
    pub outcome: &'static str,
    pub summary: String,
    pub request: Option<RequestView>,
    pub response: Option<ResponseView>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub hint: Option<String>,
    pub subject_claims: Option<Decoded>,
    pub result_claims: Option<Decoded>,
    pub checks: Vec<Check>,
}

/// Why the tester could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TesterError {
    #[error("unknown target '{0}'")]
    UnknownTarget(String),
    #[error("the subject token is empty or larger than 16 KiB")]
    BadToken,
}

/// What the tester needs from the running broker (or the CLI's own instances).
pub struct Tester<'a> {
    pub config: &'a Config,
    pub idp: &'a IdpClient,
    pub verifier: &'a OidcVerifier,
    /// Unix seconds.
    pub now: u64,
}

impl Tester<'_> {
    /// Runs one exchange for `target` with `subject_token`, bypassing the cache.
    pub async fn run(&self, target: &str, subject_token: &str) -> Result<Report, TesterError> {
        let tcfg = self
            .config
            .targets
            .get(target)
            .ok_or_else(|| TesterError::UnknownTarget(target.chars().take(64).collect()))?;
        let subject_token = subject_token.trim();
        if subject_token.is_empty() || subject_token.len() > 16 * 1024 {
            return Err(TesterError::BadToken);
        }
        // Summaries name Keycloak only under its profile.
        let who = if self.keycloak_profile() {
            "Keycloak"
        } else {
            "The IdP"
        };
        let subject = decode_jwt(subject_token);
        let local = self.verifier.verify(subject_token).await.err();

        let form = exchange_form(&ExchangeRequest {
            subject_token,
            audience: &tcfg.audience,
            scopes: &tcfg.scopes,
            requested_token_type: tcfg.requested_token_type,
        });
        let (auth_headers, auth_form) = self.idp.client_auth_display();
        let mut shown_form: Vec<[String; 2]> = form
            .iter()
            .map(|(k, v)| {
                let v = if *k == "subject_token" {
                    redacted("subject token", v)
                } else {
                    v.clone()
                };
                [(*k).to_owned(), v]
            })
            .collect();
        shown_form.extend(auth_form.into_iter().map(|(k, v)| [k, v]));
        let mut headers = vec![
            [
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ],
            ["accept".to_owned(), "application/json".to_owned()],
        ];
        headers.extend(auth_headers.into_iter().map(|(k, v)| [k, v]));

        let mut report = Report {
            target: target.to_owned(),
            audience: tcfg.audience.clone(),
            issuer: self.idp.issuer().to_owned(),
            outcome: "idp_unreachable",
            summary: String::new(),
            request: None,
            response: None,
            error: None,
            error_description: None,
            hint: None,
            subject_claims: subject,
            result_claims: None,
            checks: Vec::new(),
        };
        let endpoints = match self.idp.endpoints().await {
            Ok(ep) => ep,
            Err(e) => {
                report.summary = format!("{who} could not be reached: {e}");
                report.checks = self.checks(tcfg, &report, 0, None, local.as_ref());
                return Ok(report);
            }
        };
        let token_url = endpoints.token.to_string();
        report.request = Some(RequestView {
            method: "POST",
            url: token_url.clone(),
            headers,
            form: shown_form,
        });
        let raw = match self.idp.post_token_form_raw(form).await {
            Ok(r) => r,
            Err(e) => {
                report.summary = format!("{who} could not be reached: {e}");
                report.checks = self.checks(tcfg, &report, 0, Some(&token_url), local.as_ref());
                return Ok(report);
            }
        };
        report.response = Some(ResponseView {
            status: raw.status,
            body: shown_body(&raw.body),
        });
        let reached = match parse_token_answer(raw.status, &raw.body) {
            Ok(answer) => {
                report.outcome = "success";
                report.result_claims = decode_jwt(&answer.access_token);
                report.summary = format!(
                    "{who} issued a token for target '{target}' (audience '{}')",
                    tcfg.audience
                );
                SUCCESS
            }
            Err(IdpError::Rejected {
                status,
                error,
                description,
            }) => {
                report.outcome = "keycloak_error";
                let d = description.clone().unwrap_or_default();
                report.hint = crate::idp::hints::hint_client(&self.config.keycloak)
                    .and_then(|c| keycloak_hint(&error, description.as_deref(), c));
                report.summary = format!(
                    "{who} refused the exchange: HTTP {} {error}: {d}",
                    status.unwrap_or(raw.status)
                );
                // Keycloak's pipeline stages are recognised from its texts: keycloak profile only.
                let s = if self.keycloak_profile() {
                    stage(raw.status, &error, &d)
                } else {
                    0
                };
                report.error = Some(error);
                report.error_description = description;
                s
            }
            Err(e) => {
                report.outcome = "keycloak_error";
                report.summary = format!("{who} answered unexpectedly: {e}");
                0
            }
        };
        report.checks = self.checks(tcfg, &report, reached, Some(&token_url), local.as_ref());
        Ok(report)
    }
}
