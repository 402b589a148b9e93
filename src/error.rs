//! The HTTP error answer: RFC 6749 §5.2 JSON (`error`, `error_description`) plus, for errors
//! Keycloak returned, Keycloak's HTTP status (`idp_status`) and a `hint` with the likely fix.
//!
//! The lower layers' errors (`BrokerError`, `IdpError`) become statuses here, in
//! [`from_broker`] and [`from_idp_rejection`]. The edge's own refusals still pick their status
//! where they arise: `http/auth.rs` (401/403/503 for credentials), `http/admin.rs`,
//! `http/proxy.rs` (405, 431, 404, upstream 502/504), `http/jwks.rs` (404), `http/body.rs`
//! (408, 413), `http/token.rs` (400 `unsupported_grant_type`) and `http/mod.rs` (404, 405,
//! 431). Descriptions never contain token or secret material: the lower layers' messages are
//! built without it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::broker::{BrokerError, PolicyError};
use crate::idp::IdpError;
use crate::idp::hints::keycloak_hint;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    pub hint: Option<String>,
    pub idp_status: Option<u16>,
    /// `WWW-Authenticate` value for 401 answers (RFC 6750 §3).
    pub www_authenticate: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp_status: Option<u16>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.to_owned(),
            description: description.into(),
            hint: None,
            idp_status: None,
            www_authenticate: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 401 for a missing or unknown caller credential (RFC 6749 §5.2 `invalid_client`, with the
    /// RFC 6750 §3 challenge since callers authenticate with Bearer).
    pub fn unauthenticated(description: impl Into<String>, token_error: Option<&str>) -> Self {
        let description = description.into();
        let challenge = match token_error {
            Some(code) => format!(
                "Bearer realm=\"token-broker\", error=\"{code}\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            ),
            None => "Bearer realm=\"token-broker\"".to_owned(),
        };
        ApiError {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        // RFC 6749 §5.1: token endpoint answers are not cacheable.
        b.insert_header(("cache-control", "no-store"));
        b.insert_header(("pragma", "no-cache"));
        if let Some(w) = &self.www_authenticate {
            b.insert_header(("www-authenticate", w.as_str()));
        }
        b.json(Body {
            error: &self.error,
            error_description: &self.description,
            hint: self.hint.as_deref(),
            idp_status: self.idp_status,
        })
    }
}

/// Maps a Keycloak refusal. Keycloak's 400 and 403 pass through with their status; a 401 is
/// Keycloak refusing the *broker's* client credentials, which the caller cannot fix, so it
/// becomes 502 (with `idp_status: 401`): answering 401 would tell the caller its own
/// credential failed (RFC 6750 §3.1).
pub fn from_idp_rejection(e: &IdpError, client_id: &str) -> ApiError {
    match e {
        IdpError::Rejected {
            status,
            error,
            description,
        } => {
            let http = match status {
                Some(400) => StatusCode::BAD_REQUEST,
                Some(403) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            let mut api = ApiError::new(
                http,
                error,
                description
                    .clone()
                    .unwrap_or_else(|| "Keycloak gave no description".into()),
            );
            api.idp_status = *status;
            api.hint = keycloak_hint(error, description.as_deref(), client_id);
            api
        }
        // An answer about the request that is not an OAuth error (an HTML 403/404 from a
        // gateway, a malformed 200): shown as the refusal, with the IdP's status. 5xx answers
        // are the IdP failing, below.
        IdpError::Protocol {
            status: Some(status),
            ..
        } if *status < 500 => {
            let mut api = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                format!("Keycloak's answer was neither a token nor an OAuth error: {e}"),
            );
            api.idp_status = Some(*status);
            api.hint = Some(
                "something other than Keycloak's token endpoint may have answered (a gateway, WAF or wrong path): check keycloak.issuer and the route from the broker to Keycloak".into(),
            );
            api
        }
        other => idp_unavailable(other),
    }
}

fn idp_unavailable(e: &IdpError) -> ApiError {
    let status = match e {
        IdpError::Transport {
            kind: crate::outbound::TransportKind::Timeout,
        } => StatusCode::GATEWAY_TIMEOUT,
        // The broker's own bound (keycloak.maxConcurrentRequests), not Keycloak's failure.
        IdpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    let mut api = ApiError::new(
        status,
        "temporarily_unavailable",
        format!("Keycloak (the IdP) failed: {e}"),
    );
    api.idp_status = e.idp_status();
    api
}

/// The answer for a [`BrokerError`].
pub fn from_broker(e: &BrokerError, client_id: &str) -> ApiError {
    match e {
        BrokerError::UnknownTarget(t) => ApiError::new(
            StatusCode::BAD_REQUEST,
            // RFC 8693 §2.2.2: the audience is unknown or unacceptable.
            "invalid_target",
            format!(
                "unknown target '{}'",
                t.chars().take(64).collect::<String>()
            ),
        ),
        BrokerError::Policy(PolicyError::Forbidden(m)) => {
            ApiError::new(StatusCode::FORBIDDEN, "access_denied", m.clone())
        }
        BrokerError::Policy(PolicyError::InvalidScope(m)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_scope", m.clone())
        }
        BrokerError::Policy(PolicyError::UnsupportedTokenType(m)) => {
            ApiError::invalid_request(m.clone())
        }
        BrokerError::UserTokenRequired { .. } => {
            // The caller is known; what is missing is the user's credential (RFC 6750 §3.1
            // `invalid_request`: a required parameter is missing).
            let mut api = ApiError::unauthenticated(e.to_string(), Some("invalid_request"))
                .with_hint(
                    "send the user's Keycloak access token in the user-token header or as subject_token",
                );
            api.error = "invalid_request".into();
            api
        }
        BrokerError::ExchangeFailed { source, .. } => {
            let mut api = match source {
                IdpError::Rejected { .. } => from_idp_rejection(source, client_id),
                other => idp_unavailable(other),
            };
            api.status = match source {
                IdpError::Transport {
                    kind: crate::outbound::TransportKind::Timeout,
                } => StatusCode::GATEWAY_TIMEOUT,
                IdpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            api
        }
        BrokerError::ExchangeRejected(source) => from_idp_rejection(source, client_id),
        BrokerError::ServiceAccountFailed { source, .. } => {
            let mut api = from_idp_rejection(source, client_id);
            // The caller cannot fix the broker's service account: always a gateway error.
            if api.status.is_client_error() {
                api.status = StatusCode::BAD_GATEWAY;
            }
            api.description = format!("service-account token: {}", api.description);
            api
        }
        BrokerError::InvalidIdpAnswer(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            format!("Keycloak's answer failed the broker's checks: {m}"),
        ),
    }
}
