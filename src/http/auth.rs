//! Authentication of a request to the public listener, shared by `/v1/token` and `/v1/proxy`
//! so both accept exactly the same credentials in exactly the same way.
//!
//! This module only reads the request: the caller credential (`Authorization`) and the user's
//! token — the configured header or, on `/v1/token` only, the RFC 8693 §2.1 `subject_token`
//! (both must agree if both are sent). Headers are authenticated before any body is read
//! ([`authenticate`]); the form's token, if any, afterwards ([`with_form_token`]). Who the
//! caller is, and whether the user token is valid, is decided by
//! [`crate::inbound::Authenticator`]; this module maps its verdict onto HTTP answers and counts
//! failures.

use actix_web::HttpRequest;
use tracing::Instrument;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::config::IdpProfile;
pub use crate::inbound::Authenticated;
use crate::inbound::oidc::{MAX_TOKEN_LEN, OidcError};
use crate::inbound::{AuthError, Refusal};
use crate::metrics::AuthKind;

/// Authenticates `req` from its headers alone: the caller credential and the user-token
/// header. `subject_fp` receives the user token's fingerprint for the audit line. Runs before
/// any body is read, so a request without a valid credential is answered (401) without
/// waiting for its body (docs/security.md, "Slow bodies").
pub async fn authenticate<'r>(
    req: &'r HttpRequest,
    state: &AppState,
    subject_fp: &mut String,
) -> Result<Authenticated<'r>, ApiError> {
    let header_token = user_token_header(req, &state.config.user_token.header)?;
    run(req, state, header_token, subject_fp).await
}

/// After the body of a token request: takes the RFC 8693 §2.1 `subject_token` into account.
/// `form_token` is the form's `subject_token`, already checked against `subject_token_type`
/// (its error is reported here, after the header's). `headers` is what [`authenticate`] made
/// of the headers: it stands when the form brings no token or the same token as the header;
/// a form token without a header token is authenticated together with the caller credential
/// (which is verified a second time: the caller's own verification caches keep that cheap).
pub async fn with_form_token<'f>(
    req: &HttpRequest,
    state: &AppState,
    headers: Authenticated<'f>,
    form_token: Result<Option<&'f str>, ApiError>,
    subject_fp: &mut String,
) -> Result<Authenticated<'f>, ApiError> {
    // No token in the form: what the headers gave stands. The header was read, and any error
    // of it reported, by `authenticate`; reading the 1-2 KB token again is not needed (issue 16).
    let Some(f) = form_token? else {
        return Ok(headers);
    };
    match user_token_header(req, &state.config.user_token.header)? {
        Some(h) if h != f => Err(ApiError::invalid_request(format!(
            "subject_token and the '{}' header carry different tokens",
            state.config.user_token.header
        ))),
        Some(_) => Ok(headers),
        None => run(req, state, Some(f), subject_fp).await,
    }
}

