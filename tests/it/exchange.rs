//! The happy path: a real V2 exchange at the dev IdP, the answer's shape, and the exact form
//! the broker sends to Keycloak.

use crate::support::*;

#[actix_web::test]
async fn exchanges_alice_token_for_kagenti_and_serves_rfc8693_answer() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let r = env.exchange(Some(&alice), "kagenti").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    let (_, id, cache, body) = parts(r).await;
    assert_eq!(id, "user");
    assert_eq!(cache, "miss");
    assert_eq!(body["issued_token_type"], AT);
    assert_eq!(body["token_type"], "Bearer");
    let exp_in = body["expires_in"].as_u64().unwrap();
    assert!(exp_in > 250 && exp_in <= 300, "expires_in {exp_in}");
    let token = body["access_token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["aud"], "kagenti-api");
    assert_eq!(c["sub"], claims(&alice)["sub"]);
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(c["preferred_username"], "alice");

    // Second call: from cache.
    let (status, id, cache, body2) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((status, id.as_str(), cache.as_str()), (200, "user", "hit"));
    assert_eq!(body2["access_token"], body["access_token"]);
    assert_eq!(env.exchanges(), 1);
    env.stop().await;
}

#[actix_web::test]
async fn subject_token_in_form_works_like_the_header() {
    let env = start_default().await;
    let bob = env.login("bob").await;
    let r = env
        .token(
            Some(STATIC_TOKEN),
            None,
            &[
                ("grant_type", TE),
                ("audience", "sonataflow"),
                ("subject_token", &bob),
                ("subject_token_type", AT),
            ],
        )
        .await;
    let (status, id, _, body) = parts(r).await;
    assert_eq!((status, id.as_str()), (200, "user"), "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "sonataflow");
    assert_eq!(c["preferred_username"], "bob");
    env.stop().await;
}

#[actix_web::test]
async fn user_token_alone_authenticates_the_caller() {
    // Opt-in since issue 9: userToken.allowWithoutCaller (trusted-proxy deployments).
    let env = start_with_yaml(Opts::default(), allow_without_caller).await;
    let alice = env.login("alice").await;
    let r = env
        .token(
            None,
            Some(&alice),
            &[("grant_type", TE), ("audience", "kagenti")],
        )
        .await;
    let (status, id, _, _) = parts(r).await;
    assert_eq!((status, id.as_str()), (200, "user"));
    env.stop().await;
}

fn form_of(
    req: &token_broker_devidp::RecordedRequest,
) -> std::collections::BTreeMap<String, String> {
    req.form.iter().cloned().collect()
}

#[actix_web::test]
async fn sends_exactly_the_v2_form_with_client_secret_basic() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    env.idp.clear_requests();
    let r = env
        .token(
            Some(STATIC_TOKEN),
            Some(&alice),
            &[("grant_type", TE), ("audience", "kagenti"), ("scope", "")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let reqs = env.idp.requests();
    let te: Vec<_> = reqs
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some(TE))
        .collect();
    assert_eq!(te.len(), 1);
    let f = form_of(te[0]);
    let keys: Vec<&str> = f.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "audience",
            "grant_type",
            "requested_token_type",
            "subject_token",
            "subject_token_type"
        ]
    );
    assert_eq!(f["audience"], "kagenti-api");
    assert_eq!(f["subject_token"], alice);
    assert_eq!(f["subject_token_type"], AT);
    assert_eq!(f["requested_token_type"], AT);
    // Must be absent: V1-only parameters V2 rejects, client credentials in the form (Basic is
    // used), and scope when none was asked for.
    for absent in [
        "client_id",
        "client_secret",
        "scope",
        "requested_subject",
        "requested_issuer",
        "subject_issuer",
        "actor_token",
        "resource",
    ] {
        assert!(!f.contains_key(absent), "{absent} must not be sent");
    }
    assert_eq!(te[0].basic_auth_client_id.as_deref(), Some("token-broker"));
    env.stop().await;
}

