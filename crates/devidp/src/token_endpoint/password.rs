//! The resource owner password credentials grant (`password`, Keycloak's
//! `ResourceOwnerPasswordCredentialsGrantType` with the direct-grant flow): how dev users log
//! in. Creates a user session and answers with access, refresh and (for `openid`) ID tokens.

use serde_json::{Value, json};

use super::common::{
    Form, Issuer, OAuthError, audiences, constant_time_eq, requested_scopes, scope_string,
    token_response,
};
use crate::claims::{TokenKind, TokenSpec, now_secs};
use crate::realm::{DevClient, RealmState, SESSION_IDLE_SECS, Subject, UserSession};

/// The grant, after the common pipeline of §2.
pub(super) fn password_grant(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    client: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    if !client.direct_access_grants {
        return Err(OAuthError::bad_request(
            "unauthorized_client",
            "Client not allowed for direct access grants",
        ));
    }
    let scopes = requested_scopes(client, form)?;
    // Keycloak 26.7.3 answers an unknown user and a wrong password with 400 (observed by
    // scripts/conformance).
    let bad_credentials = || OAuthError::bad_request("invalid_grant", "Invalid user credentials");
    // The direct-grant flow checks the user (exists, enabled) before the password.
    let user = form
        .first("username")
        .and_then(|name| st.user_by_name(name))
        .cloned()
        .ok_or_else(bad_credentials)?;
    if !user.enabled {
        return Err(OAuthError::bad_request("invalid_grant", "Account disabled"));
    }
    let password_ok = form
        .first("password")
        .is_some_and(|p| constant_time_eq(p.as_bytes(), user.password.as_bytes()));
    if !password_ok {
        return Err(bad_credentials());
    }

    let sid = uuid::Uuid::new_v4().to_string();
    let auth_time = now_secs();
    st.sessions.insert(
        sid.clone(),
        UserSession::new(&user.id, auth_time, issuer.issuer, &client.client_id),
    );
    let subject = Subject::User(user);
    let aud = audiences(client, &scopes.optional);
    let scope = scope_string(scopes.openid, &scopes.optional);
    let lifespan = issuer.lifespan_secs(client);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        azp: &client.client_id,
        aud: &aud,
        sid: Some(&sid),
        auth_time: Some(auth_time),
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: "onrtro",
        client_address: None,
        service_account_session: false,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    body.insert("refresh_expires_in".into(), json!(SESSION_IDLE_SECS));
    body.insert(
        "refresh_token".into(),
        json!(issuer.mint(&spec, TokenKind::Refresh)),
    );
    if scopes.openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    body.insert("session_state".into(), json!(sid));
    Ok(Value::Object(body))
}
