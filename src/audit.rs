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
//!
//! The record is plain data: the HTTP edge (`http::record`) fills it from what the lower
//! layers return, so this module depends on none of them.

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
    /// `issued_user`, `issued_service`, or why not (the token service's outcome, or the
    /// edge's: `bad_request`, `method_refused`, `path_refused`, `upstream_*`, `proxied`).
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

impl Record {
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
