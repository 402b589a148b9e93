//! Backstage callers over real HTTP: tokens minted in Rust exactly in Backstage's shapes
//! (docs/reference/backstage-tokens.md §1, §3: ES256, header and payload key order as issued) and a
//! small
//! test server on 127.0.0.1:0 playing the Backstage backend's JWKS endpoints
//! (`/api/{plugin}/.backstage/auth/v1/jwks.json`, `/api/auth/.well-known/jwks.json`).

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::support::*;

/// One ES256 key as a Backstage plugin or the auth backend holds it.
pub(crate) struct EsKey {
    pub(crate) kid: String,
    pair: EcdsaKeyPair,
}

impl EsKey {
    pub(crate) fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EsKey {
            kid: uuid::Uuid::new_v4().to_string(),
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap(),
        }
    }

    /// The JWK exactly as Backstage publishes it (§2.1): no `use`, no `key_ops`.
    pub(crate) fn jwk(&self) -> serde_json::Value {
        let p = self.pair.public_key().as_ref();
        serde_json::json!({"kty": "EC", "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&p[33..65]), "crv": "P-256", "kid": self.kid, "alg": "ES256"})
    }

    /// Signs raw header and payload JSON text (key order preserved).
    pub(crate) fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    pub(crate) fn user_token(&self, sub: &str, iss: &str, exp: u64) -> String {
        let iat = exp - 3600;
        self.sign_raw(
            &format!(r#"{{"typ":"vnd.backstage.user","alg":"ES256","kid":"{}"}}"#, self.kid),
            &format!(
                r#"{{"iss":"{iss}","sub":"{sub}","aud":"backstage","iat":{iat},"exp":{exp},"uip":"x"}}"#
            ),
        )
    }

    pub(crate) fn limited_token(&self, sub: &str, exp: u64) -> String {
        let iat = exp - 3600;
        self.sign_raw(
            &format!(
                r#"{{"typ":"vnd.backstage.limited-user","alg":"ES256","kid":"{}"}}"#,
                self.kid
            ),
            &format!(r#"{{"sub":"{sub}","iat":{iat},"exp":{exp}}}"#),
        )
    }

    pub(crate) fn plugin_token(&self, sub: &str, aud: &str, exp: u64, obo: Option<&str>) -> String {
        let iat = now();
        let obo = obo.map(|o| format!(r#","obo":"{o}""#)).unwrap_or_default();
        self.sign_raw(
            &format!(
                r#"{{"typ":"vnd.backstage.plugin","alg":"ES256","kid":"{}"}}"#,
                self.kid
            ),
            &format!(r#"{{"sub":"{sub}","aud":"{aud}","iat":{iat},"exp":{exp}{obo}}}"#),
        )
    }
}

/// The fake Backstage backend: per-plugin JWKS and the auth backend JWKS.
pub(crate) struct FakeBackstage {
    pub(crate) url: String,
    pub(crate) server: actix_web::dev::ServerHandle,
}

pub(crate) async fn start_backstage(sets: HashMap<String, serde_json::Value>) -> FakeBackstage {
    let sets = Arc::new(sets);
    let server = HttpServer::new(move || {
        let s = sets.clone();
        let s2 = sets.clone();
        App::new()
            .route(
                "/api/auth/.well-known/jwks.json",
                web::get().to(move || {
                    let s = s.clone();
                    async move { HttpResponse::Ok().json(&s["auth"]) }
                }),
            )
            .route(
                "/api/{plugin}/.backstage/auth/v1/jwks.json",
                web::get().to(move |p: web::Path<String>| {
                    let s = s2.clone();
                    async move {
                        match s.get(p.as_str()) {
                            Some(v) => HttpResponse::Ok().json(v),
                            None => HttpResponse::NotFound().finish(),
                        }
                    }
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
    }
}

struct Keys {
    auth: EsKey,
    catalog: EsKey,
    scaffolder: EsKey,
}

async fn start_env() -> (Env, FakeBackstage, Keys) {
    start_env_with(|y| y).await
}

/// Like [`start_env`], with the generated YAML further rewritten by `edit`.
async fn start_env_with(edit: impl FnOnce(String) -> String) -> (Env, FakeBackstage, Keys) {
    let keys = Keys {
        auth: EsKey::new(),
        catalog: EsKey::new(),
        scaffolder: EsKey::new(),
    };
    let sets = HashMap::from([
        (
            "auth".to_owned(),
            serde_json::json!({"keys": [keys.auth.jwk()]}),
        ),
        (
            "catalog".to_owned(),
            serde_json::json!({"keys": [keys.catalog.jwk()]}),
        ),
        (
            "scaffolder".to_owned(),
            serde_json::json!({"keys": [keys.scaffolder.jwk()]}),
        ),
        ("augment".to_owned(), serde_json::json!({"keys": []})),
    ]);
    let bs = start_backstage(sets).await;
    let env = start_with_yaml(Opts::default(), |yaml| {
        edit(yaml.replace(
            "backend:\n  auth:\n",
            &format!(
                "backend:\n  baseUrl: {}\n  auth:\n    keys:\n      - secret: bGVnYWN5LXNlY3JldA\n",
                bs.url
            ),
        ))
    })
    .await;
    (env, bs, keys)
}

async fn call(env: &Env, bearer: &str, target: &str) -> (u16, String, serde_json::Value) {
    let r = env
        .token(
            Some(bearer),
            None,
            &[("grant_type", TE), ("audience", target)],
        )
        .await;
    let (status, id, _, body) = parts(r).await;
    (status, id, body)
}

#[actix_web::test]
async fn plugin_and_user_tokens_are_verified_like_backstage() {
    let (env, bs, k) = start_env().await;
    let exp = now() + 3600;

    // A plugin as itself → the broker's service token on a strict target that allows service
    // principals (`jobs`: fallback deny, servicePrincipals service_account) ...
    let catalog = k.catalog.plugin_token("catalog", "token-broker", exp, None);
    let (s, id, body) = call(&env, &catalog, "jobs").await;
    assert_eq!((s, id.as_str()), (200, "service"), "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["preferred_username"], "service-account-token-broker");
    assert_eq!(
        c["aud"],
        serde_json::json!(["kagenti-api", "sonataflow", "account"])
    );
    // ... and a 401 on a strict target that does not (`sonataflow`: servicePrincipals defaults
    // to its fallback, deny).
    let (s, id, _) = call(&env, &catalog, "sonataflow").await;
    assert_eq!((s, id.as_str()), (401, ""));

    // On behalf of alice, without a userMapping: the target's fallback policy.
    let limited = k.auth.limited_token("user:default/alice", exp);
    let obo = k
        .catalog
        .plugin_token("catalog", "token-broker", exp, Some(&limited));
    let (s, _, body) = call(&env, &obo, "sonataflow").await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("sonataflow")
    );
    let (s, id, _) = call(&env, &obo, "kagenti").await;
    assert_eq!((s, id.as_str()), (200, "service"));

    // A full user token is accepted; its principal is the user.
    let alice = k
        .auth
        .user_token("user:default/alice", &format!("{}/api/auth", bs.url), exp);
    let (s, id, _) = call(&env, &alice, "kagenti").await;
    assert_eq!((s, id.as_str()), (200, "service"));

    // Allow-lists see the acting plugin: only plugin:augment may use augment-only.
    let (s, _, body) = call(&env, &catalog, "augment-only").await;
    assert_eq!(s, 403, "{body}");

    // The probe of older callers.
    let r = env
        .http
        .get(format!("{}/.backstage/auth/v1/jwks.json", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"keys": []})
    );
    let r = env
        .http
        .get(format!(
            "{}/api/token-broker/.backstage/auth/v1/jwks.json",
            env.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn every_refusal_case_is_refused_with_backstages_status() {
    let (env, bs, k) = start_env().await;
    let exp = now() + 3600;
    let good = k.catalog.plugin_token("catalog", "token-broker", exp, None);
    let mut refusals: Vec<(&str, String, u16)> = Vec::new();

    // Tampered: one payload character changed, signature kept.
    let mut parts3: Vec<String> = good.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts3[1]).unwrap()).unwrap();
    parts3[1] = URL_SAFE_NO_PAD.encode(payload.replace("catalog", "catalof"));
    refusals.push(("tampered", parts3.join("."), 401));
    // Tampered signature.
    let mut sig = good.clone();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    refusals.push(("tampered signature", sig, 401));
    refusals.push((
        "expired",
        k.catalog
            .plugin_token("catalog", "token-broker", now() - 1, None),
        401,
    ));
    refusals.push((
        "wrong aud",
        k.catalog.plugin_token("catalog", "catalog", exp, None),
        401,
    ));
    // Signed by scaffolder's key but claiming to be catalog: the key is not in catalog's JWKS.
    refusals.push((
        "wrong issuer plugin",
        k.scaffolder
            .plugin_token("catalog", "token-broker", exp, None),
        401,
    ));
    let unknown = EsKey::new();
    refusals.push((
        "unknown kid",
        unknown.plugin_token("catalog", "token-broker", exp, None),
        401,
    ));
    refusals.push((
        "forbidden subject format",
        k.catalog
            .plugin_token("../catalog", "token-broker", exp, None),
        401,
    ));
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"vnd.backstage.plugin","alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"catalog","aud":"token-broker","iat":1,"exp":{exp}}}"#
        ))
    );
    refusals.push(("alg none", none, 401));
    // HS256 "signed" with catalog's public key bytes as the HMAC secret.
    let jwk = k.catalog.jwk();
    let secret = serde_json::to_vec(&jwk).unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            typ: Some("vnd.backstage.plugin".into()),
            kid: Some(k.catalog.kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &serde_json::json!({"sub": "catalog", "aud": "token-broker", "iat": now(), "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    refusals.push(("HS256 with public key", hs, 401));
    refusals.push((
        "limited user token",
        k.auth.limited_token("user:default/alice", exp),
        401,
    ));
    refusals.push((
        "user token signed by a plugin key",
        k.catalog.user_token("user:default/alice", "x", exp),
        401,
    ));
    refusals.push(("restricted caller", RESTRICTED_TOKEN.to_owned(), 403));
    refusals.push(("unknown opaque", "not-a-known-token".to_owned(), 401));

    for (name, token, want) in refusals {
        let (s, id, body) = call(&env, &token, "kagenti").await;
        assert_eq!(s, want, "{name}: {body}");
        assert_eq!(id, "", "{name}");
        let text = body.to_string();
        assert!(!text.contains(&token), "{name}: token echoed");
    }
    assert_eq!(env.client_credentials() + env.exchanges(), 0);

    // Legacy HS256 from backend.auth.keys (ServerTokenManager shape, §3.5).
    let legacy = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "backstage-server", "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"legacy-secret"),
    )
    .unwrap();
    let (s, id, body) = call(&env, &legacy, "jobs").await;
    assert_eq!((s, id.as_str()), (200, "service"), "{body}");
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "backstage-server", "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"other-secret"),
    )
    .unwrap();
    let (s, _, _) = call(&env, &wrong, "sonataflow").await;
    assert_eq!(s, 401);
    bs.server.stop(true).await;
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// userMapping: the broker's RFC 7523 assertion (docs/reference/keycloak-token-exchange.md §6) and
// legacy V1
// naked impersonation (§5), against the dev IdP's emulation of both.

const ASSERTION_ISSUER: &str = "http://token-broker.test";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The Backstage environment plus an `assertion` signer and two targets with a user mapping
/// (fallback `service_account`, so a silent service token would show), and the dev IdP set up
/// like `token-broker dev` does: the broker's issuer + JWKS as an identity provider allowed for
/// `token-broker`, alice and bob linked as `user:default/<name>`.
async fn start_mapping_env() -> (Env, FakeBackstage, Keys) {
    let (env, bs, keys) = start_env_with(|yaml| {
        yaml.replace(
            "cache:\n",
            &format!("assertion:\n  issuer: {ASSERTION_ISSUER}\n  lifetime: 2m\ncache:\n"),
        )
        .replace(
            "targets:\n",
            "targets:\n  kagenti-jwt:\n    audience: kagenti-api\n    fallback: service_account\n    userMapping: jwt_authorization_grant\n  kagenti-imp:\n    audience: kagenti-api\n    fallback: service_account\n    userMapping: impersonation\n",
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
    (env, bs, keys)
}

/// A plugin token of `catalog` on behalf of `user` (a fresh credential at every call).
fn obo_for(k: &Keys, user: &str) -> String {
    let exp = now() + 3600;
    let limited = k.auth.limited_token(user, exp);
    k.catalog
        .plugin_token("catalog", "token-broker", exp, Some(&limited))
}

/// The last `assertion` the broker sent to the IdP.
fn last_assertion(env: &Env) -> String {
    let r = env
        .idp
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.grant_type.as_deref() == Some(JWT_BEARER))
        .expect("a jwt-bearer request");
    r.form
        .iter()
        .find(|(k, _)| k == "assertion")
        .map(|(_, v)| v.clone())
        .expect("an assertion")
}

#[actix_web::test]
async fn jwt_authorization_grant_maps_backstage_users_to_linked_keycloak_users() {
    let (env, bs, k) = start_mapping_env().await;
    let alice_id = env.idp.user_id("alice").unwrap();

    // alice through a plugin → the broker's assertion → alice's own Keycloak token.
    let obo = obo_for(&k, "user:default/alice");
    let (s, id, body) = call(&env, &obo, "kagenti-jwt").await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], alice_id.as_str());
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(
        c["aud"],
        serde_json::json!(["kagenti-api", "sonataflow", "account"])
    );
    assert!(c.get("sid").is_none(), "transient session (§6)");
    assert_eq!(env.idp.count_grant(JWT_BEARER), 1);

    // The assertion as the IdP received it follows §6.
    let assertion = last_assertion(&env);
    let a = claims(&assertion);
    assert_eq!(a["iss"], ASSERTION_ISSUER);
    assert_eq!(a["sub"], "user:default/alice");
    assert_eq!(a["aud"], env.idp.issuer().as_str());
    let (iat, exp) = (a["iat"].as_u64().unwrap(), a["exp"].as_u64().unwrap());
    assert!(exp > iat && exp - iat <= 300, "{a}");
    assert!(a["jti"].is_string());

    // Replaying that assertion is refused: `jti` is single-use.
    let r = env
        .http
        .post(env.idp.token_endpoint())
        .basic_auth("token-broker", Some(BROKER_SECRET))
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Token reuse detected");

    // The same credential again is a cache hit; a new one gets a fresh assertion (new jti).
    // (The replay above is the second recorded jwt-bearer request.)
    let (s, _, _) = call(&env, &obo, "kagenti-jwt").await;
    assert_eq!(s, 200);
    assert_eq!(env.idp.count_grant(JWT_BEARER), 2);
    let (s, id, body) = call(&env, &obo_for(&k, "user:default/alice"), "kagenti-jwt").await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    assert_eq!(env.idp.count_grant(JWT_BEARER), 3);
    assert_ne!(claims(&last_assertion(&env))["jti"], a["jti"]);

    // bob is linked too.
    let (s, _, body) = call(&env, &obo_for(&k, "user:default/bob"), "kagenti-jwt").await;
    assert_eq!(s, 200, "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], env.idp.user_id("bob").unwrap().as_str());

    // A Backstage user with no linked Keycloak user: Keycloak's refusal is passed through,
    // never a silent service token (the target's fallback is service_account).
    let (s, id, body) = call(&env, &obo_for(&k, "user:default/carol"), "kagenti-jwt").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(id, "");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "User not found");
    // A disabled Keycloak user likewise.
    env.idp.set_user_enabled("bob", false);
    let (s, _, body) = call(&env, &obo_for(&k, "user:default/bob"), "kagenti-jwt").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error_description"], "User is not enabled");
    assert_eq!(env.client_credentials(), 0, "no service token was fetched");
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn impersonation_user_mapping_follows_the_v1_switch() {
    let (env, bs, k) = start_mapping_env().await;

    // V1 off (Keycloak's default): V2 declines `requested_subject` and that error is passed
    // through, not replaced by the fallback's service token.
    let (s, id, body) = call(&env, &obo_for(&k, "user:default/alice"), "kagenti-imp").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(id, "");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "Parameter 'requested_subject' is not supported for standard token exchange"
    );
    assert_eq!(env.client_credentials(), 0);

    // V1 on: naked impersonation of alice for the target.
    env.idp.set_token_exchange_v1_enabled(true);
    let (s, id, body) = call(&env, &obo_for(&k, "user:default/alice"), "kagenti-imp").await;
    assert_eq!((s, id.as_str()), (200, "user"), "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], env.idp.user_id("alice").unwrap().as_str());
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(c["aud"], serde_json::json!(["account", "kagenti-api"]));
    let sent = env
        .idp
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.grant_type.as_deref() == Some(TE))
        .unwrap();
    let form: HashMap<_, _> = sent.form.into_iter().collect();
    assert_eq!(form["requested_subject"], "alice");
    assert_eq!(form["requested_token_type"], AT);
    assert!(!form.contains_key("subject_token"));

    // An unknown user: V1's anti-fishing 403, passed through.
    let (s, _, body) = call(&env, &obo_for(&k, "user:default/carol"), "kagenti-imp").await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(body["error_description"], "Client not allowed to exchange");
    assert_eq!(env.client_credentials(), 0);
    bs.server.stop(true).await;
    env.stop().await;
}
