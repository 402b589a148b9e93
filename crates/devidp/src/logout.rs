//! Logout as Keycloak does it: the OIDC logout endpoint's non-browser form
//! (`POST /realms/{realm}/protocol/openid-connect/logout` with the client's credentials and a
//! `refresh_token`, Keycloak's `LogoutEndpoint.logoutToken`) and the admin API's user logout
//! (`POST /admin/realms/{realm}/users/{id}/logout`). Both end user sessions — tokens naming an
//! ended `sid` then fail token exchange with `Invalid token` (§3.4 step 2) — and, before they
//! answer, send an OpenID Connect Back-Channel Logout 1.0 logout token (§2.4) to every client
//! with a client session in the ended session and a "Backchannel logout URL", as Keycloak's
//! `AuthenticationManager.backchannelLogout` does. Each delivery is recorded for
//! `DevIdpHandle::backchannel_deliveries()`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::claims::now_secs;
use crate::discovery::{realm_not_found, request_issuer};
use crate::realm::{RealmState, Subject, UserSession};
use crate::state::Shared;
use crate::token_endpoint::{
    Form, OAuthError, PresentedAuthorization, authenticate_client, error_response, is_local,
    parse_basic,
};

/// The `events` member of a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Keycloak's logout tokens expire two minutes after issue (the spec's recommendation).
const LOGOUT_TOKEN_LIFESPAN_SECS: u64 = 120;

/// One back-channel logout the IdP sent.
#[derive(Clone, Debug)]
pub struct BackchannelDelivery {
    pub client_id: String,
    pub url: String,
    /// The ended session.
    pub sid: String,
    /// The receiver's HTTP status; `None` when the request failed.
    pub status: Option<u16>,
}

/// A logout token to send, built under the realm lock, sent after it is released.
struct Pending {
    client_id: String,
    url: String,
    sid: String,
    logout_token: String,
}

/// Ends the sessions for which `ends` is true and builds their logout tokens.
fn end_sessions(
    idp: &Shared,
    st: &mut RealmState,
    ends: impl Fn(&str, &UserSession) -> bool,
) -> Vec<Pending> {
    let ended: Vec<String> = st
        .sessions
        .iter()
        .filter(|(sid, s)| ends(sid, s))
        .map(|(sid, _)| sid.clone())
        .collect();
    let mut pending = Vec::new();
    for sid in ended {
        let Some(session) = st.sessions.remove(&sid) else {
            continue;
        };
        for client_id in &session.clients {
            let Some(client) = st.client(client_id) else {
                continue;
            };
            let Some(url) = client
                .backchannel_logout_url
                .clone()
                .filter(|_| client.enabled)
            else {
                continue;
            };
            let now = now_secs();
            let mut claims = json!({
                "iat": now,
                "exp": now.saturating_add(LOGOUT_TOKEN_LIFESPAN_SECS),
                "jti": uuid::Uuid::new_v4().to_string(),
                "iss": session.issuer,
                "aud": client.client_id,
                "sub": session.user_id,
                "typ": "Logout",
                "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
            });
            if client.backchannel_logout_session_required
                && let Some(c) = claims.as_object_mut()
            {
                c.insert("sid".into(), json!(sid));
            }
            pending.push(Pending {
                client_id: client.client_id.clone(),
                url,
                sid: sid.clone(),
                logout_token: idp.keys.sign(&claims),
            });
        }
    }
    pending
}

/// POSTs each logout token (form field `logout_token`, §2.5) and records the answer.
/// Keycloak logs a failed delivery and completes the logout anyway; so does this.
async fn deliver(idp: &Shared, pending: Vec<Pending>) {
    for p in pending {
        let status = idp
            .idp_jwks
            .http()
            .post(&p.url)
            .form(&[("logout_token", p.logout_token.as_str())])
            .send()
            .await
            .map(|r| r.status().as_u16());
        let status = match status {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(client = %p.client_id, error = %e, "back-channel logout delivery failed");
                None
            }
        };
        idp.record_delivery(BackchannelDelivery {
            client_id: p.client_id,
            url: p.url,
            sid: p.sid,
            status,
        });
    }
}

/// Ends every session of user `user_id` and notifies the clients; returns the number of
/// sessions ended.
pub async fn logout_user_id(idp: &Shared, user_id: &str) -> usize {
    let (pending, ended) = {
        let mut st = idp.state();
        let before = st.sessions.len();
        let pending = end_sessions(idp, &mut st, |_, s| s.user_id == user_id);
        (pending, before.saturating_sub(st.sessions.len()))
    };
    deliver(idp, pending).await;
    ended
}

