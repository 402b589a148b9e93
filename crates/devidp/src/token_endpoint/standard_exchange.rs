//! Standard token exchange V2 (RFC 8693; docs/reference/keycloak-token-exchange.md §3.3–§3.6): the
//! reasons
//! V2's `supports()` declines a request (§3.3; the endpoint then hands it to V1 when V1 is on,
//! `v1_exchange.rs`), and the exchange itself — subject token validation, requested token type,
//! audiences, scopes and the minted answer, with the statuses and texts of §3.8 verbatim — plus
//! the [`ExchangeFault`] test hook that corrupts a successful answer.

use actix_web::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::common::{
    Form, Issuer, OAuthError, audiences, requested_scopes, scope_string, token_response,
};
use crate::claims::{TokenKind, TokenSpec, now_secs};
use crate::keys::RealmKeys;
use crate::protocol::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, REFRESH_TOKEN_TYPE};
use crate::realm::{DEFAULT_ROLES_CLIENT, DevClient, ExchangeFault, RealmState, Subject};

/// §3.3: the reason `StandardTokenExchangeProvider.supports()` declines a request, in check
/// order; `None` when V2 accepts it.
pub(super) fn unsupported_reason(requester: &DevClient, form: &Form<'_>) -> Option<OAuthError> {
    let reason = |text: String| Some(OAuthError::bad_request("invalid_request", text));
    for p in ["requested_subject", "requested_issuer", "subject_issuer"] {
        if form.has(p) {
            return reason(format!(
                "Parameter '{p}' is not supported for standard token exchange"
            ));
        }
    }
    if !requester.standard_token_exchange_enabled {
        return reason("Standard token exchange is not enabled for the requested client".into());
    }
    if !form.has("subject_token") {
        return reason("Parameter 'subject_token' required for standard token exchange".into());
    }
    match form.first("subject_token_type") {
        None => {
            reason("Parameter 'subject_token_type' required for standard token exchange".into())
        }
        Some(ACCESS_TOKEN_TYPE) => None,
        Some(_) => reason("Parameter 'subject_token' supports access tokens only".into()),
    }
}

