//! The audit log: one structured line per token request (`POST /v1/token`, event
//! `token_request`) and per proxied call (`/v1/proxy`, event `proxy_request`), refused and
//! failed ones included, always JSON, emitted as a `tracing` event with target
//! [`AUDIT_TARGET`]. `telemetry::init` routes that target to its own JSON writer on stdout,
//! whatever `logging.format` says, and keeps it out of the diagnostic log on stderr
//! (docs/operations.md "Audit log" lists the fields).
//!
//! Only identifiers and fixed values are recorded: the caller principal, the user's `sub`,
//! the target, fixed outcome codes, Keycloak's `error` code, and short SHA-256 fingerprints
//! (`digest::fingerprint`) of the tokens involved — never a token, never a secret.

use crate::broker::{BrokerError, Issued};
use crate::idp::IdpError;
use crate::inbound::Principal;
use crate::inbound::oidc::VerifiedUserToken;

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "token_broker::audit";

/// What is known about one token request; filled in as the request is handled.
#[derive(Debug, Default)]
pub struct Record {
    /// Principal name (`dev-caller`, `oidc:<sub>`), empty when the caller was not authenticated.
    pub caller: String,
    /// `service`, `user` or empty.
    pub caller_kind: &'static str,
    /// For a user via a plugin (Backstage `obo`): the acting plugin, `plugin:<id>`.
    pub actor: String,
    /// The user: the Backstage entity ref of a Backstage user principal, else the `sub` of the
    /// user's verified Keycloak token.
    pub user: String,
    /// The requested target name (at most 64 characters).
    pub target: String,
    /// Fingerprint of the user's token as presented.
    pub subject_fp: String,
    /// `user` or `service` when a token was served.
    pub identity: &'static str,
    /// `hit`, `miss`, `coalesced` when a token was served.
    pub cache: &'static str,
    /// Fallback reason when a service-account token replaced an exchanged one.
    pub fallback: &'static str,
    /// Fingerprint of the served token.
    pub issued_fp: String,
    /// `issued_user`, `issued_service`, or why not (see [`outcome`]).
    pub outcome: &'static str,
    /// Keycloak's HTTP status and `error` when Keycloak refused or failed.
    pub idp_status: Option<u16>,
    pub idp_error: String,
    /// The broker's own RFC 6749 §5.2 `error` code and HTTP status of the answer.
    pub error: String,
    pub status: u16,
    /// Proxy calls only: the request method (at most 16 characters), the retries made and
    /// whether an upstream 401 made the broker exchange again.
    pub method: String,
    pub retries: u32,
    pub reauthenticated: bool,
}

/// A fixed label for the result of the token service (metrics and audit).
pub fn outcome(result: &Result<Issued, BrokerError>) -> &'static str {
    match result {
        Ok(i) => match i.identity {
            crate::broker::Identity::User => "issued_user",
            crate::broker::Identity::Service => "issued_service",
        },
        Err(BrokerError::UnknownTarget(_)) => "unknown_target",
        Err(BrokerError::Policy(_)) => "policy_denied",
        Err(BrokerError::UserTokenRequired { .. }) => "user_token_required",
        Err(BrokerError::ExchangeFailed { .. }) => "idp_unavailable",
        Err(BrokerError::ExchangeRejected(_)) => "keycloak_rejected",
        Err(BrokerError::ServiceAccountFailed { .. }) => "service_account_failed",
        Err(BrokerError::InvalidIdpAnswer(_)) => "invalid_idp_answer",
    }
}

impl Record {
    /// Records who is calling: as soon as the credentials are verified, so a request refused
    /// later (bad form, body deadline, path) still names its caller.
    pub fn principal(&mut self, principal: &Principal, user: Option<&VerifiedUserToken>) {
        self.caller = principal.name.clone();
        self.caller_kind = principal.kind.as_str();
        self.actor = principal.actor.clone().unwrap_or_default();
        self.user = if principal.backstage_user.is_some() {
            principal.name.clone()
        } else {
            user.map(|u| u.sub.clone()).unwrap_or_default()
        };
    }

    /// Records the token service's answer, and counts it in the metrics.
    pub fn issued(&mut self, target_known: bool, result: &Result<Issued, BrokerError>) {
        self.note(result);
        let m = crate::metrics::global();
        m.token_request(
            if target_known {
                self.target.as_str()
            } else {
                "_unknown"
            },
            self.outcome,
        );
        if let Ok(i) = result {
            m.cache_request(
                match i.identity {
                    crate::broker::Identity::User => "user",
                    crate::broker::Identity::Service => "service",
                },
                i.cache.as_str(),
            );
            if let Some(f) = i.fallback {
                m.fallback(f.as_str());
            }
        }
    }

    /// Records the token service's answer without counting it in the metrics (a proxied call
    /// is audited but is not a token request).
    pub fn note(&mut self, result: &Result<Issued, BrokerError>) {
        self.outcome = outcome(result);
        match result {
            Ok(i) => {
                self.identity = i.identity.as_str();
                self.cache = i.cache.as_str();
                self.fallback = i.fallback.map(|f| f.as_str()).unwrap_or("");
                self.issued_fp = i.token.fingerprint.clone();
            }
            Err(e) => {
                let idp = match e {
                    BrokerError::ExchangeFailed { source, .. }
                    | BrokerError::ServiceAccountFailed { source, .. }
                    | BrokerError::ExchangeRejected(source) => Some(source),
                    _ => None,
                };
                match idp {
                    Some(IdpError::Rejected { status, error, .. }) => {
                        self.idp_status = *status;
                        self.idp_error = error.chars().take(64).collect();
                    }
                    Some(other) => {
                        self.idp_status = other.idp_status();
                        self.idp_error = other.kind().to_owned();
                    }
                    None => {}
                }
            }
        }
    }

    /// Writes the audit line.
    pub fn emit(&self) {
        tracing::info!(
            target: AUDIT_TARGET,
            event = "token_request",
            caller = %self.caller,
            caller_kind = self.caller_kind,
            actor = %self.actor,
            user = %self.user,
            target = %self.target,
            status = self.status,
            outcome = self.outcome,
            identity = self.identity,
            cache = self.cache,
            fallback = self.fallback,
            idp_status = self.idp_status,
            idp_error = %self.idp_error,
            error = %self.error,
            subject_fp = %self.subject_fp,
            issued_fp = %self.issued_fp,
            "token request"
        );
    }

    /// Writes the audit line of a proxied call (`/v1/proxy`): the fields of a token request
    /// plus `method`, `retries` and `reauthenticated`; `status` is the status the caller got
    /// (the upstream's, or the broker's own refusal).
    pub fn emit_proxy(&self) {
        tracing::info!(
            target: AUDIT_TARGET,
            event = "proxy_request",
            caller = %self.caller,
            caller_kind = self.caller_kind,
            actor = %self.actor,
            user = %self.user,
            target = %self.target,
            method = %self.method,
            status = self.status,
            outcome = self.outcome,
            identity = self.identity,
            cache = self.cache,
            fallback = self.fallback,
            idp_status = self.idp_status,
            idp_error = %self.idp_error,
            error = %self.error,
            subject_fp = %self.subject_fp,
            issued_fp = %self.issued_fp,
            retries = self.retries,
            reauthenticated = self.reauthenticated,
            "proxy request"
        );
    }
}
