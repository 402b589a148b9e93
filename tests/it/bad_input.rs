//! Bad input gets a clear 4xx RFC 6749-style JSON answer, never a panic, and nothing reaches
//! Keycloak's token endpoint.

use base64::Engine;
use serde_json::json;

use crate::support::*;

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn realm_kid(token: &str) -> String {
    let h = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

async fn expect_error(r: reqwest::Response, status: u16, error: &str, what: &str) {
    let s = r.status().as_u16();
    let ct = header(&r, "content-type");
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    assert_eq!(s, status, "{what}: {body}");
    assert!(
        ct.starts_with("application/json"),
        "{what}: content-type {ct}"
    );
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}: {body}"
    );
}

#[actix_web::test]
async fn malformed_requests_are_refused_before_keycloak() {
    let env = start(Opts {
        max_body: 4096,
        ..Opts::default()
    })
    .await;
    let alice = env.login("alice").await;
    let url = format!("{}/v1/token", env.url);
    let post = |body: Vec<u8>, ct: &'static str| {
        env.http
            .post(&url)
            .bearer_auth(STATIC_TOKEN)
            .header("X-Forwarded-Access-Token", &alice)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let form = "application/x-www-form-urlencoded";
    let te = format!(
        "grant_type={}",
        url::form_urlencoded::byte_serialize(TE.as_bytes()).collect::<String>()
    );

    expect_error(
        post(b"{\"grant_type\":1}".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "invalid_request",
        "json body",
    )
    .await;
    expect_error(
        post(vec![b'a', b'=', 0xff, 0xfe], form).await.unwrap(),
        400,
        "invalid_request",
        "non-UTF-8",
    )
    .await;
    expect_error(
        post(format!("{te}&audience=%C0%AF").into_bytes(), form)
            .await
            .unwrap(),
        400,
        "invalid_request",
        "overlong UTF-8",
    )
    .await;
    expect_error(
        post(b"audience=kagenti".to_vec(), form).await.unwrap(),
        400,
        "invalid_request",
        "missing grant_type",
    )
    .await;
    expect_error(
        post(b"grant_type=password&audience=kagenti".to_vec(), form)
            .await
            .unwrap(),
        400,
        "unsupported_grant_type",
        "wrong grant",
    )
    .await;
    expect_error(
        post(te.clone().into_bytes(), form).await.unwrap(),
        400,
        "invalid_request",
        "missing audience",
    )
    .await;
    expect_error(
        post(
            format!("{te}&audience=kagenti&audience=sonataflow").into_bytes(),
            form,
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
        "duplicated audience",
    )
    .await;
    expect_error(
        post(format!("{te}&{te}&audience=kagenti").into_bytes(), form)
            .await
            .unwrap(),
        400,
        "invalid_request",
        "duplicated grant_type",
    )
    .await;
    expect_error(
        post(format!("{te}&audience=nope").into_bytes(), form)
            .await
            .unwrap(),
        400,
        "invalid_target",
        "unknown target",
    )
    .await;
    expect_error(
        post(
            format!("{te}&audience=kagenti&scope=admin").into_bytes(),
            form,
        )
        .await
        .unwrap(),
        400,
        "invalid_scope",
        "scope not allowed",
    )
    .await;
    expect_error(
        post(
            format!("{te}&audience=kagenti&requested_token_type=urn:x").into_bytes(),
            form,
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
        "requested type",
    )
    .await;
    expect_error(
        post(
            format!("{te}&audience=kagenti&actor_token=x").into_bytes(),
            form,
        )
        .await
        .unwrap(),
        400,
        "invalid_request",
        "actor_token",
    )
    .await;
    let big = format!("{te}&audience=kagenti&pad={}", "x".repeat(5000));
    expect_error(
        post(big.into_bytes(), form).await.unwrap(),
        413,
        "invalid_request",
        "oversized body",
    )
    .await;
    let flood: String = (0..40).map(|i| format!("&p{i}=1")).collect();
    expect_error(
        post(format!("{te}&audience=kagenti{flood}").into_bytes(), form)
            .await
            .unwrap(),
        400,
        "invalid_request",
        "too many parameters",
    )
    .await;

    // subject_token rules.
    let r = env
        .token(
            Some(STATIC_TOKEN),
            None,
            &[
                ("grant_type", TE),
                ("audience", "kagenti"),
                ("subject_token", &alice),
            ],
        )
        .await;
    expect_error(r, 400, "invalid_request", "subject_token without type").await;
    let r = env
        .token(
            Some(STATIC_TOKEN),
            None,
            &[
                ("grant_type", TE),
                ("audience", "kagenti"),
                ("subject_token", &alice),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
            ],
        )
        .await;
    expect_error(r, 400, "invalid_request", "subject_token_type id_token").await;
    let bob = env.login("bob").await;
    let r = env
        .token(
            Some(STATIC_TOKEN),
            Some(&alice),
            &[
                ("grant_type", TE),
                ("audience", "kagenti"),
                ("subject_token", &bob),
                ("subject_token_type", AT),
            ],
        )
        .await;
    expect_error(r, 400, "invalid_request", "header and form disagree").await;
    let r = env
        .http
        .post(&url)
        .bearer_auth(STATIC_TOKEN)
        .header("X-Forwarded-Access-Token", &alice)
        .header("X-Forwarded-Access-Token", &bob)
        .form(&[("grant_type", TE), ("audience", "kagenti")])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request", "duplicated user-token header").await;

    // Other methods and paths.
    let r = env.http.get(&url).send().await.unwrap();
    // RFC 9110 §15.5.6: a 405 lists the allowed methods.
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    expect_error(r, 405, "invalid_request", "GET").await;
    let r = env
        .http
        .get(format!("{}/v1/backchannel-logout", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("allow").unwrap(), "POST");
    expect_error(r, 405, "invalid_request", "GET").await;
    let r = env
        .http
        .get(format!("{}/nowhere", env.url))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "not_found", "unknown path").await;
    // The proxy's prefix is a path segment: neither `/v1/proxy` itself nor `/v1/proxyx/...`
    // reaches the proxy (no credential is asked for: the router answers).
    for path in ["/v1/proxy", "/v1/proxyx/kagenti/a"] {
        let r = env
            .http
            .get(format!("{}{path}", env.url))
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "not_found", path).await;
    }

    assert_eq!(env.exchanges(), 0, "nothing reached Keycloak");
    assert_eq!(env.client_credentials(), 0, "nothing reached Keycloak");
    env.stop().await;
}

#[actix_web::test]
async fn caller_authentication_fails_closed() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let form = [("grant_type", TE), ("audience", "kagenti")];
    // Unknown static token, even with a valid user token: 401, not a user-authenticated call.
    let r = env
        .token(Some("test-static-token-2"), Some(&alice), &form)
        .await;
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=\"token-broker\""),
        "{challenge}"
    );
    expect_error(r, 401, "invalid_client", "unknown static token").await;
    // A prefix of the real token is not the token.
    let r = env
        .token(Some(&STATIC_TOKEN[..STATIC_TOKEN.len() - 1]), None, &form)
        .await;
    expect_error(r, 401, "invalid_client", "prefix").await;
    // No credential at all.
    let r = env.token(None, None, &form).await;
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer realm=\"token-broker\""
    );
    expect_error(r, 401, "invalid_client", "no credential").await;
    assert_eq!(env.exchanges() + env.client_credentials(), 0);
    env.stop().await;
}

