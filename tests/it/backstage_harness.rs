//! The real-Backstage harness works end to end: every token kind it mints is accepted by
//! Backstage's own `httpAuth` with the expected principal, and broken tokens are refused with
//! Backstage's own status. These are the reference outcomes the broker's verifier must match.

use serde_json::{Value, json};

use crate::backstage_support::{
    self as bs, Backstage, KEYS_SECRET, KEYS_SUBJECT, LEGACY_SECRET, LEGACY_SUBJECT,
    RESTRICTED_TOKEN, RESTRICTED_VERDICT_SUBJECT, RESTRICTED_VERDICT_TOKEN, STATIC_SUBJECT,
    STATIC_TOKEN, VERDICT_PLUGIN,
};

/// Asserts a refusal with Backstage's status and message.
fn refused(v: &Value, status: u16, message: &str) {
    assert_eq!(v["status"], json!(status), "{v}");
    assert_eq!(v["message"], json!(message), "{v}");
}

#[actix_web::test]
async fn user_token_is_accepted_as_that_user() {
    let b = Backstage::shared();
    let token = b.user_token("alice").await;
    let (header, payload) = bs::decode_jws(&token);
    assert_eq!(header["typ"], "vnd.backstage.user");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(payload["sub"], "user:default/alice");
    assert_eq!(payload["aud"], "backstage");
    assert_eq!(payload["iss"], json!(format!("{}/api/auth", b.base_url())));
    assert!(payload["uip"].is_string(), "{payload}");

    let v = b.verdict(&token).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "user");
    assert_eq!(v["userEntityRef"], "user:default/alice");
    assert!(v.get("actor").is_none(), "{v}");
}

#[actix_web::test]
async fn any_user_name_or_entity_ref_can_be_minted() {
    let b = Backstage::shared();
    for (user, want) in [
        ("someone-new.1", "user:default/someone-new.1"),
        ("user:other/bob", "user:other/bob"),
    ] {
        let v = b.verdict(&b.user_token(user).await).await;
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["userEntityRef"], want, "{v}");
    }
}

#[actix_web::test]
async fn limited_user_token_needs_limited_access() {
    let b = Backstage::shared();
    let token = b.limited_user_token("alice").await;
    let (header, payload) = bs::decode_jws(&token);
    assert_eq!(header["typ"], "vnd.backstage.limited-user");
    assert_eq!(
        payload
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        // (serde_json sorts keys; Backstage issues them as sub, iat, exp.)
        Some(vec!["exp".to_string(), "iat".into(), "sub".into()])
    );
    // Default route: refused. A route with allowLimitedAccess: the user.
    refused(&b.verdict(&token).await, 401, "Illegal limited user token");
    let v = b.verdict_limited(&token).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "user");
    assert_eq!(v["userEntityRef"], "user:default/alice");
}

#[actix_web::test]
async fn plugin_token_is_the_minting_plugin() {
    let b = Backstage::shared();
    let token = b.plugin_token(VERDICT_PLUGIN).await;
    let (header, payload) = bs::decode_jws(&token);
    assert_eq!(header["typ"], "vnd.backstage.plugin");
    assert_eq!(payload["sub"], "minter");
    assert_eq!(payload["aud"], "verdict");
    assert!(payload.get("obo").is_none(), "{payload}");

    let v = b.verdict(&token).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "service");
    assert_eq!(v["subject"], "plugin:minter");
}

#[actix_web::test]
async fn obo_token_is_the_user_with_the_plugin_as_actor() {
    let b = Backstage::shared();
    let token = b.obo_token("alice", VERDICT_PLUGIN).await;
    let (_, payload) = bs::decode_jws(&token);
    let (obo_header, obo) = bs::decode_jws(payload["obo"].as_str().expect("obo claim"));
    assert_eq!(obo_header["typ"], "vnd.backstage.limited-user");
    assert_eq!(obo["sub"], "user:default/alice");

    let v = b.verdict(&token).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "user");
    assert_eq!(v["userEntityRef"], "user:default/alice");
    assert_eq!(
        v["actor"],
        json!({"type": "service", "subject": "plugin:minter"})
    );
}

#[actix_web::test]
async fn external_access_static_and_restrictions() {
    let b = Backstage::shared();
    let v = b.verdict(STATIC_TOKEN).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["type"], "service");
    assert_eq!(v["subject"], STATIC_SUBJECT);
    assert!(v.get("accessRestrictions").is_none(), "{v}");

    // Restricted to `catalog`: refused by `verdict`.
    refused(
        &b.verdict(RESTRICTED_TOKEN).await,
        403,
        "This token's access is restricted to plugin(s) 'catalog'",
    );
    // Restricted to `verdict` with a permission and action: accepted, restrictions attached.
    let v = b.verdict(RESTRICTED_VERDICT_TOKEN).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["subject"], RESTRICTED_VERDICT_SUBJECT);
    assert_eq!(
        v["accessRestrictions"],
        json!({"permissionNames": ["harness.thing.read"], "permissionAttributes": {"action": ["read"]}})
    );
    // Exact match only.
    refused(
        &b.verdict(&format!("{STATIC_TOKEN}x")).await,
        401,
        "Illegal token",
    );
}

