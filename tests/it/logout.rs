//! Logout (issue 13): the broker as an OIDC Back-Channel Logout 1.0 receiver
//! (`POST /v1/backchannel-logout`) fed by the dev IdP's logouts, each invalid logout-token form
//! refused with 400, and `/admin/revoke`. Real HTTP against the real broker and the dev IdP.

use serde_json::{Value, json};

use crate::support::*;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A password login keeping the whole answer (access, refresh token, `session_state`).
async fn login_full(env: &Env, user: &str) -> Value {
    let r = env
        .http
        .post(env.idp.token_endpoint())
        .form(&[
            ("grant_type", "password"),
            ("client_id", "dev-frontend"),
            ("username", user),
            ("password", user),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn access(v: &Value) -> &str {
    v["access_token"].as_str().unwrap()
}

/// Exchanges for `kagenti`: (status, cache header, body).
async fn kagenti(env: &Env, token: &str) -> (u16, String, Value) {
    let (status, _, cache, body) = parts(env.exchange(Some(token), "kagenti").await).await;
    (status, cache, body)
}

async fn backchannel(env: &Env, logout_token: &str) -> (u16, String, Value) {
    let r = env
        .http
        .post(format!("{}/v1/backchannel-logout", env.url))
        .form(&[("logout_token", logout_token)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cc = header(&r, "cache-control");
    let body = r.json().await.unwrap_or(Value::Null);
    (status, cc, body)
}

fn logout_claims(env: &Env, sub: &str, sid: Option<&str>) -> Value {
    let now = now();
    let mut c = json!({
        "iss": env.idp.issuer(),
        "aud": "token-broker",
        "iat": now,
        "exp": now + 120,
        "jti": uuid_like(),
        "sub": sub,
        "typ": "Logout",
        "events": { EVENT: {} },
    });
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    c
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("jti-{}-{}", now(), N.fetch_add(1, Ordering::SeqCst))
}

/// The login client's "Backchannel logout URL" → the broker (docs/keycloak-setup.md step 3):
/// the exchanging broker has no client session in the user's session, so Keycloak would not
/// tell its own client.
fn point_backchannel_at_broker(env: &Env) {
    let url = format!("{}/v1/backchannel-logout", env.url);
    assert!(env.idp.update_client("dev-frontend", |c| {
        c.backchannel_logout_url = Some(url);
    }));
}

#[actix_web::test]
async fn dev_idp_logout_reaches_the_broker_and_evicts_that_session_only() {
    let env = start_default().await;
    point_backchannel_at_broker(&env);
    let alice = login_full(&env, "alice").await;
    let alice2 = login_full(&env, "alice").await;
    let bob = login_full(&env, "bob").await;
    for t in [access(&alice), access(&alice2), access(&bob)] {
        assert_eq!(kagenti(&env, t).await.1, "miss");
        assert_eq!(kagenti(&env, t).await.1, "hit");
    }
    let before = env.exchanges();

    // Alice logs out of her first session at the IdP (Keycloak's non-browser logout).
    let r = env
        .http
        .post(format!(
            "{}/protocol/openid-connect/logout",
            env.idp.issuer()
        ))
        .form(&[
            ("client_id", "dev-frontend"),
            ("refresh_token", alice["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deliveries = env.idp.backchannel_deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].status, Some(200), "the broker accepted it");

    // The ended session's token: no cached token any more, the IdP is asked and refuses it.
    let (status, cache, body) = kagenti(&env, access(&alice)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Invalid token", "{body}");
    assert_ne!(cache, "hit");
    assert_eq!(env.exchanges(), before + 1, "went to the IdP");
    // Alice's other session and bob are untouched.
    assert_eq!(kagenti(&env, access(&alice2)).await.1, "hit");
    assert_eq!(kagenti(&env, access(&bob)).await.1, "hit");
    assert_eq!(env.exchanges(), before + 1);
    env.stop().await;
}

#[actix_web::test]
async fn invalid_logout_tokens_are_refused_with_400_and_evict_nothing() {
    let env = start_default().await;
    let alice = login_full(&env, "alice").await;
    let bob = login_full(&env, "bob").await;
    let sid = alice["session_state"].as_str().unwrap().to_owned();
    let sub = env.idp.user_id("alice").unwrap();
    for t in [access(&alice), access(&bob)] {
        assert_eq!(kagenti(&env, t).await.1, "miss");
    }
    let valid = logout_claims(&env, &sub, Some(&sid));

    let mut cases: Vec<(&str, String)> = Vec::new();
    // Bad signature: a valid token's payload swapped for another one.
    let signed = env.idp.sign_jwt(&valid);
    let mut forged_claims = valid.clone();
    forged_claims["sub"] = json!("someone-else");
    let forged_payload = env.idp.sign_jwt(&forged_claims);
    let parts_of = |t: &str| t.split('.').map(str::to_owned).collect::<Vec<_>>();
    let (a, b) = (parts_of(&signed), parts_of(&forged_payload));
    cases.push(("bad signature", format!("{}.{}.{}", a[0], b[1], a[2])));
    let mut c = valid.clone();
    c["aud"] = json!("kagenti-api");
    cases.push(("wrong aud", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c.as_object_mut().unwrap().remove("events");
    cases.push(("missing events", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c["events"] = json!({ "http://schemas.openid.net/event/other": {} });
    cases.push(("other event", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c["nonce"] = json!("n-0S6_WzA2Mj");
    cases.push(("nonce present", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c["iat"] = json!(now() - 300);
    c["exp"] = json!(now() - 1);
    cases.push(("expired", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c.as_object_mut().unwrap().remove("sub");
    c.as_object_mut().unwrap().remove("sid");
    cases.push(("neither sub nor sid", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c.as_object_mut().unwrap().remove("iat");
    cases.push(("missing iat", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c.as_object_mut().unwrap().remove("jti");
    cases.push(("missing jti", env.idp.sign_jwt(&c)));
    let mut c = valid.clone();
    c["iss"] = json!("http://elsewhere/realms/dev");
    cases.push(("wrong iss", env.idp.sign_jwt(&c)));
    cases.push(("not a JWT", "x.y.z".to_owned()));
    for (name, token) in &cases {
        let (status, cc, body) = backchannel(&env, token).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(cc, "no-store", "{name}");
        assert_eq!(body["error"], "invalid_request", "{name}: {body}");
    }
    // No `logout_token` at all.
    let r = env
        .http
        .post(format!("{}/v1/backchannel-logout", env.url))
        .form(&[("other", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Nothing was evicted by the refused tokens.
    assert_eq!(kagenti(&env, access(&alice)).await.1, "hit");

    // The valid token: 200, no-store; alice's session entry is gone, bob's stays.
    let (status, cc, _) = backchannel(&env, &signed).await;
    assert_eq!((status, cc.as_str()), (200, "no-store"));
    assert_eq!(kagenti(&env, access(&bob)).await.1, "hit");
    // The IdP still knows the session (this logout token was not sent by it), so the next
    // request is a fresh exchange: a miss.
    assert_eq!(kagenti(&env, access(&alice)).await.1, "miss");
    // Replayed jti.
    let (status, cc, body) = backchannel(&env, &signed).await;
    assert_eq!((status, cc.as_str()), (400, "no-store"), "replay: {body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("jti"),
        "{body}"
    );
    assert_eq!(
        kagenti(&env, access(&alice)).await.1,
        "hit",
        "a replay evicts nothing"
    );

    // A logout token with only `sub` logs the user out everywhere: both of alice's sessions.
    let alice2 = login_full(&env, "alice").await;
    assert_eq!(kagenti(&env, access(&alice2)).await.1, "miss");
    let (status, _, body) =
        backchannel(&env, &env.idp.sign_jwt(&logout_claims(&env, &sub, None))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(kagenti(&env, access(&alice)).await.1, "miss");
    assert_eq!(kagenti(&env, access(&alice2)).await.1, "miss");
    assert_eq!(kagenti(&env, access(&bob)).await.1, "hit");
    env.stop().await;
}

#[actix_web::test]
async fn admin_revoke_evicts_a_session_or_a_user() {
    let env = start_default().await;
    let alice = login_full(&env, "alice").await;
    let alice2 = login_full(&env, "alice").await;
    let bob = login_full(&env, "bob").await;
    for t in [access(&alice), access(&alice2), access(&bob)] {
        assert_eq!(kagenti(&env, t).await.1, "miss");
    }
    let admin = format!("http://{}/admin/revoke", env.broker.admin_addr.unwrap());
    let revoke = |body: Value, token: Option<&'static str>| {
        let mut r = env.http.post(&admin).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(
        revoke(json!({"sub": "x"}), None).await.unwrap().status(),
        401
    );
    assert_eq!(
        revoke(json!({"sub": "x"}), Some("wrong"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        revoke(json!({}), Some("test-admin-token"))
            .await
            .unwrap()
            .status(),
        400
    );
    // One session.
    let r = revoke(
        json!({"sid": alice["session_state"]}),
        Some("test-admin-token"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(kagenti(&env, access(&alice)).await.1, "miss");
    assert_eq!(kagenti(&env, access(&alice2)).await.1, "hit");
    assert_eq!(kagenti(&env, access(&bob)).await.1, "hit");
    // The user: every session.
    let r = revoke(
        json!({"sub": env.idp.user_id("alice").unwrap()}),
        Some("test-admin-token"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(kagenti(&env, access(&alice)).await.1, "miss");
    assert_eq!(kagenti(&env, access(&alice2)).await.1, "miss");
    assert_eq!(kagenti(&env, access(&bob)).await.1, "hit");
    env.stop().await;
}
