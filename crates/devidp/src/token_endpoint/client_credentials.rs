//! The client credentials grant (§8, Keycloak's `ClientCredentialsGrantType`): a confidential
//! client with service accounts enabled gets a token of its `service-account-<clientId>` user,
//! with no user session and no refresh token.

use std::net::IpAddr;

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use super::common::{
    Form, Issuer, OAuthError, audiences, requested_scopes, scope_string, token_response,
};
use crate::claims::{TokenKind, TokenSpec};
use crate::realm::{DevClient, Subject};

/// The grant, after the common pipeline of §2. `peer` is the caller's address (the
/// `clientHost`/`clientAddress` claims).
pub(super) fn client_credentials_grant(
    issuer: &Issuer<'_>,
    client: &DevClient,
    form: &Form<'_>,
    peer: Option<IpAddr>,
) -> Result<Value, OAuthError> {
    // Bearer-only clients were already rejected by client authentication (§2 step 5).
    if client.is_public() {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Public client not allowed to retrieve service account",
        ));
    }
    if !client.service_accounts_enabled {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client not enabled to retrieve service account",
        ));
    }
    let scopes = requested_scopes(client, form)?;
    let subject = Subject::ServiceAccount(client.clone());
    let aud = audiences(client, &scopes.optional);
    let scope = scope_string(scopes.openid, &scopes.optional);
    let lifespan = issuer.lifespan_secs(client);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        azp: &client.client_id,
        aud: &aud,
        sid: None,
        auth_time: None,
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: "trrtcc",
        client_address: peer.map(|ip| ip.to_string()),
        service_account_session: true,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    if scopes.openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    Ok(Value::Object(body))
}
