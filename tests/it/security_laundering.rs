//! Issue 9 §1 and §5: the broker never launders tokens. Every token the broker hands out has
//! `azp` = the broker's own client, and Keycloak V2 accepts a subject token whose `azp` is the
//! requester, so each of them, sent back as "the user's token", would have been exchanged for
//! any other target. Each reproduction of the issue is a test here, over real HTTP against the
//! dev IdP: the exchanged token, the service-account token, a JWT-grant token, through proxy
//! mode; plus the acceptance rules that close the hole (`userToken.allowedClients`, the
//! broker in `aud` checked locally, `userToken.allowWithoutCaller`), the user-mapping answer
//! check, and the Backstage ↔ Keycloak same-person check over the whole entity ref.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::Value;
use token_broker_devidp::DevClient;

use crate::backstage::EsKey;
use crate::support::*;

const SONATAFLOW: &[(&str, &str)] = &[("grant_type", TE), ("audience", "sonataflow")];

/// A confidential client with a service account whose tokens carry the broker in `aud`, and a
/// login client not in `allowedClients` whose tokens do too.
fn opts() -> Opts {
    let mut o = Opts::default();
    let mut robot = DevClient::confidential("robot", "robot-secret-123");
    robot.service_accounts_enabled = true;
    robot.audience_mappers = vec!["token-broker".into()];
    o.idp.clients.push(robot);
    let mut third = DevClient::public("third-frontend");
    third.direct_access_grants = true;
    third.audience_mappers = vec!["token-broker".into()];
    o.idp.clients.push(third);
    o
}

/// Asserts a 400 `invalid_request` whose description contains every one of `words`.
#[track_caller]
fn assert_refused(status: u16, body: &Value, words: &[&str]) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let d = body["error_description"].as_str().unwrap_or_default();
    for w in words {
        assert!(d.contains(w), "{w:?} not in {d:?}");
    }
}

/// alice's token for `kagenti`, as the broker issued it (what the Kagenti service receives).
async fn alice_for_kagenti(env: &Env) -> String {
    let alice = env.login("alice").await;
    let (s, id, _, body) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    let t = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&t)["azp"], "token-broker");
    t
}

/// The service-account token a static caller gets for `kagenti` (fallback service_account).
async fn service_token_for_kagenti(env: &Env) -> String {
    let (s, id, _, body) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!((s, id.as_str()), (200, "service"), "{body}");
    let t = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        claims(&t)["preferred_username"],
        "service-account-token-broker"
    );
    t
}

#[actix_web::test]
async fn an_exchanged_token_is_not_accepted_back_as_a_users_token() {
    let env = start_with_yaml(opts(), allow_without_caller).await;
    let for_kagenti = alice_for_kagenti(&env).await;
    let exchanges = env.exchanges();
    // Sent alone (the most permissive configuration: a user token alone is a credential) ...
    let (s, id, _, body) = parts(env.token(None, Some(&for_kagenti), SONATAFLOW).await).await;
    assert_refused(s, &body, &["broker's own client 'token-broker'", "azp"]);
    assert_eq!(id, "");
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("never a token the broker returned")
    );
    // ... with a caller, in the header ...
    let (s, _, _, body) = parts(env.exchange(Some(&for_kagenti), "sonataflow").await).await;
    assert_refused(s, &body, &["broker's own client"]);
    // ... and as the RFC 8693 subject_token.
    let form = [
        ("grant_type", TE),
        ("audience", "sonataflow"),
        ("subject_token", for_kagenti.as_str()),
        ("subject_token_type", AT),
    ];
    let (s, _, _, body) = parts(env.token(Some(STATIC_TOKEN), None, &form).await).await;
    assert_refused(s, &body, &["broker's own client"]);
    assert_eq!(env.exchanges(), exchanges, "nothing reached Keycloak");
    env.stop().await;
}

