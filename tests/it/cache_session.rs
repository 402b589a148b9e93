//! `cache.key: session` (issue 13): every access token of one Keycloak session (a refreshed
//! token: same `sub`, `sid`, `azp`) shares one cache entry; other users never do; a token
//! without `sid` is keyed by the token; an entry is served to a presenting token only while
//! that token (minus the safety margin) is valid. The default (`token`) keeps one entry per
//! token. Real HTTP against the broker and the dev IdP.

use serde_json::{Value, json};

use crate::support::*;

async fn start_mode(session: bool) -> Env {
    start_with_yaml(Opts::default(), |y| {
        if session {
            y.replace("cache:\n", "cache:\n  key: session\n")
        } else {
            y
        }
    })
    .await
}

/// Another access token of the same session (what a refresh yields): new `jti`, `iat`, `exp`.
fn refreshed(env: &Env, token: &str, exp: u64) -> String {
    let mut c: Value = claims(token);
    c["jti"] = json!(format!("refreshed-{}-{exp}", c["jti"].as_str().unwrap()));
    c["iat"] = json!(now());
    c["exp"] = json!(exp);
    env.idp.sign_jwt(&c)
}

async fn kagenti(env: &Env, token: &str) -> (u16, String, Value) {
    let (status, _, cache, body) = parts(env.exchange(Some(token), "kagenti").await).await;
    (status, cache, body)
}

#[actix_web::test]
async fn a_refreshed_token_of_the_session_hits_and_other_users_never_do() {
    let env = start_mode(true).await;
    let alice = env.login("alice").await;
    let (s, cache, first) = kagenti(&env, &alice).await;
    assert_eq!((s, cache.as_str()), (200, "miss"), "{first}");
    let alice_refreshed = refreshed(&env, &alice, now() + 300);
    let (s, cache, again) = kagenti(&env, &alice_refreshed).await;
    assert_eq!((s, cache.as_str()), (200, "hit"), "{again}");
    assert_eq!(again["access_token"], first["access_token"]);
    assert_eq!(env.exchanges(), 1);

    // Another login of alice is another session: its own entry.
    let alice2 = env.login("alice").await;
    assert_eq!(kagenti(&env, &alice2).await.1, "miss");
    // Bob never hits alice's entries.
    let bob = env.login("bob").await;
    let (s, cache, b) = kagenti(&env, &bob).await;
    assert_eq!((s, cache.as_str()), (200, "miss"));
    assert_eq!(
        claims(b["access_token"].as_str().unwrap())["sub"],
        env.idp.user_id("bob").unwrap()
    );
    assert_eq!(
        kagenti(&env, &refreshed(&env, &bob, now() + 300)).await.1,
        "hit"
    );
    assert_eq!(env.exchanges(), 3);

    // The same session, another login client (azp) is another key.
    let mut c = claims(&alice);
    c["azp"] = json!("other-frontend");
    c["jti"] = json!("other-azp");
    assert_eq!(kagenti(&env, &env.idp.sign_jwt(&c)).await.1, "miss");
    env.stop().await;
}

#[actix_web::test]
async fn a_token_without_sid_is_keyed_by_the_token() {
    let env = start_mode(true).await;
    let alice = env.login("alice").await;
    let mut c = claims(&alice);
    c.as_object_mut().unwrap().remove("sid");
    c["jti"] = json!("no-sid-1");
    let one = env.idp.sign_jwt(&c);
    c["jti"] = json!("no-sid-2");
    let two = env.idp.sign_jwt(&c);
    assert_eq!(kagenti(&env, &one).await.1, "miss");
    assert_eq!(kagenti(&env, &one).await.1, "hit", "the same token hits");
    assert_eq!(
        kagenti(&env, &two).await.1,
        "miss",
        "another token does not"
    );
    env.stop().await;
}

#[actix_web::test]
async fn the_entry_never_outlives_the_presenting_token() {
    // margin 2 s (Opts::default): a token with 2 s or less left is never served from the cache.
    let env = start_mode(true).await;
    let alice = env.login("alice").await;
    assert_eq!(kagenti(&env, &alice).await.1, "miss");
    let short = refreshed(&env, &alice, now() + 2);
    let (s, cache, body) = kagenti(&env, &short).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        cache, "miss",
        "the session's entry outlives this token: not served to it"
    );
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}

#[actix_web::test]
async fn token_keying_stays_the_default() {
    let env = start_mode(false).await;
    let alice = env.login("alice").await;
    assert_eq!(kagenti(&env, &alice).await.1, "miss");
    let alice_refreshed = refreshed(&env, &alice, now() + 300);
    assert_eq!(kagenti(&env, &alice_refreshed).await.1, "miss");
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
}