#[actix_web::test]
async fn bad_user_tokens_are_refused_locally() {
    // The user-token-alone half below needs userToken.allowWithoutCaller (opt-in, issue 9).
    let env = start_with_yaml(Opts::default(), allow_without_caller).await;
    let other_idp = token_broker_devidp::start(
        token_broker_devidp::DevIdpConfig::contract(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let alice = env.login("alice").await;
    let good = claims(&alice);
    let kid = realm_kid(&alice);
    let now = now();

    let mut cases: Vec<(&str, String)> = Vec::new();
    cases.push(("garbage", "not-a-jwt".into()));
    cases.push(("two segments", "a.b".into()));
    let none_payload =
        json!({"iss": env.idp.issuer(), "sub": good["sub"], "exp": now + 300, "typ": "Bearer"});
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&none_payload)
        ),
    ));
    cases.push((
        "alg none with kid",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": kid})),
            b64(&none_payload)
        ),
    ));
    // HS256 signed with the realm key's public modulus as the HMAC secret (alg confusion).
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &none_payload,
        &jsonwebtoken::EncodingKey::from_secret(kid.as_bytes()),
    )
    .unwrap();
    cases.push(("HS256 with the realm kid", hs));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("http://evil.example/realms/dev");
    cases.push(("wrong issuer", env.idp.sign_jwt(&wrong_iss)));
    let mut expired = good.clone();
    expired["exp"] = json!(now - 10);
    expired["iat"] = json!(now - 400);
    cases.push(("expired", env.idp.sign_jwt(&expired)));
    let mut future = good.clone();
    future["nbf"] = json!(now + 120);
    cases.push(("not yet valid", env.idp.sign_jwt(&future)));
    let mut id_token = good.clone();
    id_token["typ"] = json!("ID");
    cases.push(("ID token", env.idp.sign_jwt(&id_token)));
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", env.idp.sign_jwt(&no_sub)));
    cases.push(("another IdP's key", other_idp.sign_jwt(&good)));
    // Tampered payload with the original signature.
    let parts_: Vec<&str> = alice.split('.').collect();
    let mut tampered = good.clone();
    tampered["preferred_username"] = json!("bob");
    cases.push((
        "tampered",
        format!("{}.{}.{}", parts_[0], b64(&tampered), parts_[2]),
    ));
    cases.push(("huge", "a".repeat(40_000)));

    for (what, token) in &cases {
        // With a static caller: the subject token is bad, 400.
        let r = env.exchange(Some(token), "kagenti").await;
        expect_error(r, 400, "invalid_request", what).await;
        // As the only credential: 401 with an invalid_token challenge.
        let r = env
            .token(
                None,
                Some(token),
                &[("grant_type", TE), ("audience", "kagenti")],
            )
            .await;
        let s = r.status().as_u16();
        if *what != "huge" {
            assert!(
                header(&r, "www-authenticate").contains("invalid_token"),
                "{what}"
            );
            expect_error(r, 401, "invalid_client", what).await;
        } else {
            assert_eq!(s, 400, "{what}");
        }
    }
    assert_eq!(
        env.exchanges() + env.client_credentials(),
        0,
        "nothing reached Keycloak"
    );
    other_idp.stop().await;
    env.stop().await;
}