#[actix_web::test]
async fn a_service_account_token_is_not_accepted_as_a_users_token() {
    let env = start_with_yaml(opts(), |y| {
        allow_without_caller(y).replace(
            "allowedClients: [dev-frontend, other-frontend]",
            "allowedClients: [dev-frontend, other-frontend, robot]",
        )
    })
    .await;
    // The broker's own service-account token for kagenti, sent for sonataflow (fallback deny):
    // alone and with a caller.
    let sa = service_token_for_kagenti(&env).await;
    let (s, id, _, body) = parts(env.token(None, Some(&sa), SONATAFLOW).await).await;
    assert_refused(s, &body, &["broker's own client"]);
    assert_eq!(id, "", "never served as a user exchange");
    let (s, _, _, body) = parts(env.exchange(Some(&sa), "sonataflow").await).await;
    assert_refused(s, &body, &["broker's own client"]);
    // Another client's service account, even with the broker in aud and an allowed azp:
    // Keycloak marks it (client_id claim, service-account- username), and it is no user.
    let r = env
        .http
        .post(env.idp.token_endpoint())
        .basic_auth("robot", Some("robot-secret-123"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let robot: Value = r.json().await.unwrap();
    let robot = robot["access_token"].as_str().unwrap().to_owned();
    let c = claims(&robot);
    assert_eq!(
        (c["azp"].as_str(), c["client_id"].as_str()),
        (Some("robot"), Some("robot"))
    );
    assert_eq!(c["aud"], serde_json::json!(["token-broker", "account"]));
    let exchanges = env.exchanges();
    let (s, _, _, body) = parts(env.exchange(Some(&robot), "sonataflow").await).await;
    assert_refused(s, &body, &["service-account"]);
    let (s, _, _, body) = parts(env.token(None, Some(&robot), SONATAFLOW).await).await;
    assert_refused(s, &body, &["service-account"]);
    assert_eq!(env.exchanges(), exchanges, "nothing reached Keycloak");
    env.stop().await;
}

/// A loopback listener that only counts connections (an upstream that must never be called).
fn connection_counter() -> (String, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(c);
        }
    });
    (url, n)
}

#[actix_web::test]
async fn laundering_through_proxy_mode_is_refused_before_the_upstream() {
    let (upstream, calls) = connection_counter();
    let env = start_with_yaml(
        Opts {
            upstream: Some(upstream),
            ..opts()
        },
        allow_without_caller,
    )
    .await;
    let for_kagenti = alice_for_kagenti(&env).await;
    let sa = service_token_for_kagenti(&env).await;
    let proxy = |caller: Option<&'static str>, user: &str| {
        let mut r = env
            .http
            .get(format!("{}/v1/proxy/sonataflow/api/greeting", env.url))
            .header("X-Forwarded-Access-Token", user);
        if let Some(c) = caller {
            r = r.bearer_auth(c);
        }
        r.send()
    };
    for (caller, token) in [
        (Some(STATIC_TOKEN), &for_kagenti),
        (None, &for_kagenti),
        (Some(STATIC_TOKEN), &sa),
        (None, &sa),
    ] {
        let r = proxy(caller, token).await.unwrap();
        let (s, id, _, body) = parts(r).await;
        assert_refused(s, &body, &["broker's own client"]);
        assert_eq!(id, "");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the upstream was never called"
    );
    env.stop().await;
}

#[actix_web::test]
async fn only_tokens_of_allowed_login_clients_are_users_tokens() {
    let env = start_with_yaml(opts(), allow_without_caller).await;
    // third-frontend puts the broker in aud (Keycloak would exchange it) but is not listed.
    let bob = env.login_at("third-frontend", "bob", "bob").await;
    env.idp.clear_requests();
    let (s, _, _, body) = parts(env.exchange(Some(&bob), "sonataflow").await).await;
    assert_refused(
        s,
        &body,
        &["client 'third-frontend'", "userToken.allowedClients"],
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains("add it to userToken.allowedClients")
    );
    let (s, _, _, body) = parts(env.token(None, Some(&bob), SONATAFLOW).await).await;
    assert_refused(s, &body, &["userToken.allowedClients"]);
    assert!(env.idp.requests().is_empty(), "nothing reached Keycloak");
    env.stop().await;

    // Without the setting no Keycloak user token is accepted at all (fail closed).
    let env = start_with_yaml(opts(), |y| {
        y.replace("  allowedClients: [dev-frontend, other-frontend]\n", "")
    })
    .await;
    let alice = env.login("alice").await;
    let (s, _, _, body) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_refused(
        s,
        &body,
        &["client 'dev-frontend'", "userToken.allowedClients"],
    );
    assert!(body["hint"].as_str().unwrap().contains("is empty"));
    assert_eq!(env.exchanges(), 0);
    env.stop().await;
}

#[actix_web::test]
async fn a_token_without_the_broker_in_aud_is_refused_before_any_idp_call() {
    let env = start_default().await;
    // other-frontend is an allowed login client, but has no Audience mapper for the broker.
    let bob = env.login_at("other-frontend", "bob", "bob").await;
    assert!(
        claims(&bob)
            .get("aud")
            .is_none_or(|a| !a.to_string().contains("token-broker"))
    );
    env.idp.clear_requests();
    for target in ["sonataflow", "kagenti"] {
        let (s, id, _, body) = parts(env.exchange(Some(&bob), target).await).await;
        assert_refused(
            s,
            &body,
            &["aud does not contain the broker's client 'token-broker'"],
        );
        assert_eq!(id, "", "no fallback either");
        // The hint the broker gave for Keycloak's own error is kept.
        let hint = body["hint"].as_str().unwrap();
        assert!(
            hint.contains("Audience mapper for 'token-broker'"),
            "{hint}"
        );
    }
    assert!(env.idp.requests().is_empty(), "nothing reached the IdP");
    env.stop().await;
}

