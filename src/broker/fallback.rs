//! The fallback decision and its application, for exchanges and user mappings alike: which
//! IdP failures the target's `fallback: service_account` may cover ([`fallback_reason`], the
//! one place that decides it), and what the broker does after such a failure
//! ([`TokenService::after_idp_failure`]): serve the service-account token, fail (`deny`), or
//! pass Keycloak's refusal on.

use super::{BrokerError, Issued, TokenService};
use crate::config::{FallbackPolicy, TargetConfig};
use crate::idp::IdpError;

/// Why a fallback token was served instead of an exchanged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    NoUserToken,
    IdpUnavailable,
    ExchangeUnsupported,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NoUserToken => "no_user_token",
            FallbackReason::IdpUnavailable => "idp_unavailable",
            FallbackReason::ExchangeUnsupported => "exchange_unsupported",
        }
    }
}

/// May the target's `service_account` fallback cover this failed exchange or user mapping,
/// and under which reason? Only when Keycloak gave no answer about the request: it could not
/// be reached, timed out, answered 5xx, or (`unsupported_grant_type`, RFC 6749 §5.2) has the
/// grant turned off. Every other answer — an OAuth refusal, an HTML 403/404 from something
/// in front of Keycloak, a malformed 200 — is about this request and is shown to the caller
/// as Keycloak's refusal, never hidden behind the service account.
pub fn fallback_reason(e: &IdpError) -> Option<FallbackReason> {
    if e.is_unavailable() {
        Some(FallbackReason::IdpUnavailable)
    } else if matches!(e, IdpError::Rejected { error, .. } if error == "unsupported_grant_type") {
        Some(FallbackReason::ExchangeUnsupported)
    } else {
        None
    }
}

/// Which user path failed, for the log line of a fallback.
#[derive(Clone, Copy)]
pub(super) enum FailedPath<'a> {
    /// An RFC 8693 exchange of the user's token (its fingerprint).
    Exchange { subject: &'a str },
    /// A target's `userMapping`.
    UserMapping,
}

impl TokenService {
    /// After an IdP failure on a user path: the service-account token where the failure may be
    /// covered and the target says `service_account`; `ExchangeFailed` where it says `deny`;
    /// Keycloak's refusal, as is, for every other answer.
    pub(super) async fn after_idp_failure(
        &self,
        target_name: &str,
        target: &TargetConfig,
        scopes: &[String],
        error: IdpError,
        path: FailedPath<'_>,
    ) -> Result<Issued, BrokerError> {
        match (fallback_reason(&error), target.fallback) {
            (None, _) => Err(BrokerError::ExchangeRejected(error)),
            (Some(r), FallbackPolicy::ServiceAccount) => {
                match path {
                    FailedPath::Exchange { subject } => tracing::warn!(
                        target = target_name,
                        reason = r.as_str(),
                        error = %error,
                        subject = %subject,
                        "token exchange failed: serving the service-account token"
                    ),
                    FailedPath::UserMapping => tracing::warn!(
                        target = target_name,
                        reason = r.as_str(),
                        error = %error,
                        "user mapping failed: serving the service-account token"
                    ),
                }
                self.service_token(target_name, target, scopes, None, Some(r))
                    .await
            }
            (Some(_), FallbackPolicy::Deny) => Err(BrokerError::ExchangeFailed {
                target: target_name.to_owned(),
                source: error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_only_for_no_answer_5xx_and_unsupported_grant() {
        let rejected = |status, error: &str| IdpError::Rejected {
            status: Some(status),
            error: error.into(),
            description: None,
        };
        let protocol = |status| IdpError::Protocol {
            status: Some(status),
            detail: String::new(),
        };
        let transport = IdpError::Transport {
            kind: crate::outbound::TransportKind::Connect,
        };
        for e in [transport, IdpError::Busy, rejected(503, "x"), protocol(502)] {
            assert_eq!(
                fallback_reason(&e),
                Some(FallbackReason::IdpUnavailable),
                "{e}"
            );
        }
        assert_eq!(
            fallback_reason(&rejected(400, "unsupported_grant_type")),
            Some(FallbackReason::ExchangeUnsupported)
        );
        for e in [
            rejected(400, "invalid_request"),
            rejected(403, "access_denied"),
            rejected(401, "unauthorized_client"),
            protocol(403),
            protocol(404),
            protocol(200),
        ] {
            assert_eq!(fallback_reason(&e), None, "{e}");
        }
    }
}
