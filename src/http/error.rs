//! The HTTP error answer: RFC 6749 §5.2 JSON (`error`, `error_description`) plus, for errors
//! Keycloak returned, Keycloak's HTTP status (`idp_status`) and a `hint` with the likely fix.
//!
//! An [`ApiError`] carries a typed code ([`ErrorCode`], RFC 6749 §5.2 / RFC 6750 §3.1 /
//! RFC 8693 §2.2.2) and a [`Cause`] (what the answer is about); its HTTP status is decided in
//! one function, [`status`], from the two. The lower layers' errors (`BrokerError`,
//! `IdpError`, the proxy's `ForwardError`, inbound's `AuthError`) become answers in
//! [`from_broker`], [`from_idp_rejection`] and next to their handlers (`http/auth.rs`,
//! `http/proxy.rs`), which pick a code and a cause, never a status.
//!
//! Statuses that are not an OAuth error answer stay explicit, as [`Cause::Http`]
//! ([`HttpRefusal`]): 405 (RFC 9110 §15.5.6, with `Allow`: [`ApiError::method_not_allowed`]),
//! 408 (the body deadline, `server.bodyReadTimeout`), 413 (the body limit) and 431 (RFC 6585
//! §5). Their `error` is still `invalid_request`, so every answer has the same JSON shape.
//!
//! Descriptions never contain token or secret material: the lower layers' messages are built
//! without it.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::broker::{BrokerError, PolicyError};
use crate::idp::IdpError;
use crate::idp::hints::keycloak_hint;
use crate::outbound::TransportKind;
pub use crate::protocol::ErrorCode;

/// What an error answer is about; with the code it decides the status ([`status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The caller's request: the code alone decides.
    Request,
    /// The caller's credential is missing or refused, answered with an RFC 6750 §3 challenge:
    /// 401 whatever the code (`invalid_client`, `invalid_token`, `invalid_request`).
    Unauthenticated,
    /// Keycloak refused a grant made for the caller: Keycloak's 400 and 403 pass through; a
    /// 401 (Keycloak refusing the *broker's* client credentials, which the caller cannot fix)
    /// and anything else become 502 (answering 401 would tell the caller its own credential
    /// failed, RFC 6750 §3.1).
    IdpRefused { idp_status: Option<u16> },
    /// Keycloak refused the broker's own service account: the caller cannot fix it, 502.
    BrokerRefused,
    /// A server the broker depends on (Keycloak) failed or could not be asked.
    Unavailable(Failure),
    /// Not an OAuth error answer: an HTTP-level refusal with its own status.
    Http(HttpRefusal),
}

/// How a server the broker depends on failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time: 504.
    Timeout,
    /// The broker's own bound (`keycloak.maxConcurrentRequests`), not the server's failure:
    /// 503.
    Busy,
    /// Unreachable, a 5xx, or an answer that is not usable: 502.
    Failed,
}

impl Failure {
    /// The failure an [`IdpError`] stands for.
    pub fn of(e: &IdpError) -> Self {
        match e {
            IdpError::Transport {
                kind: TransportKind::Timeout,
            } => Failure::Timeout,
            IdpError::Busy => Failure::Busy,
            _ => Failure::Failed,
        }
    }
}

/// HTTP-level refusals that are not OAuth error answers; the status is the HTTP rule's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// RFC 9110 §15.5.6.
    MethodNotAllowed,
    /// RFC 9110 §15.5.9: the body did not arrive within `server.bodyReadTimeout`.
    RequestTimeout,
    /// RFC 9110 §15.5.14: the body is larger than allowed.
    PayloadTooLarge,
    /// RFC 6585 §5: the request headers are larger than allowed.
    HeadersTooLarge,
}

