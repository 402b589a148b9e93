//! Authentication of a request to the public listener, shared by `/v1/token` and `/v1/proxy`
//! so both accept exactly the same credentials in exactly the same way.
//!
//! The caller credential is `Authorization: Bearer` (RFC 6750 §2.1); a present but unknown one
//! fails closed. The user's token comes from the configured header or, on `/v1/token` only, the
//! RFC 8693 §2.1 `subject_token` (both must agree if both are sent) and is verified locally
//! before anything else happens. Without a caller credential a verified user token makes the
//! user the principal (`oidc:<sub>`).

use actix_web::HttpRequest;
use actix_web::http::StatusCode;

use super::AppState;
use crate::error::ApiError;
use crate::inbound::oidc::{MAX_TOKEN_LEN, OidcError, VerifiedUserToken};
use crate::inbound::{BearerHeader, Principal, PrincipalKind, parse_bearer};

/// Who is calling, and the user's verified token if one came with the call.
pub struct Authenticated {
    pub principal: Principal,
    pub user: Option<VerifiedUserToken>,
}

/// Authenticates `req`. `form_token` is the `subject_token` of a token request (already checked
/// against `subject_token_type`; its error is reported after the caller credential's and the
/// header's, as before); `Ok(None)` where there is no form.
pub async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    form_token: Result<Option<&str>, ApiError>,
    subject_fp: &mut String,
) -> Result<Authenticated, ApiError> {
    // The caller credential: a present but unknown one fails closed.
    let static_caller = match parse_bearer(req.headers().get("authorization").map(|v| v.as_bytes()))
    {
        BearerHeader::Token(t) => match state.statics.authenticate(t) {
            Some(c) => Some(c),
            None => {
                crate::metrics::global().auth_failure("static_token", "unknown");
                return Err(ApiError::unauthenticated(
                    "the caller credential is not valid",
                    Some("invalid_token"),
                ));
            }
        },
        BearerHeader::Absent | BearerHeader::NotBearer => None,
    };

    // The user's token: header or RFC 8693 subject_token; both must agree if both are sent.
    let header_token = user_token_header(req, &state.config.user_token.header)?;
    let form_token = form_token?;
    let raw_user = match (header_token, form_token) {
        (Some(h), Some(f)) if h != f => {
            return Err(ApiError::invalid_request(format!(
                "subject_token and the '{}' header carry different tokens",
                state.config.user_token.header
            )));
        }
        (Some(t), _) | (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    if raw_user.is_some_and(|t| t.len() > MAX_TOKEN_LEN) {
        return Err(ApiError::invalid_request(format!(
            "the user's token is larger than {MAX_TOKEN_LEN} bytes"
        )));
    }
    if let Some(t) = raw_user {
        // For the audit line: a fingerprint, never the token.
        *subject_fp = crate::digest::fingerprint(t);
    }
    let user: Option<VerifiedUserToken> = match raw_user {
        None => None,
        Some(t) => match state.verifier.verify(t).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::info!(reason = e.kind(), "user token rejected");
                crate::metrics::global().auth_failure("user_token", e.kind());
                return Err(oidc_error_answer(&e, static_caller.is_none()));
            }
        },
    };

    let principal = match (&static_caller, &user) {
        (Some(c), _) => Principal {
            name: c.subject.clone(),
            kind: PrincipalKind::Service,
            restrictions: c.restrictions.clone(),
        },
        (None, Some(u)) => Principal {
            name: format!("oidc:{}", u.sub),
            kind: PrincipalKind::User,
            restrictions: None,
        },
        (None, None) => {
            crate::metrics::global().auth_failure("none", "missing");
            return Err(ApiError::unauthenticated(
                "no caller credential: send Authorization: Bearer <token> or the user's token",
                None,
            ));
        }
    };
    Ok(Authenticated { principal, user })
}

/// Reads the user-token header: at most one, printable ASCII, bounded.
fn user_token_header<'a>(req: &'a HttpRequest, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = req.headers().get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "header '{name}' is included more than once"
        )));
    }
    let v = first
        .to_str()
        .map_err(|_| ApiError::invalid_request(format!("header '{name}' is not printable ASCII")))?
        .trim();
    // oauth2-proxy sends the bare token; tolerate a "Bearer " prefix some proxies add.
    let v = match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v.get(7..).unwrap_or("").trim(),
        _ => v,
    };
    Ok(if v.is_empty() { None } else { Some(v) })
}

fn oidc_error_answer(e: &OidcError, caller_is_user: bool) -> ApiError {
    if let OidcError::KeysUnavailable(_) = e {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the IdP's signing keys could not be loaded; try again shortly",
        );
    }
    let description = format!("the user's token was rejected: {e}");
    if caller_is_user {
        ApiError::unauthenticated(description, Some("invalid_token"))
    } else {
        ApiError::invalid_request(description)
    }
}