/// The exchange (§3.4 steps 2–9, §3.5, §3.6) of a request [`unsupported_reason`] accepted.
pub(super) fn standard_exchange_grant(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    requester: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    let Some(subject_token) = form.first("subject_token") else {
        return Err(OAuthError::invalid_token());
    };

    // §3.4 step 2: subject token validation; any failure is `Invalid token`.
    let subject_claims = issuer
        .idp
        .keys
        .verify(subject_token)
        .map_err(|_| OAuthError::invalid_token())?;
    let validated = validate_subject(st, &subject_claims, issuer.issuer)?;
    if subject_claims.get("cnf").is_some()
        && subject_claims.get("azp").and_then(Value::as_str) != Some(requester.client_id.as_str())
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "Sender-constrained token exchange rejected as the token was not issued for the requesting client",
        ));
    }

    // §3.4 step 3: requested_token_type (refresh tokens from exchange are not enabled:
    // `standard.token.exchange.enableRefreshRequestedTokenType` = NO).
    let id_token_requested = match form.first("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => false,
        Some(ID_TOKEN_TYPE) => true,
        Some(_) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "requested_token_type unsupported",
            ));
        }
    };

    // §3.4 step 4: every `audience` must be a client of the realm.
    let mut requested_audience: Vec<&str> = Vec::new();
    for a in form.all("audience") {
        if !requested_audience.contains(&a) {
            requested_audience.push(a);
        }
    }
    let mut targets: Vec<&DevClient> = Vec::new();
    for a in &requested_audience {
        let target = st
            .client(a)
            .ok_or_else(|| OAuthError::bad_request("invalid_client", "Audience not found"))?;
        targets.push(target);
    }

    // §3.4 step 5: validateAudience.
    if requester.is_public() {
        return Err(OAuthError::bad_request(
            "invalid_client",
            "Public client is not allowed to exchange token",
        ));
    }
    if targets.iter().any(|t| !t.enabled) {
        return Err(OAuthError::bad_request("invalid_client", "Client disabled"));
    }
    let azp_is_requester =
        subject_claims.get("azp").and_then(Value::as_str) == Some(requester.client_id.as_str());
    let requester_in_aud = match subject_claims.get("aud") {
        Some(Value::String(a)) => *a == requester.client_id,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(requester.client_id.as_str())),
        _ => false,
    };
    if !azp_is_requester && !requester_in_aud {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "Client is not within the token audience",
        ));
    }

    // §3.4 step 6: scopes of the requester (default + requested optional ones).
    let scopes = requested_scopes(requester, form)?;

    // §3.5: aud as for any grant, then filtered to the requested audiences; optional scopes
    // whose audiences were all filtered out are dropped from `scope`.
    let mut aud = audiences(requester, &scopes.optional);
    let mut optional = scopes.optional.clone();
    if !requested_audience.is_empty() {
        // Observed on Keycloak 26.7.3: one `audience` leaves only that audience (the default
        // roles' `account` goes too); with several, `account` stays.
        let several = requested_audience.len() > 1;
        aud.retain(|a| {
            requested_audience.contains(&a.as_str()) || (several && a == DEFAULT_ROLES_CLIENT)
        });
        optional.retain(|s| {
            requester.optional_scopes.get(s).is_none_or(|auds| {
                auds.is_empty()
                    || auds
                        .iter()
                        .any(|a| requested_audience.contains(&a.as_str()))
            })
        });
    }
    // §3.4 step 9: checkRequestedAudiences.
    let missing: Vec<&str> = requested_audience
        .iter()
        .copied()
        .filter(|a| !aud.iter().any(|x| x == a))
        .collect();
    if !missing.is_empty() {
        return Err(OAuthError::bad_request(
            "invalid_request",
            format!("Requested audience not available: {}", missing.join(", ")),
        ));
    }

    // Mint: the subject's user and sid, `azp` = requester, the requester's lifespan (§3.5,
    // §3.6). V2 uses an online+transient client session: jti prefix `nt` when there is a user
    // session, `tr` otherwise.
    let scope = scope_string(scopes.openid, &optional);
    let lifespan = issuer.lifespan_secs(requester);
    let sid = validated.sid.as_deref();
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &validated.subject,
        azp: &requester.client_id,
        aud: &aud,
        sid,
        auth_time: validated.auth_time,
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: if sid.is_some() { "ntrtte" } else { "trrtte" },
        client_address: None,
        service_account_session: false,
    };
    let mut body = if id_token_requested {
        // §3.6: the ID token goes in `access_token`, `token_type` is `N_A`, no `id_token`.
        let mut b = token_response(issuer.mint(&spec, TokenKind::Id), lifespan, &scope);
        b.insert("token_type".into(), json!("N_A"));
        b.insert("issued_token_type".into(), json!(ID_TOKEN_TYPE));
        b
    } else {
        let mut b = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
        if scopes.openid {
            b.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
        }
        b.insert("issued_token_type".into(), json!(ACCESS_TOKEN_TYPE));
        b
    };
    if let Some(sid) = sid {
        body.insert("session_state".into(), json!(sid));
    }
    // The requester gets a transient client session only: it does not join the user session,
    // so a logout of that session is not sent to it (observed on Keycloak 26.7.3: after an
    // exchange the admin API lists only the login client in the session).
    if let Some(fault) = st.exchange_fault {
        apply_fault(issuer, &mut body, fault);
    }
    Ok(Value::Object(body))
}