#[actix_web::test]
async fn sends_client_credentials_in_the_form_with_client_secret_post() {
    let env = start(Opts {
        client_auth: "client_secret_post",
        ..Opts::default()
    })
    .await;
    let alice = env.login("alice").await;
    env.idp.clear_requests();
    let r = env.exchange(Some(&alice), "kagenti").await;
    assert_eq!(r.status(), 200);
    let reqs = env.idp.requests();
    let f = form_of(
        reqs.iter()
            .find(|r| r.grant_type.as_deref() == Some(TE))
            .unwrap(),
    );
    assert_eq!(f["client_id"], "token-broker");
    assert_eq!(f["client_secret"], BROKER_SECRET);
    assert!(reqs.iter().all(|r| r.basic_auth_client_id.is_none()));
    env.stop().await;
}

#[actix_web::test]
async fn two_users_never_share_an_entry() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let bob = env.login("bob").await;
    let (_, _, ca, a) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    let (_, _, cb, b) = parts(env.exchange(Some(&bob), "kagenti").await).await;
    assert_eq!((ca.as_str(), cb.as_str()), ("miss", "miss"));
    assert_ne!(a["access_token"], b["access_token"]);
    assert_eq!(
        claims(a["access_token"].as_str().unwrap())["preferred_username"],
        "alice"
    );
    assert_eq!(
        claims(b["access_token"].as_str().unwrap())["preferred_username"],
        "bob"
    );
    // A second login of alice is a different subject token: its own entry, its own exchange.
    let alice2 = env.login("alice").await;
    let (_, _, c2, a2) = parts(env.exchange(Some(&alice2), "kagenti").await).await;
    assert_eq!(c2, "miss");
    assert_eq!(
        claims(a2["access_token"].as_str().unwrap())["preferred_username"],
        "alice"
    );
    // And each keeps getting its own from cache.
    for _ in 0..3 {
        let (_, _, c, body) = parts(env.exchange(Some(&bob), "kagenti").await).await;
        assert_eq!(c, "hit");
        assert_eq!(body["access_token"], b["access_token"]);
    }
    assert_eq!(env.exchanges(), 3);
    env.stop().await;
}

#[actix_web::test]
async fn per_target_entries_and_allow_lists() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let (s1, _, _, k) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    let (s2, _, _, s) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!((s1, s2), (200, 200));
    assert_ne!(k["access_token"], s["access_token"]);
    // augment-only allows only plugin:augment; the static caller is ci-caller.
    let (status, _, _, body) = parts(env.exchange(Some(&alice), "augment-only").await).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "access_denied");
    // A restricted static token without an entry for token-broker: Backstage's 403 wording.
    let r = env
        .token(
            Some(RESTRICTED_TOKEN),
            Some(&alice),
            &[("grant_type", TE), ("audience", "kagenti")],
        )
        .await;
    let (status, _, _, body) = parts(r).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error_description"],
        "This token's access is restricted to plugin(s) 'catalog'"
    );
    env.stop().await;
}

#[actix_web::test]
async fn answers_that_fail_the_checks_are_never_served_or_cached() {
    use token_broker_devidp::ExchangeFault;
    let env = start_default().await;
    let alice = env.login("alice").await;
    for fault in [
        ExchangeFault::WrongAudience,
        ExchangeFault::WrongSubject,
        ExchangeFault::WrongIssuedTokenType,
        ExchangeFault::WrongTokenType,
        ExchangeFault::ForeignSignature,
    ] {
        env.idp.set_exchange_fault(Some(fault));
        // Even on a service_account target: a bad answer is an error, not a fallback.
        let (status, id, _, body) = parts(env.exchange(Some(&alice), "kagenti").await).await;
        assert_eq!((status, id.as_str()), (502, ""), "{fault:?}: {body}");
        assert_eq!(body["error"], "server_error", "{fault:?}");
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(env.client_credentials(), 0);
    // Nothing bad was cached: with the fault gone, the next request exchanges afresh.
    env.idp.set_exchange_fault(None);
    let before = env.exchanges();
    let (status, _, cache, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(env.exchanges(), before + 1);
    env.stop().await;
}