async fn run<'t>(
    req: &HttpRequest,
    state: &AppState,
    raw_user: Option<&'t str>,
    subject_fp: &mut String,
) -> Result<Authenticated<'t>, ApiError> {
    if raw_user.is_some_and(|t| t.len() > MAX_TOKEN_LEN) {
        return Err(ApiError::invalid_request(format!(
            "the user's token is larger than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let metrics = &state.metrics;
    // The `verify caller` span (traces.rs): the caller's kind and the user's fingerprint, never
    // a credential or the subject itself.
    let span = tracing::info_span!(
        target: crate::traces::SPAN_TARGET,
        "verify caller",
        caller.kind = tracing::field::Empty,
        subject.fp = tracing::field::Empty,
        auth.result = tracing::field::Empty,
    );
    let result = state
        .auth
        .authenticate(
            req.headers().get("authorization").map(|v| v.as_bytes()),
            raw_user,
        )
        .instrument(span.clone())
        .await;
    if let Some(t) = raw_user {
        // For the audit line: a fingerprint, never the token. A verified token brings it (its
        // digest is computed once per request); a refused one is hashed here.
        *subject_fp = match &result {
            Ok(Authenticated { user: Some(u), .. }) => u.fingerprint().as_str().to_owned(),
            _ => crate::digest::fingerprint(t),
        };
        span.record("subject.fp", subject_fp.as_str());
    }
    match &result {
        Ok(a) => span.record("caller.kind", a.principal.kind.as_str()),
        Err(_) => span.record("auth.result", "refused"),
    };
    result.map_err(|e| match e {
        AuthError::Unauthenticated {
            description,
            token_error,
        } => {
            match token_error {
                Some(_) => metrics.auth_failure(AuthKind::Caller, "invalid"),
                None => metrics.auth_failure(AuthKind::None, "missing"),
            }
            ApiError::unauthenticated(description, token_error)
        }
        AuthError::Forbidden(m) => {
            metrics.auth_failure(AuthKind::Caller, "forbidden");
            ApiError::request(ErrorCode::AccessDenied, m)
        }
        AuthError::UserToken {
            error,
            caller_is_user,
        } => {
            tracing::info!(reason = error.kind(), "user token rejected");
            metrics.auth_failure(AuthKind::UserToken, error.kind());
            oidc_error_answer(&error, caller_is_user)
        }
        AuthError::NotAUserToken(r) => {
            metrics.auth_failure(AuthKind::UserToken, r.kind());
            // Keycloak's console steps only under its profile (issue 12).
            let hint = match (&r, state.config.keycloak.profile) {
                (Refusal::NotInAudience(c), IdpProfile::Generic) => format!(
                    "the user's token must carry the broker's client '{c}' in aud: configure the IdP to add it to the tokens of the client the user logs in with"
                ),
                _ => r.hint(),
            };
            ApiError::invalid_request(r.to_string()).with_hint(hint)
        }
    })
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
    let v = visible_ascii(first.as_bytes())
        .ok_or_else(|| {
            ApiError::invalid_request(format!("header '{name}' is not printable ASCII"))
        })?
        .trim();
    // oauth2-proxy sends the bare token; tolerate a "Bearer " prefix some proxies add.
    let v = match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => v.get(7..).unwrap_or("").trim(),
        _ => v,
    };
    Ok(if v.is_empty() { None } else { Some(v) })
}

/// The header value as text when every byte is visible ASCII, a space or a tab (what
/// `HeaderValue::to_str` accepts). Written as a branch-free fold over the bytes so the
/// compiler vectorises it: the 1-2 KB user token is checked on every request, and the
/// byte-at-a-time `to_str` was a tenth of a cache hit's instructions (issue 16).
fn visible_ascii(b: &[u8]) -> Option<&str> {
    let ok = b.iter().fold(true, |ok, &c| {
        ok & ((0x20..0x7f).contains(&c) | (c == b'\t'))
    });
    if ok {
        // All ASCII: valid UTF-8 (the check is std's fast ASCII path).
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

fn oidc_error_answer(e: &OidcError, caller_is_user: bool) -> ApiError {
    if let OidcError::KeysUnavailable(_) = e {
        return ApiError::request(
            ErrorCode::TemporarilyUnavailable,
            "the IdP's signing keys could not be loaded; try again shortly",
        );
    }
    if let OidcError::IntrospectionUnavailable(_) = e {
        return ApiError::request(
            ErrorCode::TemporarilyUnavailable,
            "the IdP's token introspection could not be reached; try again shortly",
        );
    }
    let description = format!("the user's token was rejected: {e}");
    if caller_is_user {
        ApiError::unauthenticated(description, Some(ErrorCode::InvalidToken))
    } else {
        ApiError::invalid_request(description)
    }
}

#[cfg(test)]
mod tests {
    use super::visible_ascii;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn visible_ascii_accepts_exactly_what_to_str_accepts() {
        for c in 0u8..=255 {
            for v in [
                vec![c],
                vec![b'a', c, b'b'],
                [b'x'; 40].iter().chain([c].iter()).copied().collect(),
            ] {
                let Ok(h) = HeaderValue::from_bytes(&v) else {
                    continue;
                };
                assert_eq!(visible_ascii(&v), h.to_str().ok(), "byte {c:#x}");
            }
        }
    }
}