#[actix_web::test]
async fn a_user_token_alone_is_opt_in_and_subject_to_allowed_callers() {
    // Default: a user token without a caller credential is no credential.
    let env = start_default().await;
    let alice = env.login("alice").await;
    env.idp.clear_requests();
    let r = env
        .token(
            None,
            Some(&alice),
            &[("grant_type", TE), ("audience", "kagenti")],
        )
        .await;
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer realm=\"token-broker\""
    );
    let (s, id, _, body) = parts(r).await;
    assert_eq!((s, id.as_str()), (401, ""), "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains("userToken.allowWithoutCaller"), "{d}");
    assert!(
        env.idp.requests().is_empty(),
        "not even the service account"
    );
    env.stop().await;

    // Opted in (trusted proxy): the user is the principal `oidc:<sub>`, and allow-lists apply.
    let env = start_with_yaml(opts(), |y| {
        allow_without_caller(y).replace(
            "targets:\n",
            "targets:\n  users-only:\n    audience: kagenti-api\n    fallback: deny\n    allowedCallers: [\"oidc:*\"]\n",
        )
    })
    .await;
    let alice = env.login("alice").await;
    let alone = |target: &'static str| {
        let (env, alice) = (&env, &alice);
        async move {
            env.token(
                None,
                Some(alice),
                &[("grant_type", TE), ("audience", target)],
            )
            .await
        }
    };
    let (s, id, _, body) = parts(alone("kagenti").await).await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    let (s, _, _, body) = parts(alone("augment-only").await).await;
    assert_eq!(s, 403, "{body}");
    let sub = claims(&alice)["sub"].as_str().unwrap().to_owned();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("oidc:{sub}")),
        "{body}"
    );
    let (s, id, _, body) = parts(alone("users-only").await).await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    // The static caller with alice's token is not `oidc:*`.
    let (s, _, _, _) = parts(env.exchange(Some(&alice), "users-only").await).await;
    assert_eq!(s, 403);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Backstage callers: a small stand-in for the Backstage auth backend's JWKS, and user tokens in
// Backstage's shape (docs/reference/backstage-tokens.md §3.1).

struct FakeBackstage {
    url: String,
    server: actix_web::dev::ServerHandle,
    auth: EsKey,
}

