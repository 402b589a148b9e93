//! Reliability (issue 6 §1–§4): IdP outage and recovery, the negative cache, the bound on
//! concurrent IdP calls, a Keycloak key rotation, and graceful shutdown.

use std::time::{Duration, Instant};

use crate::support::*;
use token_broker_devidp as devidp;

#[actix_web::test]
async fn idp_outage_serves_cached_tokens_fails_misses_fast_and_recovers() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(status, 200, "{body}");
    let (status, id, _, _) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "service"));

    // Keycloak goes away: connections are refused.
    let addr = env.idp.addr();
    env.idp.stop().await;

    // Cached tokens keep being served.
    let (status, id, cache, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(
        (status, id.as_str(), cache.as_str()),
        (200, "user", "hit"),
        "{body}"
    );
    // A miss on a `deny` target fails fast with a clear 502, after the capped retries.
    let started = Instant::now();
    let (status, _, _, body) = parts(env.exchange(Some(&bob), "sonataflow").await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a refused connection must fail fast, took {:?}",
        started.elapsed()
    );
    // A miss on a `service_account` target gets the (cached) service-account token.
    let (status, id, _, body) = parts(env.exchange(Some(&bob), "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "service"), "{body}");

    // Keycloak returns on the same address (here with new realm keys): no broker restart.
    let idp2 = devidp::start(Opts::default().idp, addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // jwksMinRefreshInterval
    let bob2 = env.login("bob").await;
    let mut ok = false;
    for _ in 0..5 {
        let (status, id, _, _) = parts(env.exchange(Some(&bob2), "sonataflow").await).await;
        if (status, id.as_str()) == (200, "user") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ok, "the broker recovered by itself");
    env.broker.stop().await;
    idp2.stop().await;
}

#[actix_web::test]
async fn failed_exchanges_are_remembered_briefly_per_subject_credential() {
    let env = start(Opts {
        negative_ttl: "2s",
        ..Opts::default()
    })
    .await;
    let old = env.login("alice").await;
    env.idp.logout_user("alice");
    let (status, _, _, body) = parts(env.exchange(Some(&old), "sonataflow").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(env.exchanges(), 1);
    // The same failure again, without asking Keycloak.
    for _ in 0..5 {
        let (status, _, _, body) = parts(env.exchange(Some(&old), "sonataflow").await).await;
        assert_eq!(status, 400);
        assert_eq!(body["error_description"], "Invalid token");
    }
    assert_eq!(
        env.exchanges(),
        1,
        "the negative cache answered the repeats"
    );
    // A new login is a new credential: never blocked by the old failure.
    let fresh = env.login("alice").await;
    let (status, id, _, body) = parts(env.exchange(Some(&fresh), "sonataflow").await).await;
    assert_eq!((status, id.as_str()), (200, "user"), "{body}");
    assert_eq!(env.exchanges(), 2);
    // After negativeTtl the old credential is tried at Keycloak again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, _, _, _) = parts(env.exchange(Some(&old), "sonataflow").await).await;
    assert_eq!(status, 400);
    assert_eq!(env.exchanges(), 3);
    env.stop().await;
}

#[actix_web::test]
async fn idp_calls_beyond_the_bound_fail_fast_with_503() {
    let env = start_with_yaml(Opts::default(), |y| {
        y.replace(
            "  jwksMinRefreshInterval: 1s\n",
            "  jwksMinRefreshInterval: 1s\n  maxConcurrentRequests: 1\n",
        )
    })
    .await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    env.idp.set_token_endpoint_delay(Duration::from_millis(600));
    let slow = env.exchange(Some(&alice), "sonataflow");
    let fast = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let r = env.exchange(Some(&bob), "sonataflow").await;
        (started.elapsed(), r)
    };
    let (slow, (took, fast)) = futures_util::future::join(slow, fast).await;
    let (status, _, _, body) = parts(slow).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _, body) = parts(fast).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(took < Duration::from_millis(300), "failed fast: {took:?}");
    assert_eq!(
        env.exchanges(),
        1,
        "nothing beyond the bound reached the IdP"
    );
    // The bound frees up again.
    env.idp.set_token_endpoint_delay(Duration::ZERO);
    let (status, _, _, _) = parts(env.exchange(Some(&bob), "sonataflow").await).await;
    assert_eq!(status, 200);
    env.stop().await;
}

#[actix_web::test]
async fn a_keycloak_key_rotation_is_followed_and_entries_of_the_old_key_dropped() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let (status, _, _, _) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(status, 200);
    let cache = env.broker.state.service.user_cache();
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 1);

    let old_kid = env.idp.signing_kid();
    let new_kid = env.idp.rotate_keys().await.unwrap();
    assert_ne!(old_kid, new_kid);
    tokio::time::sleep(Duration::from_millis(1100)).await; // jwksMinRefreshInterval
    // A token signed with the new key: unknown kid -> the broker refetches the JWKS.
    let bob = env.login("bob").await;
    let (status, id, _, body) = parts(env.exchange(Some(&bob), "sonataflow").await).await;
    assert_eq!((status, id.as_str()), (200, "user"), "{body}");
    // The old key left the JWKS: alice's token no longer verifies, and her entry is gone.
    // (A static caller with a refused user token: 400, docs/security.md.)
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not signed by a key of the configured issuer")
    );
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 1, "only bob's entry is left");
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}

