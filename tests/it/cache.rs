//! Cache lifetimes (issued expiry, subject-expiry cap, safety margin) and shared in-flight
//! exchanges, measured by the exchanges the dev IdP actually received.

use std::time::Duration;

use crate::support::*;

fn with_lifespans(
    broker_secs: Option<u64>,
    frontend_secs: Option<u64>,
    margin: &'static str,
) -> Opts {
    let mut o = Opts::default();
    for c in &mut o.idp.clients {
        if c.client_id == "token-broker" {
            c.access_token_lifespan = broker_secs.map(Duration::from_secs);
        }
        if c.client_id == "dev-frontend" {
            c.access_token_lifespan = frontend_secs.map(Duration::from_secs);
        }
    }
    o.margin = margin;
    o
}

#[actix_web::test]
async fn entry_expires_with_the_issued_token_minus_margin() {
    // Exchanged tokens live 4 s, margin 1 s: cached for about 3 s.
    let env = start(with_lifespans(Some(4), None, "1s")).await;
    let alice = env.login("alice").await;
    let (_, _, c1, b1) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(c1, "miss");
    let exp = claims(b1["access_token"].as_str().unwrap())["exp"]
        .as_u64()
        .unwrap();
    let (_, _, c2, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(c2, "hit");
    sleep_until_unix(exp - 1).await;
    let (_, _, c3, b3) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(
        c3, "miss",
        "an entry within the margin of its expiry is not served"
    );
    assert_ne!(b3["access_token"], b1["access_token"]);
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}

#[actix_web::test]
async fn entry_is_capped_at_the_subject_tokens_expiry() {
    // The user's token lives 6 s, exchanged tokens 300 s, margin 2 s: the entry must go when
    // the subject has 2 s left, long before the exchanged token expires.
    let env = start(with_lifespans(None, Some(6), "2s")).await;
    let alice = env.login("alice").await;
    let subject_exp = claims(&alice)["exp"].as_u64().unwrap();
    let (_, _, c1, b1) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(c1, "miss");
    let issued_exp = claims(b1["access_token"].as_str().unwrap())["exp"]
        .as_u64()
        .unwrap();
    assert!(
        issued_exp > subject_exp + 200,
        "the exchanged token outlives the subject"
    );
    let (_, _, c2, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(c2, "hit");
    sleep_until_unix(subject_exp - 2).await;
    assert!(now() < subject_exp, "the subject token is still valid");
    let (status, _, c3, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((status, c3.as_str()), (200, "miss"));
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}

#[actix_web::test]
async fn token_with_less_left_than_the_margin_is_not_cached() {
    // Exchanged tokens live 3 s; margin 10 s: served, never cached.
    let env = start(with_lifespans(Some(3), None, "10s")).await;
    let alice = env.login("alice").await;
    for _ in 0..3 {
        let (status, _, c, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
        assert_eq!((status, c.as_str()), (200, "miss"));
    }
    assert_eq!(env.exchanges(), 3);
    env.stop().await;
}

#[actix_web::test]
async fn hundred_concurrent_identical_requests_cause_one_exchange() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    // Slow the IdP so that all requests arrive while the first exchange is in flight.
    env.idp.set_token_endpoint_delay(Duration::from_millis(300));
    let futs = (0..100).map(|_| env.exchange(Some(&alice), "kagenti"));
    let responses = futures_util::future::join_all(futs).await;
    let mut tokens = std::collections::HashSet::new();
    let mut miss = 0;
    let mut shared = 0;
    for r in responses {
        let (status, id, cache, body) = parts(r).await;
        assert_eq!((status, id.as_str()), (200, "user"), "{body}");
        match cache.as_str() {
            "miss" => miss += 1,
            "coalesced" | "hit" => shared += 1,
            other => panic!("unexpected cache header {other}"),
        }
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(env.exchanges(), 1, "exactly one exchange reached the IdP");
    assert_eq!((miss, shared), (1, 99));
    assert_eq!(tokens.len(), 1);
    env.stop().await;
}

#[actix_web::test]
async fn concurrent_requests_share_an_error_which_is_not_cached() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    env.idp.logout_user("alice");
    env.idp.set_token_endpoint_delay(Duration::from_millis(300));
    let futs = (0..20).map(|_| env.exchange(Some(&alice), "sonataflow"));
    for r in futures_util::future::join_all(futs).await {
        let (status, _, _, body) = parts(r).await;
        assert_eq!(status, 400);
        assert_eq!(body["error_description"], "Invalid token");
    }
    assert_eq!(env.exchanges(), 1);
    // Not cached: the next request asks Keycloak again.
    env.idp.set_token_endpoint_delay(Duration::ZERO);
    let (status, _, _, _) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(status, 400);
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}