async fn fake_backstage() -> FakeBackstage {
    let auth = EsKey::new();
    let jwks = serde_json::json!({"keys": [auth.jwk()]});
    let server = HttpServer::new(move || {
        let jwks = jwks.clone();
        App::new().route(
            "/api/auth/.well-known/jwks.json",
            web::get().to(move || {
                let jwks = jwks.clone();
                async move { HttpResponse::Ok().json(jwks) }
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
    FakeBackstage {
        url: format!("http://{addr}"),
        server: handle,
        auth,
    }
}

impl FakeBackstage {
    /// A Backstage user token (`vnd.backstage.user`) for the entity ref `sub`.
    fn user_token(&self, sub: &str) -> String {
        let exp = now() + 3600;
        let iat = exp - 3600;
        self.auth.sign_raw(
            &format!(
                r#"{{"typ":"vnd.backstage.user","alg":"ES256","kid":"{}"}}"#,
                self.auth.kid
            ),
            &format!(
                r#"{{"iss":"{}/api/auth","sub":"{sub}","aud":"backstage","iat":{iat},"exp":{exp},"uip":"x"}}"#,
                self.url
            ),
        )
    }
}

const ASSERTION_ISSUER: &str = "http://token-broker.test";

/// A broker trusting `bs`, with an assertion signer and two targets with a user mapping
/// (`kagenti-jwt`: RFC 7523 grant, `fixed-imp`: V1 impersonation of a fixed user — a
/// misconfiguration), the dev IdP trusting the broker's assertions like `token-broker dev`.
async fn start_with_backstage(bs: &FakeBackstage) -> Env {
    let base = bs.url.clone();
    let env = start_with_yaml(opts(), move |yaml| {
        yaml.replace(
            "backend:\n  auth:\n",
            &format!("backend:\n  baseUrl: {base}\n  auth:\n"),
        )
        .replace(
            "cache:\n",
            &format!("assertion:\n  issuer: {ASSERTION_ISSUER}\n  lifetime: 2m\ncache:\n"),
        )
        .replace(
            "targets:\n",
            "targets:\n  kagenti-jwt:\n    audience: kagenti-api\n    fallback: service_account\n    userMapping: jwt_authorization_grant\n  fixed-imp:\n    audience: kagenti-api\n    fallback: service_account\n    userMapping: {type: impersonation, subject: bob}\n",
        )
    })
    .await;
    token_broker::dev::trust_broker_assertions(
        &env.idp,
        &token_broker::dev::AssertionTrust {
            issuer: ASSERTION_ISSUER.into(),
            jwks_url: format!("{}/.well-known/jwks.json", env.url),
            client_id: "token-broker".into(),
            subject_template: "{ref}".into(),
        },
    );
    env
}

async fn call(env: &Env, bearer: &str, user: Option<&str>, target: &str) -> (u16, String, Value) {
    let r = env
        .token(
            Some(bearer),
            user,
            &[("grant_type", TE), ("audience", target)],
        )
        .await;
    let (s, id, _, body) = parts(r).await;
    (s, id, body)
}

#[actix_web::test]
async fn a_jwt_grant_token_is_not_accepted_back_as_a_users_token() {
    let bs = fake_backstage().await;
    let env = start_with_backstage(&bs).await;
    let alice_bs = bs.user_token("user:default/alice");
    let (s, id, body) = call(&env, &alice_bs, None, "kagenti-jwt").await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    let granted = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&granted)["azp"], "token-broker");
    let exchanges = env.exchanges();
    // Sent back with the static caller or with alice's own Backstage credential, for sonataflow.
    let (s, _, body) = call(&env, STATIC_TOKEN, Some(&granted), "sonataflow").await;
    assert_refused(s, &body, &["broker's own client"]);
    let (s, _, body) = call(&env, &alice_bs, Some(&granted), "sonataflow").await;
    assert_refused(s, &body, &["broker's own client"]);
    assert_eq!(env.exchanges(), exchanges, "nothing reached Keycloak");
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn a_user_mapping_answer_must_be_the_mapped_users_token() {
    let bs = fake_backstage().await;
    let env = start_with_backstage(&bs).await;
    let alice_bs = bs.user_token("user:default/alice");
    // Mis-linked at Keycloak: the federated identity user:default/alice points at bob.
    env.idp
        .unlink_user("alice", token_broker::dev::BROKER_IDP_ALIAS);
    assert!(env.idp.link_user(
        "bob",
        token_broker::dev::BROKER_IDP_ALIAS,
        "user:default/alice"
    ));
    let (s, id, body) = call(&env, &alice_bs, None, "kagenti-jwt").await;
    assert_eq!((s, id.as_str()), (502, ""), "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains("another user than 'user:default/alice'"), "{d}");
    // V1 impersonation configured with a fixed subject: every user would get bob's token.
    env.idp.set_token_exchange_v1_enabled(true);
    let (s, id, body) = call(&env, &alice_bs, None, "fixed-imp").await;
    assert_eq!((s, id.as_str()), (502, ""), "{body}");
    // bob himself gets his own token through the same mapping.
    let bob_bs = bs.user_token("user:default/bob");
    let (s, id, body) = call(&env, &bob_bs, None, "fixed-imp").await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["preferred_username"],
        "bob"
    );
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn the_same_person_check_compares_the_whole_entity_ref() {
    let bs = fake_backstage().await;
    let env = start_with_backstage(&bs).await;
    let bob = env.login("bob").await;
    let mut seen = HashMap::new();
    for entity in [
        "user:evil-ns/bob",
        "group:default/bob",
        "user:default/alice",
        "user:default/bob",
    ] {
        let (s, _, body) = call(&env, &bs.user_token(entity), Some(&bob), "kagenti").await;
        seen.insert(entity, (s, body));
    }
    for entity in [
        "user:evil-ns/bob",
        "group:default/bob",
        "user:default/alice",
    ] {
        let (s, body) = &seen[entity];
        assert_eq!(*s, 403, "{entity}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("does not belong to the Backstage user"),
            "{entity}: {body}"
        );
    }
    let (s, body) = &seen["user:default/bob"];
    assert_eq!(*s, 200, "{body}");
    bs.server.stop(true).await;
    env.stop().await;

    // A template that names the namespace binds it: user:team-a/bob is team-a/bob, not bob.
    let bs = fake_backstage().await;
    let base = bs.url.clone();
    let env = start_with_yaml(opts(), move |y| {
        y.replace(
            "backend:\n  auth:\n",
            &format!("backend:\n  baseUrl: {base}\n  auth:\n"),
        )
        .replace(
            "userToken:\n",
            "userToken:\n  matchClaim: preferred_username\n  matchValue: \"{namespace}/{name}\"\n",
        )
    })
    .await;
    let bob = env.login("bob").await;
    let (s, _, body) = call(
        &env,
        &bs.user_token("user:team-a/bob"),
        Some(&bob),
        "kagenti",
    )
    .await;
    assert_eq!(s, 403, "{body}");
    bs.server.stop(true).await;
    env.stop().await;
}