#[actix_web::test]
async fn shutdown_turns_readiness_false_first_and_lets_requests_finish() {
    let env = start_with_yaml(Opts::default(), |y| {
        y.replace(
            "  workers: 2\n",
            "  workers: 2\n  drainDelay: 1s\n  shutdownTimeout: 5s\n",
        )
    })
    .await;
    let admin = format!("http://{}", env.broker.admin_addr.unwrap());
    let ready = env
        .http
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let alice = env.login("alice").await;
    env.idp
        .set_token_endpoint_delay(Duration::from_millis(1500));
    let in_flight = env.exchange(Some(&alice), "sonataflow");
    let shutdown = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        env.broker.shutdown().await;
    };
    let probe = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = env
            .http
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body)
    };
    let (resp, (), (probe_status, probe_body)) =
        futures_util::future::join3(in_flight, shutdown, probe).await;
    assert_eq!(probe_status, 503, "{probe_body}");
    assert_eq!(probe_body["status"], "draining");
    let (status, _, _, body) = parts(resp).await;
    assert_eq!(status, 200, "the in-flight request finished: {body}");
    // After shutdown nothing is accepted.
    assert!(
        env.http
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .is_err()
    );
    env.idp.stop().await;
}

#[actix_web::test]
async fn the_verified_credential_cache_never_outlives_the_credential() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let mut short = claims(&alice);
    let exp = now() + 3;
    short["exp"] = serde_json::json!(exp);
    let token = env.idp.sign_jwt(&short);
    let verifier = &env.broker.state.verifier;
    let before = verifier.verified_entries();
    for _ in 0..3 {
        let (status, _, _, body) = parts(env.exchange(Some(&token), "sonataflow").await).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        verifier.verified_entries(),
        before + 1,
        "verified once, then remembered"
    );
    sleep_until_unix(exp).await;
    let (status, _, _, body) = parts(env.exchange(Some(&token), "sonataflow").await).await;
    assert_eq!(
        status, 400,
        "an expired token is refused even though it was cached: {body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    env.stop().await;
}

/// The configuration the test broker runs, with its static entry and client secret replaced.
fn rotated_config(env: &Env, tokens: &[&str], secret: &str) -> token_broker::config::Config {
    let old_entry = format!(
        "      - type: static\n        options:\n          token: {STATIC_TOKEN}\n          subject: ci-caller\n"
    );
    let entries: String = tokens
        .iter()
        .map(|t| {
            format!(
                "      - type: static\n        options:\n          token: {t}\n          subject: ci-caller\n"
            )
        })
        .collect();
    let yaml = config_yaml(&env.idp.issuer(), &Opts::default()).replace(&old_entry, &entries);
    assert!(yaml.contains(&entries));
    let vars = std::collections::HashMap::from([("BROKER_SECRET".to_owned(), secret.to_owned())]);
    token_broker::config::load_str(&yaml, &vars, std::path::Path::new(".")).unwrap()
}