#[actix_web::test]
async fn legacy_hs256_tokens() {
    let b = Backstage::shared();
    let now = bs::now_secs();
    let valid = json!({"sub": "backstage-server", "exp": now + 3600});

    let v = b.verdict(&bs::legacy_token(LEGACY_SECRET, &valid)).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["subject"], LEGACY_SUBJECT);
    // backend.auth.keys: Backstage's fixed subject.
    let v = b.verdict(&bs::legacy_token(KEYS_SECRET, &valid)).await;
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["subject"], KEYS_SUBJECT);

    // Wrong key: no handler matches.
    let wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw";
    refused(
        &b.verdict(&bs::legacy_token(wrong, &valid)).await,
        401,
        "Illegal token",
    );
    // Expired with the right key: jose's error escapes the legacy handler -> 500.
    let expired = json!({"sub": "backstage-server", "exp": now - 10});
    let v = b.verdict(&bs::legacy_token(LEGACY_SECRET, &expired)).await;
    assert_eq!(v["status"], 500, "{v}");
    // Another subject: the legacy handler does not apply.
    let other = json!({"sub": "backstage-plugin", "exp": now + 3600});
    refused(
        &b.verdict(&bs::legacy_token(LEGACY_SECRET, &other)).await,
        401,
        "Illegal token",
    );
}

#[actix_web::test]
async fn broken_tokens_are_refused_by_backstage() {
    let b = Backstage::shared();
    let user = b.user_token("alice").await;
    let plugin = b.plugin_token(VERDICT_PLUGIN).await;
    let obo = b.obo_token("alice", VERDICT_PLUGIN).await;

    // Tampered signatures.
    refused(
        &b.verdict(&bs::tamper_signature(&user)).await,
        401,
        "Failed user token verification",
    );
    refused(
        &b.verdict(&bs::tamper_signature(&plugin)).await,
        401,
        "Failed plugin token verification",
    );
    refused(
        &b.verdict(&bs::tamper_signature(&obo)).await,
        401,
        "Failed plugin token verification",
    );
    // Tampered payload (alice -> bob) under alice's signature.
    let (_, mut payload) = bs::decode_jws(&user);
    payload["sub"] = json!("user:default/bob");
    refused(
        &b.verdict(&bs::replace_payload(&user, &payload)).await,
        401,
        "Failed user token verification",
    );

    // Expired: really signed by Backstage with its issuing clock two hours back.
    let expired_user = b.mint_ago("user-token", &[("user", "alice")], 7200).await;
    assert!(
        bs::decode_jws(&expired_user).1["exp"]
            .as_u64()
            .expect("exp")
            < bs::now_secs()
    );
    refused(
        &b.verdict(&expired_user).await,
        401,
        "Failed user token verification",
    );
    let expired_limited = b
        .mint_ago("limited-user-token", &[("user", "alice")], 7200)
        .await;
    refused(
        &b.verdict_limited(&expired_limited).await,
        401,
        "Failed user token verification",
    );
    let expired_plugin = b
        .mint_ago("plugin-token", &[("target", VERDICT_PLUGIN)], 7200)
        .await;
    refused(
        &b.verdict(&expired_plugin).await,
        401,
        "Failed plugin token verification",
    );
    let expired_obo = b
        .mint_ago(
            "obo-token",
            &[("user", "alice"), ("target", VERDICT_PLUGIN)],
            7200,
        )
        .await;
    refused(
        &b.verdict(&expired_obo).await,
        401,
        "Failed plugin token verification",
    );

    // Wrong audience: plugin tokens for another plugin.
    for target in ["catalog", "token-broker"] {
        refused(
            &b.verdict(&b.plugin_token(target).await).await,
            401,
            "Failed plugin token verification",
        );
        refused(
            &b.verdict(&b.obo_token("alice", target).await).await,
            401,
            "Failed plugin token verification",
        );
    }

    // Not a token at all / no credentials.
    refused(&b.verdict("not-a-token-at-all").await, 401, "Illegal token");
    refused(
        &b.verdict_at("whoami", None).await,
        401,
        "Missing credentials",
    );
}

#[actix_web::test]
async fn jwks_endpoints_publish_the_signing_keys() {
    let b = Backstage::shared();
    let user = b.user_token("alice").await;
    let plugin = b.plugin_token(VERDICT_PLUGIN).await;
    for (token, url) in [
        (&user, b.auth_jwks_url()),
        (&plugin, b.plugin_jwks_url("minter")),
    ] {
        let kid = bs::decode_jws(token).0["kid"].clone();
        let jwks = b.get_json(&url).await;
        let key = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
            .unwrap_or_else(|| panic!("{url} lacks kid {kid}: {jwks}"));
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
    }
    // A plugin that never issued a token publishes no keys.
    let jwks = b.get_json(&b.plugin_jwks_url(VERDICT_PLUGIN)).await;
    assert_eq!(jwks, json!({"keys": []}));
}
