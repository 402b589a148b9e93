//! Legacy token exchange V1 (docs/reference/keycloak-token-exchange.md §5), reached only while the
//! realm's V1
//! switch is on and standard V2 declined the request (§3.3: V1's `supports()` accepts whatever
//! V2 declines). The dev IdP emulates V1's **naked impersonation**: `requested_subject`
//! without `subject_token`, by a confidential client holding the Users → "impersonate"
//! permission, to a target (`audience`) whose "token-exchange" permission includes it.
//! Other V1 paths (subject-token exchange, external↔internal) are not emulated.
//!
//! Texts quoted by §5 (`Client not allowed to exchange`, `Audience not found`, `Client
//! disabled`, `requested_token_type unsupported`) are verbatim; the answer to an unemulated V1
//! path is ours.

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::common::{Form, Issuer, OAuthError, audiences, scope_string, token_response};
use crate::claims::{TokenKind, TokenSpec, now_secs};
use crate::protocol::{ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE, SAML2_TOKEN_TYPE};
use crate::realm::{
    BUILTIN_OPTIONAL_SCOPES, DEFAULT_SCOPES, DevClient, RealmState, SESSION_IDLE_SECS, Subject,
    UserSession,
};

/// §5: every permission failure, and an unknown or disabled requested user (anti-fishing).
fn not_allowed() -> OAuthError {
    OAuthError::new(
        StatusCode::FORBIDDEN,
        "access_denied",
        "Client not allowed to exchange",
    )
}

fn not_emulated(what: &str) -> OAuthError {
    OAuthError::bad_request(
        "invalid_request",
        format!("{what} is not emulated by the dev IdP (token exchange V1)"),
    )
}

/// V1 naked impersonation (§5), in `V1TokenExchangeProvider`'s order: requested user and the
/// client's impersonation right, then `exchangeClientToClient` (token type, target audience,
/// target permission), then a new user session and the token minted for the target.
pub(super) fn v1_exchange(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    requester: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    if form.has("subject_token") {
        return subject_token_exchange(st, requester, form);
    }
    if form.has("requested_issuer") || form.has("subject_issuer") {
        return Err(not_emulated("External token exchange"));
    }
    let Some(requested_subject) = form.first("requested_subject") else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "Parameter 'subject_token' or 'requested_subject' required for token exchange",
        ));
    };
    // §5: `requested_subject` = username or user id; unknown or disabled → the same 403.
    let user = st
        .user_by_name(requested_subject)
        .or_else(|| st.users.iter().find(|u| u.id == requested_subject))
        .filter(|u| u.enabled)
        .cloned()
        .ok_or_else(not_allowed)?;
    // §5: naked impersonation needs a confidential client with the "impersonate" permission.
    if requester.is_public() || !requester.v1_impersonation_allowed {
        return Err(not_allowed());
    }
    // §5: the default requested_token_type is refresh_token; saml2 is not emulated.
    let refresh = match form.first("requested_token_type") {
        None | Some(REFRESH_TOKEN_TYPE) => true,
        Some(ACCESS_TOKEN_TYPE) => false,
        Some(SAML2_TOKEN_TYPE) => return Err(not_emulated("requested_token_type saml2")),
        Some(_) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "requested_token_type unsupported",
            ));
        }
    };
    // §5: only the first `audience` is honoured; none means the requester itself.
    let target = match form.first("audience") {
        Some(a) => st
            .client(a)
            .cloned()
            .ok_or_else(|| OAuthError::bad_request("invalid_client", "Audience not found"))?,
        None => requester.clone(),
    };
    if !target.enabled {
        return Err(OAuthError::bad_request("invalid_client", "Client disabled"));
    }
    let to_other = target.client_id != requester.client_id;
    if to_other
        && !target
            .v1_token_exchange_clients
            .contains(&requester.client_id)
    {
        return Err(not_allowed());
    }

    // §5: the token is minted for the target (its mappers and scopes); `scope` is filtered to
    // the target's client scopes (unknown values dropped, not refused).
    let mut openid = false;
    let mut optional: Vec<String> = Vec::new();
    for s in form
        .first("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if s == "openid" {
            openid = true;
        } else if !DEFAULT_SCOPES.contains(&s)
            && (target.optional_scopes.contains_key(s) || BUILTIN_OPTIONAL_SCOPES.contains(&s))
            && !optional.iter().any(|o| o == s)
        {
            optional.push(s.to_owned());
        }
    }
    let mut aud = audiences(&target, &optional);
    // §5: `aud` += target.
    if to_other && !aud.contains(&target.client_id) {
        aud.push(target.client_id.clone());
    }
    let scope = scope_string(openid, &optional);

    // §5: "A new user session is created".
    let sid = uuid::Uuid::new_v4().to_string();
    let auth_time = now_secs();
    st.sessions.insert(
        sid.clone(),
        UserSession::new(&user.id, auth_time, issuer.issuer, &requester.client_id),
    );
    let subject = Subject::User(user);
    let lifespan = issuer.lifespan_secs(&target);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        // §5: `azp` = requester.
        azp: &requester.client_id,
        aud: &aud,
        sid: Some(&sid),
        auth_time: Some(auth_time),
        scope: &scope,
        lifespan_secs: lifespan,
        // Online session, regular token; Keycloak 26.7.3's V1 impersonation tokens carry `na`
        // (observed by scripts/conformance).
        jti_prefix: "onrtna",
        client_address: None,
        service_account_session: false,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    if refresh {
        body.insert("refresh_expires_in".into(), json!(SESSION_IDLE_SECS));
        body.insert(
            "refresh_token".into(),
            json!(issuer.mint(&spec, TokenKind::Refresh)),
        );
    }
    if openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    body.insert("session_state".into(), json!(sid));
    body.insert(
        "issued_token_type".into(),
        json!(if refresh {
            REFRESH_TOKEN_TYPE
        } else {
            ACCESS_TOKEN_TYPE
        }),
    );
    Ok(Value::Object(body))
}

/// V1 with a `subject_token` (what V2 declined: a client without standard token exchange, a
/// public client, another token type). The dev IdP emulates only V1's permission refusal,
/// checked first: a public requester, or a target (`audience`, else the requester itself)
/// whose "token-exchange" permission does not include the requester, gets 403 `Client not
/// allowed to exchange` (Keycloak 26.7.3, observed by scripts/conformance). A permitted V1
/// subject-token exchange is not emulated.
fn subject_token_exchange(
    st: &RealmState,
    requester: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    if requester.is_public() {
        return Err(not_allowed());
    }
    let target = match form.first("audience") {
        Some(a) => st
            .client(a)
            .ok_or_else(|| OAuthError::bad_request("invalid_client", "Audience not found"))?,
        None => requester,
    };
    if target.client_id != requester.client_id
        && !target
            .v1_token_exchange_clients
            .contains(&requester.client_id)
    {
        return Err(not_allowed());
    }
    Err(not_emulated("Exchanging a subject_token"))
}