#[actix_web::test]
async fn static_tokens_and_the_client_secret_rotate_without_restart() {
    let env = start_default().await;
    const NEW: &str = "test-static-token-2-new";
    let service = |caller: &'static str| {
        let env = &env;
        async move {
            env.token(
                Some(caller),
                None,
                &[("grant_type", TE), ("audience", "kagenti")],
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(service(NEW).await, 401);
    // Overlap: the new token listed next to the old one, same subject (Backstage's own way).
    env.broker
        .reload(&rotated_config(&env, &[NEW, STATIC_TOKEN], BROKER_SECRET));
    assert_eq!(service(NEW).await, 200);
    assert_eq!(service(STATIC_TOKEN).await, 200);
    // The old entry removed: the old token stops working at once.
    env.broker
        .reload(&rotated_config(&env, &[NEW], BROKER_SECRET));
    assert_eq!(service(STATIC_TOKEN).await, 401);
    assert_eq!(service(NEW).await, 200);

    // The client secret: a wrong one is used from the next call on, the right one again after.
    env.broker
        .reload(&rotated_config(&env, &[NEW], "not-the-secret"));
    let alice = env.login("alice").await;
    let r = env
        .token(
            Some(NEW),
            Some(&alice),
            &[("grant_type", TE), ("audience", "sonataflow")],
        )
        .await;
    let (status, _, _, body) = parts(r).await;
    assert_ne!(status, 200, "{body}");
    env.broker
        .reload(&rotated_config(&env, &[NEW], BROKER_SECRET));
    let alice = env.login("alice").await;
    let r = env
        .token(
            Some(NEW),
            Some(&alice),
            &[("grant_type", TE), ("audience", "sonataflow")],
        )
        .await;
    let (status, id, _, body) = parts(r).await;
    assert_eq!((status, id.as_str()), (200, "user"), "{body}");
    env.stop().await;
}

/// Issue 16: while Keycloak's token endpoint stalls (8 s, a known Keycloak tail under load),
/// cache hits for other users are served as usual — nothing on the hit path waits for the IdP
/// — and a miss waits at most `keycloak.timeout` (here 1 s), then fails per the target's
/// policy (`deny`: 504 `temporarily_unavailable`) instead of holding its caller for the stall.
#[actix_web::test]
async fn an_idp_stall_bounds_misses_and_leaves_hits_alone() {
    let env = start(Opts {
        timeout: "1s",
        ..Opts::default()
    })
    .await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(status, 200, "{body}");

    env.idp.set_token_endpoint_delay(Duration::from_secs(8));
    let started = Instant::now();
    let miss = async {
        let r = env.exchange(Some(&bob), "sonataflow").await;
        (parts(r).await, started.elapsed())
    };
    let hits = async {
        // Let the miss reach the stalled IdP first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut served = Vec::new();
        for _ in 0..20 {
            let (status, id, cache, _) =
                parts(env.exchange(Some(&alice), "sonataflow").await).await;
            served.push((status, id, cache, started.elapsed()));
        }
        served
    };
    let (((status, _, _, body), miss_took), served) = futures_util::future::join(miss, hits).await;
    env.idp.set_token_endpoint_delay(Duration::ZERO);

    // Every hit was served from cache while the miss was still waiting for the IdP.
    for (status, id, cache, at) in &served {
        assert_eq!((*status, id.as_str(), cache.as_str()), (200, "user", "hit"));
        assert!(
            *at < miss_took,
            "a hit ({at:?}) waited for the stalled miss ({miss_took:?})"
        );
    }
    // The miss ended at keycloak.timeout, not at the end of the stall.
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        miss_took >= Duration::from_millis(900) && miss_took < Duration::from_secs(4),
        "the miss took {miss_took:?}"
    );
    env.stop().await;
}