/// `POST /realms/{realm}/protocol/openid-connect/logout` without a browser: the client
/// authenticates as at the token endpoint, names the session by its `refresh_token`, and gets
/// 204 (Keycloak's texts: `No refresh token`, `Invalid refresh token`, `Unmatching clients`).
pub async fn logout_endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    idp: web::Data<Shared>,
) -> HttpResponse {
    if path.into_inner() != idp.realm {
        return realm_not_found();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let presented = PresentedAuthorization {
        present: authorization.is_some(),
        basic: authorization.and_then(parse_basic),
    };
    let issuer = request_issuer(&req, &idp.realm);
    let peer = req.peer_addr().map(|a| a.ip());
    let pending = {
        let mut st = idp.state();
        match end_by_refresh_token(&idp, &mut st, &presented, &Form(&form), &issuer, peer) {
            Ok(p) => p,
            Err(e) => return error_response(&e).0,
        }
    };
    deliver(&idp, pending).await;
    HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn end_by_refresh_token(
    idp: &Shared,
    st: &mut RealmState,
    presented: &PresentedAuthorization,
    form: &Form<'_>,
    issuer: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<Vec<Pending>, OAuthError> {
    if let Some(ip) = peer
        && !is_local(ip)
    {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "HTTPS required",
        ));
    }
    let client = authenticate_client(st, presented, form, &idp.realm)?;
    if client.bearer_only {
        return Err(OAuthError::bad_request(
            "invalid_client",
            "Bearer-only not allowed",
        ));
    }
    let Some(refresh_token) = form.first("refresh_token") else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "No refresh token",
        ));
    };
    let invalid = || OAuthError::bad_request("invalid_grant", "Invalid refresh token");
    let claims = idp.keys.verify(refresh_token).map_err(|_| invalid())?;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("typ") != Some("Refresh") || str_claim("iss") != Some(issuer) {
        return Err(invalid());
    }
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_none_or(|exp| exp <= now_secs())
    {
        return Err(invalid());
    }
    if str_claim("azp") != Some(client.client_id.as_str()) {
        return Err(OAuthError::bad_request(
            "invalid_grant",
            "Unmatching clients",
        ));
    }
    // An already ended session is not an error: Keycloak answers 204 then too.
    let sid = str_claim("sid").map(str::to_owned);
    Ok(match sid {
        Some(sid) => end_sessions(idp, st, |s, _| s == sid),
        None => Vec::new(),
    })
}

/// `POST /admin/realms/{realm}/users/{id}/logout`: ends every session of the user. The bearer
/// must be an access token of this realm whose subject is the service account of a client
/// with `manage-users` (Keycloak: `realm-management` role). Keycloak's answers: 401
/// `HTTP 401 Unauthorized` without a valid token, 403 `HTTP 403 Forbidden` without the role,
/// 404 `User not found`, else 204.
pub async fn admin_user_logout(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    idp: web::Data<Shared>,
) -> HttpResponse {
    let (realm, user_id) = path.into_inner();
    if realm != idp.realm {
        return realm_not_found();
    }
    let issuer = request_issuer(&req, &idp.realm);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match admin_allowed(&idp, bearer, &issuer) {
        AdminAuth::Allowed => {}
        AdminAuth::Unauthorized => {
            return HttpResponse::Unauthorized().json(json!({ "error": "HTTP 401 Unauthorized" }));
        }
        AdminAuth::Forbidden => {
            return HttpResponse::Forbidden().json(json!({ "error": "HTTP 403 Forbidden" }));
        }
    }
    if !idp.state().users.iter().any(|u| u.id == user_id) {
        return HttpResponse::NotFound().json(json!({ "error": "User not found" }));
    }
    logout_user_id(&idp, &user_id).await;
    HttpResponse::NoContent().finish()
}

enum AdminAuth {
    Allowed,
    Unauthorized,
    Forbidden,
}

fn admin_allowed(idp: &Shared, bearer: Option<&str>, issuer: &str) -> AdminAuth {
    let Some(claims) = bearer.and_then(|t| idp.keys.verify(t).ok()) else {
        return AdminAuth::Unauthorized;
    };
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let active = claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp > now_secs());
    if !active || str_claim("typ") != Some("Bearer") || str_claim("iss") != Some(issuer) {
        return AdminAuth::Unauthorized;
    }
    let st = idp.state();
    match str_claim("sub").and_then(|s| st.subject_by_id(s)) {
        Some(Subject::ServiceAccount(c)) if c.manage_users => AdminAuth::Allowed,
        Some(_) => AdminAuth::Forbidden,
        None => AdminAuth::Unauthorized,
    }
}
