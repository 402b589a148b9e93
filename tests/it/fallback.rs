//! Every branch of both fallback policies, with the identity header checked.

use std::time::Duration;

use crate::support::*;

#[actix_web::test]
async fn service_account_target_without_user_token_serves_the_service_token() {
    let env = start_default().await;
    let (status, id, cache, body) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!(
        (status, id.as_str(), cache.as_str()),
        (200, "service", "miss"),
        "{body}"
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["preferred_username"], "service-account-token-broker");
    assert_eq!(c["azp"], "token-broker");
    // Cached and shared in flight like user tokens.
    let (_, id2, cache2, body2) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!((id2.as_str(), cache2.as_str()), ("service", "hit"));
    assert_eq!(body2["access_token"], body["access_token"]);
    assert_eq!(env.client_credentials(), 1);
    assert_eq!(env.exchanges(), 0);
    env.stop().await;
}

/// A service principal acting as itself gets the broker's service token even for a `deny`
/// target (issue 3 §3): `deny` governs users whose token cannot be exchanged. The 401 of a
/// Backstage user without a token or mapping is tested in `backstage.rs`.
#[actix_web::test]
async fn deny_target_without_user_token_is_401() {
    let env = start_default().await;
    let r = env.exchange(None, "sonataflow").await;
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    let (status, id, _, body) = parts(r).await;
    assert_eq!(status, 401);
    assert_eq!(id, "");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("sonataflow")
    );
    assert_eq!(env.client_credentials() + env.exchanges(), 0);
    env.stop().await;
}

#[actix_web::test]
async fn service_caller_on_a_strict_target_allowing_services_gets_the_service_token() {
    let env = start_default().await;
    // `jobs`: fallback deny, servicePrincipals service_account.
    let (status, id, _, body) = parts(env.exchange(None, "jobs").await).await;
    assert_eq!((status, id.as_str()), (200, "service"), "{body}");
    assert_eq!(env.client_credentials(), 1);
    // A user request there still never degrades to the service account.
    let alice = env.login("alice").await;
    env.idp.set_token_exchange_enabled(false);
    let (status, id, _, _) = parts(env.exchange(Some(&alice), "jobs").await).await;
    assert_eq!((status, id.as_str()), (502, ""));
    assert_eq!(env.exchanges(), 1);
    env.stop().await;
}

#[actix_web::test]
async fn exchange_unsupported_falls_back_or_is_502() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    env.idp.set_token_exchange_enabled(false);
    let (status, id, _, body) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "service"), "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["preferred_username"],
        "service-account-token-broker"
    );
    let (status, id, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!((status, id.as_str()), (502, ""));
    assert_eq!(body["error"], "unsupported_grant_type");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("token-exchange-standard:v2")
    );
    env.stop().await;
}

#[actix_web::test]
async fn idp_unreachable_falls_back_or_is_a_gateway_error() {
    let env = start(Opts {
        timeout: "500ms",
        ..Opts::default()
    })
    .await;
    let alice = env.login("alice").await;
    // Warm the service-account cache while the IdP answers.
    let (status, id, _, _) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "service"));
    // Now every token request times out at the broker.
    env.idp.set_token_endpoint_delay(Duration::from_secs(2));
    let (status, id, cache, body) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(
        (status, id.as_str(), cache.as_str()),
        (200, "service", "hit"),
        "{body}"
    );
    let (status, id, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!((status, id.as_str()), (504, ""), "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    env.idp.set_token_endpoint_delay(Duration::ZERO);
    // Recovery needs no restart.
    let (status, id, _, _) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!((status, id.as_str()), (200, "user"));
    env.stop().await;
}

#[actix_web::test]
async fn keycloak_refusals_are_never_hidden_by_the_fallback() {
    let env = start_default().await;
    // A token whose aud lacks the broker: refused (by the broker itself since issue 9, where
    // Keycloak would answer 403) even on a service_account target.
    let other = env.login_at("other-frontend", "alice", "alice").await;
    let (status, id, _, body) = parts(env.exchange(Some(&other), "kagenti").await).await;
    assert_eq!((status, id.as_str()), (400, ""), "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(env.client_credentials(), 0);
    assert_eq!(env.exchanges(), 0);
    // Requested audience not available on a service_account target: 400, no fallback.
    let alice = env.login("alice").await;
    let (status, id, _, body) = parts(env.exchange(Some(&alice), "unmapped").await).await;
    assert_eq!((status, id.as_str()), (400, ""), "{body}");
    assert_eq!(env.client_credentials(), 0);
    env.stop().await;
}