/// The test hook of [`ExchangeFault`]: rewrites a successful answer.
fn apply_fault(issuer: &Issuer<'_>, body: &mut Map<String, Value>, fault: ExchangeFault) {
    let mut claims = body
        .get("access_token")
        .and_then(Value::as_str)
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    match fault {
        ExchangeFault::WrongAudience => {
            if let Some(c) = claims.as_object_mut() {
                c.insert("aud".into(), json!("someone-else"));
            }
            body.insert("access_token".into(), json!(issuer.idp.keys.sign(&claims)));
        }
        ExchangeFault::WrongSubject => {
            if let Some(c) = claims.as_object_mut() {
                c.insert("sub".into(), json!("00000000-0000-0000-0000-000000000000"));
            }
            body.insert("access_token".into(), json!(issuer.idp.keys.sign(&claims)));
        }
        ExchangeFault::WrongIssuedTokenType => {
            body.insert("issued_token_type".into(), json!(REFRESH_TOKEN_TYPE));
        }
        ExchangeFault::WrongTokenType => {
            body.insert("token_type".into(), json!("mac"));
        }
        ExchangeFault::OmitAudience => {
            if let Some(c) = claims.as_object_mut() {
                c.remove("aud");
            }
            body.insert("access_token".into(), json!(issuer.sign_access(&claims)));
        }
        ExchangeFault::Opaque => {
            let opaque = format!("opaque-{}", uuid::Uuid::new_v4().simple());
            body.insert("access_token".into(), json!(opaque));
        }
        ExchangeFault::ForeignSignature => {
            if let Ok(other) = RealmKeys::generate() {
                body.insert("access_token".into(), json!(other.sign(&claims)));
            }
        }
    }
}

/// Whether a token's claims pass §3.4 step 2 (the generic test mode's introspection).
pub(super) fn subject_is_valid(st: &RealmState, claims: &Value, issuer: &str) -> bool {
    validate_subject(st, claims, issuer).is_ok()
}

/// A subject token that passed §3.4 step 2.
struct ValidatedSubject {
    subject: Subject,
    sid: Option<String>,
    auth_time: Option<u64>,
}

/// §3.4 step 2 after the signature: `iss` equals the request-derived issuer, `typ` is
/// `Bearer`, the token is active (exp/nbf, no clock skew as in Keycloak's default), the user
/// exists and is enabled, and its session (if the token names one) is still alive.
fn validate_subject(
    st: &RealmState,
    claims: &Value,
    issuer: &str,
) -> Result<ValidatedSubject, OAuthError> {
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("iss") != Some(issuer) {
        return Err(OAuthError::invalid_token());
    }
    // The generic test mode's tokens carry no Keycloak `typ` claim (RFC 9068 types the header).
    let typ_ok = match str_claim("typ") {
        None => st.generic.is_some(),
        t => t == Some("Bearer"),
    };
    if !typ_ok {
        return Err(OAuthError::invalid_token());
    }
    let now = now_secs();
    // Keycloak: expired when `exp` is set and now > exp; not yet valid when now < nbf.
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or_else(OAuthError::invalid_token)?;
        if exp != 0 && now > exp {
            return Err(OAuthError::invalid_token());
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or_else(OAuthError::invalid_token)?;
        if now < nbf {
            return Err(OAuthError::invalid_token());
        }
    }
    let sub = str_claim("sub").ok_or_else(OAuthError::invalid_token)?;
    let subject = st
        .subject_by_id(sub)
        .ok_or_else(OAuthError::invalid_token)?;
    if let Subject::User(u) = &subject
        && !u.enabled
    {
        return Err(OAuthError::invalid_token());
    }
    let sid = str_claim("sid").map(str::to_owned);
    let mut auth_time = claims.get("auth_time").and_then(Value::as_u64);
    if let Some(sid) = &sid {
        let session = st
            .sessions
            .get(sid)
            .filter(|s| s.user_id == sub)
            .ok_or_else(OAuthError::invalid_token)?;
        auth_time = Some(session.auth_time);
    }
    Ok(ValidatedSubject {
        subject,
        sid,
        auth_time,
    })
}