/// A loopback listener that only counts connections: a `jku`/`x5u`/`kid` URL pointing here
/// must never be fetched.
fn connection_counter() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = n.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    (url, n)
}

#[actix_web::test]
async fn hostile_jose_headers_claims_and_http_headers_are_refused_locally() {
    use crate::backstage::EsKey;
    let env = start_default().await;
    let (evil, hits) = connection_counter();
    let alice = env.login("alice").await;
    let good = claims(&alice);
    let kid = realm_kid(&alice);
    let now = now();
    let attacker = EsKey::new();
    let iss = env.idp.issuer();
    let kc_payload = json!({"iss": iss, "sub": good["sub"], "exp": now + 300, "typ": "Bearer",
        "azp": "dev-frontend", "aud": "token-broker", "sid": good["sid"]})
    .to_string();
    let bs_payload =
        json!({"sub": "catalog", "aud": "token-broker", "iat": now, "exp": now + 300}).to_string();
    let jwk = attacker.jwk();
    let ak = attacker.kid.clone();
    // (name, JOSE header) — signed by the attacker's own key.
    let headers: Vec<(&str, serde_json::Value)> = vec![
        (
            "kid path traversal",
            json!({"alg": "ES256", "kid": "../../../../etc/passwd"}),
        ),
        (
            "kid URL",
            json!({"alg": "ES256", "kid": format!("{evil}/certs")}),
        ),
        ("kid with NUL", json!({"alg": "ES256", "kid": "a\u{0}b"})),
        ("kid huge", json!({"alg": "ES256", "kid": "k".repeat(8000)})),
        (
            "kid not a string",
            json!({"alg": "ES256", "kid": {"$ref": "x"}}),
        ),
        (
            "realm kid, attacker key",
            json!({"alg": "ES256", "kid": kid}),
        ),
        (
            "realm kid, RS256 claimed, ES256 signature",
            json!({"alg": "RS256", "kid": kid}),
        ),
        (
            "jku to attacker JWKS",
            json!({"alg": "ES256", "kid": ak, "jku": format!("{evil}/jwks")}),
        ),
        (
            "x5u to attacker",
            json!({"alg": "ES256", "kid": ak, "x5u": format!("{evil}/cert.pem")}),
        ),
        (
            "embedded jwk",
            json!({"alg": "ES256", "kid": ak, "jwk": jwk}),
        ),
        (
            "crit extension",
            json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1}),
        ),
        ("alg None (case)", json!({"alg": "None", "kid": kid})),
        (
            "alg HS256 with realm kid",
            json!({"alg": "HS256", "kid": kid}),
        ),
    ];
    let mut kc_cases: Vec<(String, String)> = Vec::new();
    let mut bs_cases: Vec<(String, String)> = Vec::new();
    for (name, h) in &headers {
        kc_cases.push((
            name.to_string(),
            attacker.sign_raw(&h.to_string(), &kc_payload),
        ));
        let mut bh = h.clone();
        bh["typ"] = json!("vnd.backstage.plugin");
        bs_cases.push((
            name.to_string(),
            attacker.sign_raw(&bh.to_string(), &bs_payload),
        ));
    }
    // Claims signed by the realm key itself: validly signed, still refused.
    let mut nested = String::new();
    for _ in 0..2000 {
        nested.push('[');
    }
    for _ in 0..2000 {
        nested.push(']');
    }
    let mut deep = good.clone();
    deep["deep"] = serde_json::from_str::<serde_json::Value>("[[[[1]]]]").unwrap();
    let deep_token = env.idp.sign_jwt(&deep).replace(
        &b64(&deep),
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(deep.to_string().replace("[[[[1]]]]", &nested)),
    );
    kc_cases.push(("deeply nested claims (signature broken)".into(), deep_token));
    let mut huge = good.clone();
    huge["blob"] = json!("x".repeat(40_000));
    kc_cases.push(("huge claims, realm-signed".into(), env.idp.sign_jwt(&huge)));
    let mut wide = good.clone();
    for i in 0..3000 {
        wide[format!("c{i}")] = json!(i);
    }
    kc_cases.push((
        "thousands of claims, realm-signed".into(),
        env.idp.sign_jwt(&wide),
    ));
    let mut not_obj = String::from(&b64(&json!({"alg": "RS256", "kid": kid})));
    not_obj.push_str(".WzEsMiwzXQ.AAAA"); // payload `[1,2,3]`
    kc_cases.push(("payload not an object".into(), not_obj));

    for (what, token) in &kc_cases {
        let r = env.exchange(Some(token), "kagenti").await;
        expect_error(r, 400, "invalid_request", what).await;
    }
    for (what, token) in &bs_cases {
        let r = env
            .token(
                Some(token),
                None,
                &[("grant_type", TE), ("audience", "kagenti")],
            )
            .await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 401, "caller {what}: {body}");
        assert!(!body.to_string().contains(token.as_str()), "{what}: echoed");
    }

    // HTTP-level: huge headers, non-UTF-8 credentials.
    let url = format!("{}/v1/token", env.url);
    let form = [("grant_type", TE), ("audience", "kagenti")];
    let r = env
        .http
        .post(&url)
        .bearer_auth(STATIC_TOKEN)
        .header("X-Junk", "j".repeat(64 * 1024))
        .form(&form)
        .send()
        .await;
    // 431 from server.maxHeaderBytes (or the connection refused by actix-http itself).
    if let Ok(r) = r {
        expect_error(r, 431, "invalid_request", "64 KiB header").await;
    }
    let many = (0..200).fold(
        env.http.post(&url).bearer_auth(STATIC_TOKEN).form(&form),
        |rb, i| rb.header(format!("x-h{i}"), "v"),
    );
    // Above actix-http's limit of 96 headers: refused by the HTTP layer (400 or a reset).
    let s = many
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(400);
    assert!(s == 431 || s == 400, "200 headers: {s}");
    let bad_utf8 = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe\xfd").unwrap();
    let r = env
        .http
        .post(&url)
        .header("authorization", bad_utf8)
        .form(&form)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_client", "non-UTF-8 Authorization").await;
    let bad_user = reqwest::header::HeaderValue::from_bytes(b"ey\xff.\xfe.\xfd").unwrap();
    let r = env
        .http
        .post(&url)
        .bearer_auth(STATIC_TOKEN)
        .header("X-Forwarded-Access-Token", bad_user)
        .form(&form)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request", "non-UTF-8 user token").await;

    assert_eq!(
        env.exchanges() + env.client_credentials(),
        0,
        "nothing reached Keycloak"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no jku/x5u/kid URL was fetched"
    );
    env.stop().await;
}
