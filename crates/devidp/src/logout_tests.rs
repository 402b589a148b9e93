//! Logout over real HTTP: the logout endpoint's non-browser form, the admin API's user logout,
//! and the back-channel logout tokens they send (OIDC Back-Channel Logout 1.0 §2.4, §2.5).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::*;
use crate::tests_support::*;

/// A back-channel logout receiver on 127.0.0.1:0 that keeps every `logout_token` it gets.
struct Receiver {
    url: String,
    tokens: Arc<Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

async fn receiver() -> Receiver {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let t = tokens.clone();
    let server = actix_web::HttpServer::new(move || {
        let t = t.clone();
        actix_web::App::new().route(
            "/logout",
            actix_web::web::post().to(move |form: actix_web::web::Form<Vec<(String, String)>>| {
                let t = t.clone();
                async move {
                    for (k, v) in form.into_inner() {
                        if k == "logout_token" {
                            t.lock().push(v);
                        }
                    }
                    actix_web::HttpResponse::Ok().finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://{addr}/logout"),
        tokens,
        server: handle,
    }
}

fn logout_url(idp: &DevIdpHandle) -> String {
    format!("{}/protocol/openid-connect/logout", idp.issuer())
}

async fn logout(idp: &DevIdpHandle, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(logout_url(idp))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

#[actix_web::test]
async fn logout_endpoint_ends_the_session_and_notifies_back_channel_clients() {
    let idp = start_contract().await;
    let rx = receiver().await;
    // Both clients have a URL; only the login client took part in the session.
    for client in ["dev-frontend", "token-broker"] {
        assert!(idp.update_client(client, |c| {
            c.backchannel_logout_url = Some(rx.url.clone());
        }));
    }
    let alice = password_token_at(&idp.token_endpoint(), "dev-frontend", "alice", "alice").await;
    let bob = password_token_at(&idp.token_endpoint(), "dev-frontend", "bob", "bob").await;
    let access = alice["access_token"].as_str().unwrap();
    let refresh = alice["refresh_token"].as_str().unwrap();
    let sid = alice["session_state"].as_str().unwrap();
    // The broker exchanges in both sessions: as in Keycloak, it does not join them.
    assert_eq!(exchange(&idp, access, &[]).await.0, 200);
    assert_eq!(
        exchange(&idp, bob["access_token"].as_str().unwrap(), &[])
            .await
            .0,
        200
    );

    // Keycloak's error rows.
    assert_error(
        &logout(&idp, &[("client_id", "dev-frontend")]).await,
        400,
        "invalid_request",
        "No refresh token",
    );
    assert_error(
        &logout(
            &idp,
            &[("client_id", "dev-frontend"), ("refresh_token", "x.y.z")],
        )
        .await,
        400,
        "invalid_grant",
        "Invalid refresh token",
    );
    // An access token is not a refresh token.
    assert_error(
        &logout(
            &idp,
            &[("client_id", "dev-frontend"), ("refresh_token", access)],
        )
        .await,
        400,
        "invalid_grant",
        "Invalid refresh token",
    );
    // Another client's refresh token.
    assert_error(
        &logout(
            &idp,
            &[
                ("client_id", "token-broker"),
                ("client_secret", BROKER_SECRET),
                ("refresh_token", refresh),
            ],
        )
        .await,
        400,
        "invalid_grant",
        "Unmatching clients",
    );
    // A confidential client must authenticate.
    assert_eq!(
        logout(
            &idp,
            &[("client_id", "token-broker"), ("refresh_token", refresh)]
        )
        .await
        .0,
        401
    );
    assert!(rx.tokens.lock().is_empty(), "no logout yet");

    let (status, body) = logout(
        &idp,
        &[("client_id", "dev-frontend"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 204, "{body}");

    // One logout token, to the login client (the exchanging broker has no client session in the
    // user session), for alice's session.
    let tokens = rx.tokens.lock().clone();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let lt = payload(&tokens[0]);
    assert_eq!(lt["aud"], "dev-frontend");
    assert_eq!(lt["sid"], sid);
    assert_eq!(lt["sub"], idp.user_id("alice").unwrap());
    assert_eq!(lt["iss"], idp.issuer());
    assert_eq!(lt["events"], json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
    assert!(lt.get("nonce").is_none());
    assert!(lt["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let iat = lt["iat"].as_u64().unwrap();
    assert_eq!(lt["exp"].as_u64().unwrap(), iat + 120);
    assert_eq!(header(&tokens[0])["kid"], idp.signing_kid());
    let deliveries = idp.backchannel_deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].client_id, "dev-frontend");
    assert_eq!(deliveries[0].status, Some(200));

    // The ended session's tokens are refused in exchange; bob's still work.
    assert_error(
        &exchange(&idp, access, &[]).await,
        400,
        "invalid_request",
        "Invalid token",
    );
    assert_eq!(
        exchange(&idp, bob["access_token"].as_str().unwrap(), &[])
            .await
            .0,
        200
    );
    // Logging out an ended session again is not an error (and sends nothing).
    assert_eq!(
        logout(
            &idp,
            &[("client_id", "dev-frontend"), ("refresh_token", refresh)]
        )
        .await
        .0,
        204
    );
    assert_eq!(rx.tokens.lock().len(), 1);
    rx.server.stop(true).await;
    idp.stop().await;
}

#[actix_web::test]
async fn admin_user_logout_needs_manage_users_and_notifies() {
    let idp = start_contract().await;
    let rx = receiver().await;
    let mut admin = DevClient::confidential("admin-bot", "admin-bot-secret");
    admin.service_accounts_enabled = true;
    admin.manage_users = true;
    idp.add_client(admin);
    assert!(idp.update_client("dev-frontend", |c| {
        c.backchannel_logout_url = Some(rx.url.clone());
        c.backchannel_logout_session_required = false;
    }));
    let alice = password_token_at(&idp.token_endpoint(), "dev-frontend", "alice", "alice").await;
    let bob = password_token_at(&idp.token_endpoint(), "dev-frontend", "bob", "bob").await;
    let alice_at = alice["access_token"].as_str().unwrap();
    assert_eq!(exchange(&idp, alice_at, &[]).await.0, 200);
    let (status, cc) = post(
        &idp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "admin-bot"),
            ("client_secret", "admin-bot-secret"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{cc}");
    let admin_token = cc["access_token"].as_str().unwrap();
    let alice_id = idp.user_id("alice").unwrap();
    let url = |id: &str| format!("http://{}/admin/realms/dev/users/{id}/logout", idp.addr());
    let call = |id: String, bearer: Option<String>| async move {
        let mut req = http().post(url(&id));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    };
    assert_eq!(call(alice_id.clone(), None).await.0, 401);
    assert_eq!(call(alice_id.clone(), Some("nope".into())).await.0, 401);
    // A user's token has no manage-users.
    let (status, body) = call(alice_id.clone(), Some(alice_at.into())).await;
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"error":"HTTP 403 Forbidden"}"#)
    );
    let (status, body) = call("no-such-user".into(), Some(admin_token.into())).await;
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"error":"User not found"}"#)
    );
    let (status, _) = call(alice_id.clone(), Some(admin_token.into())).await;
    assert_eq!(status, 204);

    let tokens = rx.tokens.lock().clone();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let lt = payload(&tokens[0]);
    assert_eq!(lt["sub"], alice_id);
    assert!(
        lt.get("sid").is_none(),
        "session not required: no sid: {lt}"
    );
    assert_error(
        &exchange(&idp, alice_at, &[]).await,
        400,
        "invalid_request",
        "Invalid token",
    );
    assert_eq!(
        exchange(&idp, bob["access_token"].as_str().unwrap(), &[])
            .await
            .0,
        200,
        "bob's session survives"
    );
    // The handle's variant does the same.
    let ended = idp.logout_user_notify("bob").await;
    assert_eq!(ended, 1);
    assert_eq!(rx.tokens.lock().len(), 2);
    rx.server.stop(true).await;
    idp.stop().await;
}
