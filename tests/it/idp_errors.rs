//! Keycloak's errors passed through with Keycloak's `error`/`error_description`, its status in
//! `idp_status`, and a hint.

use crate::support::*;

#[actix_web::test]
async fn requested_audience_not_available() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "unmapped").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "Requested audience not available: unmapped-api"
    );
    assert_eq!(body["idp_status"], 400);
    assert!(body["hint"].as_str().unwrap().contains("Audience mapper"));
    env.stop().await;
}

#[actix_web::test]
async fn audience_not_found() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "ghost").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_description"], "Audience not found");
    assert!(body["hint"].as_str().unwrap().contains("audience"));
    env.stop().await;
}

#[actix_web::test]
async fn client_not_within_the_token_audience() {
    // Keycloak's V2 rule (403 "Client is not within the token audience") is checked by the
    // broker itself since issue 9, before any call: the same hint, no IdP round trip.
    let env = start_default().await;
    let other = env.login_at("other-frontend", "bob", "bob").await;
    let (status, _, _, body) = parts(env.exchange(Some(&other), "sonataflow").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    let d = body["error_description"].as_str().unwrap();
    assert!(
        d.contains("aud does not contain the broker's client 'token-broker'")
            && d.contains("Client is not within the token audience"),
        "{d}"
    );
    assert!(body.get("idp_status").is_none(), "{body}");
    let hint = body["hint"].as_str().unwrap();
    assert!(
        hint.contains("token-broker") && hint.contains("Audience mapper"),
        "{hint}"
    );
    assert_eq!(env.exchanges(), 0, "nothing reached Keycloak");
    env.stop().await;
}

#[actix_web::test]
async fn invalid_token_after_logout_and_for_disabled_user() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    env.idp.logout_user("alice");
    env.idp.set_user_enabled("bob", false);
    for t in [&alice, &bob] {
        let (status, _, _, body) = parts(env.exchange(Some(t), "sonataflow").await).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_description"], "Invalid token");
        assert!(body["hint"].as_str().unwrap().contains("session"));
    }
    env.stop().await;
}

#[actix_web::test]
async fn bad_client_secret_is_a_gateway_error_with_keycloaks_answer() {
    let env = start(Opts {
        client_secret: "wrong-secret".into(),
        ..Opts::default()
    })
    .await;
    let alice = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    // Keycloak's 401 is about the broker's own credentials, which the caller cannot fix.
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(
        body["error_description"],
        "Invalid client or Invalid client credentials"
    );
    assert_eq!(body["idp_status"], 401);
    assert!(body["hint"].as_str().unwrap().contains("clientSecret"));
    let text = body.to_string();
    assert!(!text.contains("wrong-secret"));
    // The service-account path reports it too, and is not a fallback-hidden success.
    let (status, _, _, body) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    env.stop().await;
}