/// The HTTP status of an error answer: the one place it is decided.
pub fn status(code: &ErrorCode, cause: Cause) -> StatusCode {
    match cause {
        Cause::Http(HttpRefusal::MethodNotAllowed) => StatusCode::METHOD_NOT_ALLOWED,
        Cause::Http(HttpRefusal::RequestTimeout) => StatusCode::REQUEST_TIMEOUT,
        Cause::Http(HttpRefusal::PayloadTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Cause::Http(HttpRefusal::HeadersTooLarge) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Cause::Unauthenticated => StatusCode::UNAUTHORIZED,
        Cause::IdpRefused {
            idp_status: Some(400),
        } => StatusCode::BAD_REQUEST,
        Cause::IdpRefused {
            idp_status: Some(403),
        } => StatusCode::FORBIDDEN,
        Cause::IdpRefused { .. } | Cause::BrokerRefused => StatusCode::BAD_GATEWAY,
        Cause::Unavailable(Failure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Cause::Unavailable(Failure::Busy) => StatusCode::SERVICE_UNAVAILABLE,
        Cause::Unavailable(Failure::Failed) => StatusCode::BAD_GATEWAY,
        Cause::Request => match code {
            // RFC 6749 §5.2: 400 unless the client failed to authenticate.
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidGrant
            | ErrorCode::UnauthorizedClient
            | ErrorCode::UnsupportedGrantType
            | ErrorCode::InvalidScope
            | ErrorCode::InvalidTarget => StatusCode::BAD_REQUEST,
            // RFC 6749 §5.2 (`invalid_client`), RFC 6750 §3.1 (`invalid_token`).
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            // RFC 6750 §3.1 (`insufficient_scope`); `access_denied`: refused by policy.
            ErrorCode::AccessDenied | ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // The broker is a gateway: a server error is always another server's.
            ErrorCode::ServerError | ErrorCode::UpstreamUnavailable | ErrorCode::Other(_) => {
                StatusCode::BAD_GATEWAY
            }
        },
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub cause: Cause,
    pub description: String,
    pub hint: Option<String>,
    pub idp_status: Option<u16>,
    /// `WWW-Authenticate` value for 401 answers (RFC 6750 §3).
    pub www_authenticate: Option<String>,
    /// `Allow` value for 405 answers (RFC 9110 §15.5.6: a 405 lists the supported methods).
    pub allow: Option<&'static str>,
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
    pub fn new(code: ErrorCode, cause: Cause, description: impl Into<String>) -> Self {
        ApiError {
            code,
            cause,
            description: description.into(),
            hint: None,
            idp_status: None,
            www_authenticate: None,
            allow: None,
        }
    }

    /// 405 for a method the resource does not take; `allow` lists those it does.
    pub fn method_not_allowed(allow: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::http(HttpRefusal::MethodNotAllowed, description)
        }
    }

    /// An answer about the caller's request: the code decides the status.
    pub fn request(code: ErrorCode, description: impl Into<String>) -> Self {
        Self::new(code, Cause::Request, description)
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::request(ErrorCode::InvalidRequest, description)
    }

    /// An HTTP-level refusal ([`HttpRefusal`]), `invalid_request` in the body.
    pub fn http(refusal: HttpRefusal, description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, Cause::Http(refusal), description)
    }

    /// 401 for a missing or unknown caller credential (RFC 6749 §5.2 `invalid_client`, with the
    /// RFC 6750 §3 challenge since callers authenticate with Bearer; `token_error` is the
    /// challenge's `error`, if any).
    pub fn unauthenticated(description: impl Into<String>, token_error: Option<ErrorCode>) -> Self {
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
            ..Self::new(
                ErrorCode::InvalidClient,
                Cause::Unauthenticated,
                description,
            )
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The HTTP status, from [`status`].
    pub fn status(&self) -> StatusCode {
        status(&self.code, self.cause)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status());
        // RFC 6749 §5.1: token endpoint answers are not cacheable.
        b.insert_header(("cache-control", "no-store"));
        b.insert_header(("pragma", "no-cache"));
        if let Some(w) = &self.www_authenticate {
            b.insert_header(("www-authenticate", w.as_str()));
        }
        if let Some(a) = self.allow {
            b.insert_header(("allow", a));
        }
        b.json(Body {
            error: self.code.as_str(),
            error_description: &self.description,
            hint: self.hint.as_deref(),
            idp_status: self.idp_status,
        })
    }
}

/// Maps a Keycloak refusal: Keycloak's code passes through unchanged; the status follows
/// [`Cause::IdpRefused`] (400 and 403 pass, a 401 and anything else become 502, with
/// `idp_status`).
pub fn from_idp_rejection(e: &IdpError, hint_client: Option<&str>) -> ApiError {
    match e {
        IdpError::Rejected {
            status,
            error,
            description,
        } => {
            let mut api = ApiError::new(
                ErrorCode::parse(error),
                Cause::IdpRefused {
                    idp_status: *status,
                },
                description
                    .clone()
                    .unwrap_or_else(|| "Keycloak gave no description".into()),
            );
            api.idp_status = *status;
            // Keycloak's texts only under the keycloak profile (`hint_client` is `None` else).
            api.hint = hint_client.and_then(|c| keycloak_hint(error, description.as_deref(), c));
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
                ErrorCode::ServerError,
                Cause::Unavailable(Failure::Failed),
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
    let mut api = ApiError::new(
        ErrorCode::TemporarilyUnavailable,
        Cause::Unavailable(Failure::of(e)),
        format!("Keycloak (the IdP) failed: {e}"),
    );
    api.idp_status = e.idp_status();
    api
}

/// The answer for a [`BrokerError`].
pub fn from_broker(e: &BrokerError, hint_client: Option<&str>) -> ApiError {
    match e {
        BrokerError::UnknownTarget(t) => ApiError::request(
            // RFC 8693 §2.2.2: the audience is unknown or unacceptable.
            ErrorCode::InvalidTarget,
            format!(
                "unknown target '{}'",
                t.chars().take(64).collect::<String>()
            ),
        ),
        BrokerError::Policy(PolicyError::Forbidden(m)) => {
            ApiError::request(ErrorCode::AccessDenied, m.clone())
        }
        BrokerError::Policy(PolicyError::InvalidScope(m)) => {
            ApiError::request(ErrorCode::InvalidScope, m.clone())
        }
        BrokerError::Policy(PolicyError::UnsupportedTokenType(m)) => {
            ApiError::invalid_request(m.clone())
        }
        BrokerError::UserTokenRequired { .. } => {
            // The caller is known; what is missing is the user's credential (RFC 6750 §3.1
            // `invalid_request`: a required parameter is missing).
            let mut api =
                ApiError::unauthenticated(e.to_string(), Some(ErrorCode::InvalidRequest))
                    .with_hint(
                        "send the user's Keycloak access token in the user-token header or as subject_token",
                    );
            api.code = ErrorCode::InvalidRequest;
            api
        }
        BrokerError::ExchangeFailed { source, .. } => {
            let mut api = match source {
                IdpError::Rejected { .. } => from_idp_rejection(source, hint_client),
                other => idp_unavailable(other),
            };
            // The fallback could not cover it: whatever Keycloak said, the IdP failed.
            api.cause = Cause::Unavailable(Failure::of(source));
            api
        }
        BrokerError::ExchangeRejected(source) => from_idp_rejection(source, hint_client),
        BrokerError::ServiceAccountFailed { source, .. } => {
            let mut api = from_idp_rejection(source, hint_client);
            // The caller cannot fix the broker's service account: always a gateway error.
            if api.status().is_client_error() {
                api.cause = Cause::BrokerRefused;
            }
            api.description = format!("service-account token: {}", api.description);
            api
        }
        BrokerError::InvalidIdpAnswer(m) => ApiError::new(
            ErrorCode::ServerError,
            Cause::Unavailable(Failure::Failed),
            format!("Keycloak's answer failed the broker's checks: {m}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_gets_its_status() {
        use ErrorCode as C;
        let table = [
            (C::InvalidRequest, 400),
            (C::InvalidClient, 401),
            (C::InvalidGrant, 400),
            (C::UnauthorizedClient, 400),
            (C::UnsupportedGrantType, 400),
            (C::InvalidScope, 400),
            (C::InvalidTarget, 400),
            (C::AccessDenied, 403),
            (C::ServerError, 502),
            (C::TemporarilyUnavailable, 503),
            (C::InvalidToken, 401),
            (C::InsufficientScope, 403),
            (C::NotFound, 404),
            (C::UpstreamUnavailable, 502),
            (C::UpstreamTimeout, 504),
            (C::Other("weird".into()), 502),
        ];
        assert_eq!(
            table.len(),
            ErrorCode::KNOWN.len() + 1,
            "every code is listed"
        );
        for (code, want) in table {
            assert_eq!(status(&code, Cause::Request).as_u16(), want, "{code}");
        }
    }

    #[test]
    fn the_cause_decides_where_the_code_does_not() {
        let c = ErrorCode::InvalidRequest;
        let table = [
            (Cause::Unauthenticated, 401),
            (
                Cause::IdpRefused {
                    idp_status: Some(400),
                },
                400,
            ),
            (
                Cause::IdpRefused {
                    idp_status: Some(403),
                },
                403,
            ),
            (
                Cause::IdpRefused {
                    idp_status: Some(401),
                },
                502,
            ),
            (
                Cause::IdpRefused {
                    idp_status: Some(404),
                },
                502,
            ),
            (Cause::IdpRefused { idp_status: None }, 502),
            (Cause::BrokerRefused, 502),
            (Cause::Unavailable(Failure::Timeout), 504),
            (Cause::Unavailable(Failure::Busy), 503),
            (Cause::Unavailable(Failure::Failed), 502),
            (Cause::Http(HttpRefusal::MethodNotAllowed), 405),
            (Cause::Http(HttpRefusal::RequestTimeout), 408),
            (Cause::Http(HttpRefusal::PayloadTooLarge), 413),
            (Cause::Http(HttpRefusal::HeadersTooLarge), 431),
        ];
        for (cause, want) in table {
            assert_eq!(status(&c, cause).as_u16(), want, "{cause:?}");
        }
    }

    fn answer(e: &ApiError) -> (u16, Vec<(String, String)>, serde_json::Value) {
        let r = e.error_response();
        let status = r.status().as_u16();
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        headers.sort();
        let body = actix_web::rt::System::new()
            .block_on(actix_web::body::to_bytes(r.into_body()))
            .unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn the_json_shape_is_unchanged() {
        let (status, headers, body) = answer(&ApiError::invalid_request("bad"));
        assert_eq!(status, 400);
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_request", "error_description": "bad"})
        );
        assert_eq!(
            headers,
            vec![
                ("cache-control".into(), "no-store".into()),
                ("content-type".into(), "application/json".into()),
                ("pragma".into(), "no-cache".into()),
            ]
        );

        let keycloak = IdpError::Rejected {
            status: Some(400),
            error: "invalid_request".into(),
            description: Some("Invalid token".into()),
        };
        let (status, _, body) = answer(&from_idp_rejection(&keycloak, Some("broker")));
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_description"], "Invalid token");
        assert_eq!(body["idp_status"], 400);
        assert_eq!(
            body.as_object().unwrap().len(),
            3 + usize::from(body.get("hint").is_some())
        );

        let (status, headers, body) = answer(&ApiError::unauthenticated(
            "the user's token was \"expired\"",
            Some(ErrorCode::InvalidToken),
        ));
        assert_eq!(status, 401);
        assert_eq!(body["error"], "invalid_client");
        assert!(headers.contains(&(
            "www-authenticate".into(),
            "Bearer realm=\"token-broker\", error=\"invalid_token\", error_description=\"the user's token was 'expired'\"".into()
        )));
    }
}
