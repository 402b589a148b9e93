//! Why a call to the IdP failed ([`IdpError`]), and the classification the rest of the broker
//! relies on: unavailable (no answer, a 5xx, the local bound) versus an answer about the
//! request. No HTTP status is decided here: the edge maps errors to answers.

use crate::outbound::TransportKind;

/// Why a call to the IdP failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdpError {
    /// No usable answer: connection refused or reset, DNS, TLS, timeout.
    #[error("the IdP could not be reached ({kind})")]
    Transport { kind: TransportKind },
    /// An OAuth error answer (RFC 6749 §5.2) with Keycloak's own `error` and description.
    #[error("the IdP refused the request: {error}")]
    Rejected {
        /// Keycloak's HTTP status, when the client library reports it.
        status: Option<u16>,
        error: String,
        description: Option<String>,
    },
    /// An answer that is neither a token response nor an OAuth error: an HTML page from a
    /// gateway, a malformed or oversized 200. `status` is the IdP's HTTP status, when an
    /// answer arrived.
    #[error("the IdP answered unexpectedly: {detail}")]
    Protocol { status: Option<u16>, detail: String },
    /// Discovery has not succeeded yet.
    #[error("the IdP's discovery document could not be loaded: {0}")]
    Discovery(String),
    /// `keycloak.maxConcurrentRequests` calls are already in flight: failed fast, nothing sent.
    #[error("too many requests to the IdP are in flight; try again shortly")]
    Busy,
}

impl IdpError {
    /// True when the IdP is unreachable or failing rather than refusing: no answer at all
    /// (network, timeout, discovery not loaded, the local bound) or a 5xx, because a gateway
    /// or a Keycloak in trouble says nothing about the user's request. Any other answer — an
    /// OAuth error, an HTML 403/404 from something in front of Keycloak, a malformed 200 — is
    /// an answer about this request and is never "unavailable" (the fallback decision,
    /// `broker::fallback::fallback_reason`, relies on this).
    pub fn is_unavailable(&self) -> bool {
        match self {
            IdpError::Transport { .. } | IdpError::Discovery(_) | IdpError::Busy => true,
            IdpError::Rejected { status, .. } | IdpError::Protocol { status, .. } => {
                status.is_some_and(|s| s >= 500)
            }
        }
    }

    /// The IdP's HTTP status, when an answer arrived.
    pub fn idp_status(&self) -> Option<u16> {
        match self {
            IdpError::Rejected { status, .. } | IdpError::Protocol { status, .. } => *status,
            _ => None,
        }
    }

    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IdpError::Transport {
                kind: TransportKind::Timeout,
            } => "timeout",
            IdpError::Transport { .. } => "network",
            IdpError::Rejected { .. } => "rejected",
            IdpError::Protocol { .. } => "protocol",
            IdpError::Discovery(_) => "discovery",
            IdpError::Busy => "busy",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_unavailable() {
        assert!(IdpError::Busy.is_unavailable());
    }

    #[test]
    fn unavailable_classification() {
        let t = IdpError::Transport {
            kind: TransportKind::Timeout,
        };
        assert!(t.is_unavailable());
        let r = IdpError::Rejected {
            status: Some(400),
            error: "invalid_request".into(),
            description: None,
        };
        assert!(!r.is_unavailable());
        let s = IdpError::Rejected {
            status: Some(503),
            error: "x".into(),
            description: None,
        };
        assert!(s.is_unavailable());
    }
}
