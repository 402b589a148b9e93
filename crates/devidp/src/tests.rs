//! End-to-end tests of the dev IdP over real HTTP (reqwest against a server on 127.0.0.1:0),
//! one assertion of status + `error` + `error_description` per emulated error row of
//! docs/reference/keycloak-token-exchange.md §2, §3.8 and §8.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;

pub(crate) const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
pub(crate) const BROKER_SECRET: &str = "token-broker-dev-secret";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(crate) async fn start_contract() -> DevIdpHandle {
    start(DevIdpConfig::contract(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn post_to(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http().post(url).form(form).send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers().get("cache-control").unwrap(),
        "no-store",
        "token endpoint must be no-store"
    );
    assert_eq!(resp.headers().get("pragma").unwrap(), "no-cache");
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, body)
}

pub(crate) async fn post(idp: &DevIdpHandle, form: &[(&str, &str)]) -> (u16, Value) {
    post_to(&idp.token_endpoint(), form).await
}

/// Token endpoint reached through `localhost` instead of `127.0.0.1`.
fn localhost_token_endpoint(idp: &DevIdpHandle) -> String {
    format!(
        "http://localhost:{}/realms/dev/protocol/openid-connect/token",
        idp.addr().port()
    )
}

pub(crate) async fn password_token_at(
    url: &str,
    client: &str,
    user: &str,
    password: &str,
) -> Value {
    let (status, body) = post_to(
        url,
        &[
            ("grant_type", "password"),
            ("client_id", client),
            ("username", user),
            ("password", password),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn alice_token(idp: &DevIdpHandle) -> String {
    let body = password_token_at(&idp.token_endpoint(), "dev-frontend", "alice", "alice").await;
    body["access_token"].as_str().unwrap().to_owned()
}

pub(crate) async fn exchange_at(url: &str, subject: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", TE),
        ("client_id", "token-broker"),
        ("client_secret", BROKER_SECRET),
        ("subject_token", subject),
        ("subject_token_type", AT),
    ];
    form.extend_from_slice(extra);
    post_to(url, &form).await
}

pub(crate) async fn exchange(
    idp: &DevIdpHandle,
    subject: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    exchange_at(&idp.token_endpoint(), subject, extra).await
}

pub(crate) fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub(crate) fn header(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[track_caller]
pub(crate) fn assert_error(got: &(u16, Value), status: u16, error: &str, description: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], error, "{}", got.1);
    assert_eq!(got.1["error_description"], description, "{}", got.1);
}

#[actix_web::test]
async fn discovery_is_accepted_by_openidconnect_and_jwks_has_both_keys() {
    use openidconnect::core::CoreProviderMetadata;
    use openidconnect::{IssuerUrl, JsonWebKeyId};

    let idp = start_contract().await;
    let client = http();
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(idp.issuer()).unwrap(), &client)
        .await
        .unwrap();
    assert_eq!(meta.issuer().as_str(), idp.issuer());
    assert_eq!(
        meta.token_endpoint().unwrap().as_str(),
        idp.token_endpoint()
    );
    // openidconnect keeps the keys it understands; the RS256 sig key must be among them.
    let sig_kid = idp.shared.keys.sig_kid().to_owned();
    assert!(
        meta.jwks()
            .keys()
            .iter()
            .any(|k| openidconnect::JsonWebKey::key_id(k)
                == Some(&JsonWebKeyId::new(sig_kid.clone())))
    );

    let doc: Value = client
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grants: Vec<&str> = doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    let mut sorted = grants.clone();
    sorted.sort_unstable();
    assert_eq!(grants, sorted, "grant_types_supported is sorted (§1)");
    assert!(grants.contains(&TE));
    assert!(
        grants.contains(&JWT_BEARER),
        "the contract has the §6 feature on"
    );
    assert_eq!(
        doc["subject_types_supported"],
        json!(["public", "pairwise"])
    );
    assert_eq!(
        doc["jwks_uri"],
        format!("{}/protocol/openid-connect/certs", idp.issuer())
    );

    let jwks: Value = client
        .get(meta.jwks_uri().as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (k, alg, use_) in [(&keys[0], "RS256", "sig"), (&keys[1], "RSA-OAEP", "enc")] {
        assert_eq!(k["kty"], "RSA");
        assert_eq!(k["alg"], alg);
        assert_eq!(k["use"], use_);
        for f in ["kid", "n", "e"] {
            assert!(k[f].as_str().is_some_and(|v| !v.is_empty()), "{f}");
        }
    }
    assert_eq!(keys[0]["kid"], sig_kid);
    idp.stop().await;
}

#[actix_web::test]
async fn password_then_exchange_to_kagenti() {
    let idp = start_contract().await;
    let (status, login) = post(
        &idp,
        &[
            ("grant_type", "password"),
            ("client_id", "dev-frontend"),
            ("username", "alice"),
            ("password", "alice"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 300);
    assert_eq!(login["refresh_expires_in"], 1800);
    assert_eq!(login["not-before-policy"], 0);
    assert_eq!(login["scope"], "profile email");
    assert_eq!(
        payload(login["refresh_token"].as_str().unwrap())["typ"],
        "Refresh"
    );
    let subject = login["access_token"].as_str().unwrap();
    let h = header(subject);
    assert_eq!(h["alg"], "RS256");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["kid"], idp.shared.keys.sig_kid());
    let sc = payload(subject);
    assert_eq!(sc["iss"], idp.issuer());
    // Keycloak 26.7.3: the default roles add `account` (and its roles in `resource_access`).
    assert_eq!(sc["aud"], json!(["token-broker", "account"]));
    assert_eq!(
        sc["resource_access"],
        json!({"account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}})
    );
    assert_eq!(sc["azp"], "dev-frontend");
    assert_eq!(sc["typ"], "Bearer");
    assert_eq!(sc["sub"], idp.user_id("alice").unwrap());
    assert_eq!(sc["sid"], login["session_state"]);
    assert_eq!(sc["preferred_username"], "alice");
    assert_eq!(sc["email"], "alice@example.com");
    assert_eq!(sc["name"], "Alice Example");
    assert!(sc["jti"].as_str().unwrap().starts_with("onrtro:"));
    assert!(sc["auth_time"].is_u64());

    let (status, body) = exchange(&idp, subject, &[("audience", "kagenti-api")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], AT);
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["session_state"], sc["sid"]);
    assert!(body.get("refresh_token").is_none());
    let ec = payload(body["access_token"].as_str().unwrap());
    assert_eq!(ec["aud"], "kagenti-api");
    assert_eq!(ec["sub"], sc["sub"]);
    assert_eq!(ec["azp"], "token-broker");
    assert_eq!(ec["sid"], sc["sid"]);
    assert_eq!(ec["preferred_username"], "alice");
    assert!(ec["jti"].as_str().unwrap().starts_with("ntrtte:"));

    // Without `audience`: every audience of the requester's mappers, as an array.
    let (status, body) = exchange(&idp, subject, &[]).await;
    assert_eq!(status, 200, "{body}");
    // Keycloak 26.7.3 keeps the default roles' `account` when several audiences are asked.
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["aud"],
        json!(["kagenti-api", "sonataflow", "account"])
    );

    // HTTP Basic with RFC 6749 §2.3.1 form-encoding (nothing to escape here, but decoded).
    let resp = http()
        .post(idp.token_endpoint())
        .header(
            "authorization",
            format!(
                "Basic {}",
                STANDARD.encode(format!("token-broker:{BROKER_SECRET}"))
            ),
        )
        .form(&[
            ("grant_type", TE),
            ("subject_token", subject),
            ("subject_token_type", AT),
            ("audience", "sonataflow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rec = idp.requests();
    assert_eq!(
        rec.last().unwrap().basic_auth_client_id.as_deref(),
        Some("token-broker")
    );
    assert_eq!(idp.count_grant(TE), 3);
    assert_eq!(idp.count_grant("password"), 1);
    assert_eq!(rec.first().unwrap().status, 200);
    assert!(
        rec.first()
            .unwrap()
            .form
            .contains(&("username".into(), "alice".into()))
    );
    idp.clear_requests();
    assert!(idp.requests().is_empty());
    idp.stop().await;
}

#[actix_web::test]
async fn exchange_variants_scope_lifespan_id_token() {
    let mut config = DevIdpConfig::contract();
    for c in &mut config.clients {
        if c.client_id == "token-broker" {
            c.access_token_lifespan = Some(Duration::from_secs(60));
            c.optional_scopes
                .insert("extra-api".into(), vec!["extra-api".into()]);
        }
    }
    config
        .clients
        .push(DevClient::confidential("extra-api", "x"));
    let idp = start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let subject = alice_token(&idp).await;

    // Optional scope adds its audience (upscoping) and appears in `scope`; lifespan is the
    // requester's.
    let (status, body) = exchange(&idp, &subject, &[("scope", "extra-api")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "profile email extra-api");
    let c = payload(body["access_token"].as_str().unwrap());
    assert_eq!(
        c["aud"],
        json!(["kagenti-api", "sonataflow", "extra-api", "account"])
    );
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);

    // Filtered by audience: the scope without the requested audience is dropped.
    let (status, body) = exchange(
        &idp,
        &subject,
        &[("scope", "extra-api"), ("audience", "kagenti-api")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "profile email");
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["aud"],
        "kagenti-api"
    );

    // Repeated `audience` is allowed for token exchange.
    let (status, body) = exchange(
        &idp,
        &subject,
        &[("audience", "kagenti-api"), ("audience", "sonataflow")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Keycloak 26.7.3 keeps the default roles' `account` when several audiences are asked.
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["aud"],
        json!(["kagenti-api", "sonataflow", "account"])
    );

    // requested_token_type=id_token: the ID token in access_token, token_type N_A.
    let (status, body) = exchange(
        &idp,
        &subject,
        &[(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:id_token"
    );
    assert!(body.get("id_token").is_none());
    let c = payload(body["access_token"].as_str().unwrap());
    assert_eq!(c["typ"], "ID");
    assert_eq!(c["aud"], "token-broker");

    // Unknown scope.
    assert_error(
        &exchange(&idp, &subject, &[("scope", "profile nope")]).await,
        400,
        "invalid_scope",
        "Invalid scopes: profile nope",
    );
    idp.stop().await;
}

#[actix_web::test]
async fn client_authentication_errors() {
    let idp = start_contract().await;
    let subject = alice_token(&idp).await;
    let te = |id: &'static str, secret: &'static str| {
        vec![
            ("grant_type", TE),
            ("client_id", id),
            ("client_secret", secret),
            ("subject_token_type", AT),
        ]
    };
    let mut form = te("token-broker", "wrong");
    form.push(("subject_token", &subject));
    assert_error(
        &post(&idp, &form).await,
        401,
        "unauthorized_client",
        "Invalid client or Invalid client credentials",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "token-broker"),
            ],
        )
        .await,
        401,
        "unauthorized_client",
        "Invalid client or Invalid client credentials",
    );
    assert_error(
        &post(&idp, &te("no-such-client", "x")).await,
        401,
        "invalid_client",
        "Invalid client or Invalid client credentials",
    );
    // No client id at all: Keycloak 26.7.3 answers like an unknown client.
    assert_error(
        &post(&idp, &[("grant_type", "client_credentials")]).await,
        401,
        "invalid_client",
        "Invalid client or Invalid client credentials",
    );

    let mut disabled = DevClient::confidential("disabled-client", "s");
    disabled.enabled = false;
    idp.add_client(disabled);
    assert_error(
        &post(&idp, &te("disabled-client", "s")).await,
        401,
        "invalid_client",
        "Invalid client or Invalid client credentials",
    );
    let mut bearer_only = DevClient::confidential("bearer-only", "s");
    bearer_only.bearer_only = true;
    idp.add_client(bearer_only);
    assert_error(
        &post(&idp, &te("bearer-only", "s")).await,
        400,
        "invalid_client",
        "Bearer-only not allowed",
    );

    // Wrong secret through HTTP Basic.
    let resp = http()
        .post(idp.token_endpoint())
        .header(
            "authorization",
            format!("Basic {}", STANDARD.encode("token-broker:nope")),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");

    // Non-Basic Authorization and no form client_id: a Basic challenge.
    let resp = http()
        .post(idp.token_endpoint())
        .header("authorization", "Bearer abc")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers().get("www-authenticate").unwrap(),
        "Basic realm=\"dev\""
    );

    // Duplicated parameter (anything but audience/resource).
    let mut form = te("token-broker", BROKER_SECRET);
    form.push(("subject_token", &subject));
    form.push(("scope", "profile"));
    form.push(("scope", "email"));
    assert_error(
        &post(&idp, &form).await,
        400,
        "invalid_request",
        "duplicated parameter",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", "alice"),
                ("username", "bob"),
                ("password", "alice"),
            ],
        )
        .await,
        400,
        "invalid_request",
        "duplicated parameter",
    );
    idp.stop().await;
}

#[actix_web::test]
async fn grant_type_errors_and_feature_switch() {
    let idp = start_contract().await;
    assert_error(
        &post(&idp, &[("client_id", "token-broker")]).await,
        400,
        "invalid_request",
        "Missing form parameter: grant_type",
    );
    for g in ["foo", "refresh_token"] {
        assert_error(
            &post(&idp, &[("grant_type", g), ("client_id", "token-broker")]).await,
            400,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }

    let subject = alice_token(&idp).await;
    idp.set_token_exchange_enabled(false);
    assert_error(
        &exchange(&idp, &subject, &[]).await,
        400,
        "unsupported_grant_type",
        "Unsupported grant_type",
    );
    let doc: Value = http()
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(TE))
    );
    idp.set_token_exchange_enabled(true);
    assert_eq!(exchange(&idp, &subject, &[]).await.0, 200);

    // Unknown realm.
    let resp = http()
        .post(format!(
            "http://{}/realms/nope/protocol/openid-connect/token",
            idp.addr()
        ))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "Realm does not exist"})
    );
    let resp = http()
        .get(format!(
            "http://{}/realms/nope/.well-known/openid-configuration",
            idp.addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    idp.stop().await;
}

#[actix_web::test]
async fn standard_exchange_supports_errors() {
    let idp = start_contract().await;
    let subject = alice_token(&idp).await;
    for p in ["requested_subject", "requested_issuer", "subject_issuer"] {
        assert_error(
            &exchange(&idp, &subject, &[(p, "x")]).await,
            400,
            "invalid_request",
            &format!("Parameter '{p}' is not supported for standard token exchange"),
        );
    }
    // kagenti-api is confidential but not opted in.
    let mut kagenti = DevClient::confidential("kagenti-api", "k");
    kagenti.audience_mappers = vec![];
    idp.add_client(kagenti);
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", TE),
                ("client_id", "kagenti-api"),
                ("client_secret", "k"),
                ("subject_token", &subject),
                ("subject_token_type", AT),
            ],
        )
        .await,
        400,
        "invalid_request",
        "Standard token exchange is not enabled for the requested client",
    );
    let base = [
        ("grant_type", TE),
        ("client_id", "token-broker"),
        ("client_secret", BROKER_SECRET),
    ];
    let mut form = base.to_vec();
    form.push(("subject_token_type", AT));
    assert_error(
        &post(&idp, &form).await,
        400,
        "invalid_request",
        "Parameter 'subject_token' required for standard token exchange",
    );
    let mut form = base.to_vec();
    form.push(("subject_token", &subject));
    assert_error(
        &post(&idp, &form).await,
        400,
        "invalid_request",
        "Parameter 'subject_token_type' required for standard token exchange",
    );
    form.push(("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"));
    assert_error(
        &post(&idp, &form).await,
        400,
        "invalid_request",
        "Parameter 'subject_token' supports access tokens only",
    );
    idp.stop().await;
}

#[actix_web::test]
async fn standard_exchange_processing_errors() {
    let idp = start_contract().await;
    let subject = alice_token(&idp).await;

    assert_error(
        &exchange(
            &idp,
            &subject,
            &[(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            )],
        )
        .await,
        400,
        "invalid_request",
        "requested_token_type unsupported",
    );
    assert_error(
        &exchange(
            &idp,
            &subject,
            &[("audience", "kagenti-api"), ("audience", "invalid-client")],
        )
        .await,
        400,
        "invalid_client",
        "Audience not found",
    );
    // A client that exists but that no scope of the requester maps.
    idp.add_client(DevClient::confidential("unmapped", "u"));
    idp.add_client(DevClient::confidential("unmapped-2", "u"));
    assert_error(
        &exchange(
            &idp,
            &subject,
            &[
                ("audience", "unmapped"),
                ("audience", "kagenti-api"),
                ("audience", "unmapped-2"),
            ],
        )
        .await,
        400,
        "invalid_request",
        "Requested audience not available: unmapped, unmapped-2",
    );
    // A disabled target.
    let mut disabled = DevClient::confidential("disabled-target", "d");
    disabled.enabled = false;
    idp.add_client(disabled);
    assert_error(
        &exchange(&idp, &subject, &[("audience", "disabled-target")]).await,
        400,
        "invalid_client",
        "Client disabled",
    );

    // A subject token whose aud lacks token-broker (and azp is another client).
    let mut plain = DevClient::public("plain-frontend");
    plain.direct_access_grants = true;
    idp.add_client(plain);
    let body = password_token_at(&idp.token_endpoint(), "plain-frontend", "bob", "bob").await;
    let plain_token = body["access_token"].as_str().unwrap();
    // No Audience mapper: only the default roles' `account`.
    assert_eq!(payload(plain_token)["aud"], "account");
    assert_error(
        &exchange(&idp, plain_token, &[]).await,
        403,
        "access_denied",
        "Client is not within the token audience",
    );

    // A public requester that opted in.
    let mut public_te = DevClient::public("public-te");
    public_te.standard_token_exchange_enabled = true;
    idp.add_client(public_te);
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", TE),
                ("client_id", "public-te"),
                ("subject_token", &subject),
                ("subject_token_type", AT),
            ],
        )
        .await,
        400,
        "invalid_client",
        "Public client is not allowed to exchange token",
    );

    // Sender-constrained subject for another client.
    let mut claims = payload(&subject);
    claims["cnf"] = json!({"jkt": "abc"});
    assert_error(
        &exchange(&idp, &idp.sign_jwt(&claims), &[]).await,
        400,
        "invalid_request",
        "Sender-constrained token exchange rejected as the token was not issued for the requesting client",
    );
    idp.stop().await;
}

#[actix_web::test]
async fn invalid_subject_tokens() {
    let idp = start_contract().await;
    let subject = alice_token(&idp).await;
    let claims = payload(&subject);
    let invalid = |r: (u16, Value)| assert_error(&r, 400, "invalid_request", "Invalid token");

    // Expired.
    let mut expired = claims.clone();
    let now = claims::now_secs();
    expired["iat"] = json!(now - 600);
    expired["exp"] = json!(now - 300);
    invalid(exchange(&idp, &idp.sign_jwt(&expired), &[]).await);
    // Not yet valid.
    let mut nbf = claims.clone();
    nbf["nbf"] = json!(now + 300);
    invalid(exchange(&idp, &idp.sign_jwt(&nbf), &[]).await);
    // Wrong typ (an ID token).
    let mut id = claims.clone();
    id["typ"] = json!("ID");
    invalid(exchange(&idp, &idp.sign_jwt(&id), &[]).await);
    // Signed by a foreign key.
    let foreign = keys::RealmKeys::generate().unwrap().sign(&claims);
    invalid(exchange(&idp, &foreign, &[]).await);
    // Garbage.
    invalid(exchange(&idp, "not.a.jwt", &[]).await);
    // Unknown user.
    let mut ghost = claims.clone();
    ghost["sub"] = json!("00000000-0000-4000-8000-000000000000");
    invalid(exchange(&idp, &idp.sign_jwt(&ghost), &[]).await);
    // Unknown session.
    let mut no_session = claims.clone();
    no_session["sid"] = json!("nope");
    invalid(exchange(&idp, &idp.sign_jwt(&no_session), &[]).await);

    // A hand-signed valid token is accepted (sign_jwt uses the realm key).
    assert_eq!(exchange(&idp, &idp.sign_jwt(&claims), &[]).await.0, 200);

    // Disabled user, then re-enabled.
    idp.set_user_enabled("alice", false);
    invalid(exchange(&idp, &subject, &[]).await);
    idp.set_user_enabled("alice", true);
    assert_eq!(exchange(&idp, &subject, &[]).await.0, 200);

    // Logout ends the session.
    let bob = password_token_at(&idp.token_endpoint(), "dev-frontend", "bob", "bob").await;
    idp.logout_user("alice");
    invalid(exchange(&idp, &subject, &[]).await);
    let (status, body) = exchange(&idp, bob["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(status, 200, "bob's session survives alice's logout: {body}");
    idp.stop().await;
}

#[actix_web::test]
async fn issuer_follows_the_host_header() {
    let idp = start_contract().await;
    let subject = alice_token(&idp).await; // minted through 127.0.0.1
    let via_localhost = localhost_token_endpoint(&idp);
    assert_error(
        &exchange_at(&via_localhost, &subject, &[]).await,
        400,
        "invalid_request",
        "Invalid token",
    );
    // Minted and exchanged through the same host name: fine.
    let login = password_token_at(&via_localhost, "dev-frontend", "alice", "alice").await;
    let local_token = login["access_token"].as_str().unwrap();
    assert_eq!(
        payload(local_token)["iss"],
        format!("http://localhost:{}/realms/dev", idp.addr().port())
    );
    let (status, body) = exchange_at(&via_localhost, local_token, &[]).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = http()
        .get(format!(
            "http://localhost:{}/realms/dev/.well-known/openid-configuration",
            idp.addr().port()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["issuer"],
        format!("http://localhost:{}/realms/dev", idp.addr().port())
    );
    idp.stop().await;
}

#[actix_web::test]
async fn password_and_client_credentials_grants() {
    let idp = start_contract().await;
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await,
        400,
        "invalid_grant",
        "Invalid user credentials",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", "nobody"),
                ("password", "x"),
            ],
        )
        .await,
        400,
        "invalid_grant",
        "Invalid user credentials",
    );
    idp.add_user(DevUser::new("carol", "carol"));
    idp.set_user_enabled("carol", false);
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", "carol"),
                ("password", "carol"),
            ],
        )
        .await,
        400,
        "invalid_grant",
        "Account disabled",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "password"),
                ("client_id", "token-broker"),
                ("client_secret", BROKER_SECRET),
                ("username", "alice"),
                ("password", "alice"),
            ],
        )
        .await,
        400,
        "unauthorized_client",
        "Client not allowed for direct access grants",
    );

    // client_credentials for the broker.
    let (status, body) = post(
        &idp,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "token-broker"),
            ("client_secret", BROKER_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("session_state").is_none());
    let c = payload(body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], json!(["kagenti-api", "sonataflow", "account"]));
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(c["client_id"], "token-broker");
    assert_eq!(c["preferred_username"], "service-account-token-broker");
    assert_eq!(
        c["sub"],
        idp.user_id("service-account-token-broker").unwrap()
    );
    assert!(c.get("sid").is_none());
    assert!(c["jti"].as_str().unwrap().starts_with("trrtcc:"));

    // A service-account token can be exchanged by its own client (azp == requester); the
    // result has no sid and no session_state (§3.5).
    let (status, ex) = exchange(
        &idp,
        body["access_token"].as_str().unwrap(),
        &[("audience", "kagenti-api")],
    )
    .await;
    assert_eq!(status, 200, "{ex}");
    assert!(ex.get("session_state").is_none());
    assert!(
        payload(ex["access_token"].as_str().unwrap())
            .get("sid")
            .is_none()
    );

    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "dev-frontend"),
            ],
        )
        .await,
        401,
        "unauthorized_client",
        "Public client not allowed to retrieve service account",
    );
    idp.add_client(DevClient::confidential("no-sa", "s"));
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "no-sa"),
                ("client_secret", "s"),
            ],
        )
        .await,
        401,
        "unauthorized_client",
        "Client not enabled to retrieve service account",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "token-broker"),
                ("client_secret", BROKER_SECRET),
                ("scope", "bogus"),
            ],
        )
        .await,
        400,
        "invalid_scope",
        "Invalid scopes: bogus",
    );
    idp.stop().await;
}

#[actix_web::test]
async fn https_required_from_a_public_address() {
    use actix_web::test::{TestRequest, call_service, init_service, read_body_json};

    let config = DevIdpConfig::contract();
    let shared = Shared::new(&config, keys::RealmKeys::generate().unwrap()).unwrap();
    let app = init_service(
        App::new()
            .app_data(web::Data::from(Arc::clone(&shared)))
            .configure(routes),
    )
    .await;
    let form = [("grant_type", "client_credentials")];
    let req = TestRequest::post()
        .uri("/realms/dev/protocol/openid-connect/token")
        .peer_addr("8.8.8.8:4000".parse().unwrap())
        .set_form(form)
        .to_request();
    let resp = call_service(&app, req).await;
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = read_body_json(resp).await;
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "HTTPS required"})
    );
    let req = TestRequest::post()
        .uri("/realms/dev/protocol/openid-connect/token")
        .peer_addr("192.168.1.5:4000".parse().unwrap())
        .set_form(form)
        .to_request();
    let resp = call_service(&app, req).await;
    // Past the SSL check, the form has no client: 401 (not 403 HTTPS required).
    assert_eq!(resp.status().as_u16(), 401, "private address: no SSL error");
}

#[actix_web::test]
async fn token_endpoint_delay() {
    let idp = start_contract().await;
    idp.set_token_endpoint_delay(Duration::from_millis(300));
    let started = Instant::now();
    let _ = alice_token(&idp).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    idp.set_token_endpoint_delay(Duration::ZERO);
    idp.stop().await;
}

#[test]
fn contract_values() {
    let c = DevIdpConfig::contract();
    assert_eq!(c.realm, "dev");
    assert_eq!(c.access_token_lifespan, Duration::from_secs(300));
    assert!(c.token_exchange_enabled);
    assert!(c.jwt_authorization_grant_enabled);
    assert!(!c.token_exchange_v1_enabled, "V1 is off by default (§5)");
    assert!(c.identity_providers.is_empty());
    let names: Vec<&str> = c.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let broker = c
        .clients
        .iter()
        .find(|c| c.client_id == "token-broker")
        .unwrap();
    assert_eq!(broker.secret.as_deref(), Some(BROKER_SECRET));
    assert!(broker.service_accounts_enabled && broker.standard_token_exchange_enabled);
    assert_eq!(broker.audience_mappers, ["kagenti-api", "sonataflow"]);
    let fe = c
        .clients
        .iter()
        .find(|c| c.client_id == "dev-frontend")
        .unwrap();
    assert!(fe.is_public() && fe.direct_access_grants);
    assert_eq!(fe.audience_mappers, ["token-broker"]);
    // Stable ids across runs.
    assert_eq!(DevUser::new("alice", "x").id, DevUser::new("alice", "y").id);
    assert_ne!(DevUser::new("alice", "x").id, DevUser::new("bob", "x").id);
    assert!(uuid::Uuid::parse_str(&DevUser::new("alice", "x").id).is_ok());
}

// ---------------------------------------------------------------------------------------------
// JWT authorization grant (docs/reference/keycloak-token-exchange.md §6)

const ASSERTION_ISS: &str = "http://backstage-broker.test";
const ALIAS: &str = "backstage";

/// An ES256 key of the identity provider that signs assertions.
struct EsKey {
    kid: String,
    pair: aws_lc_rs::signature::EcdsaKeyPair,
}

impl EsKey {
    fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            kid: kid.to_owned(),
            pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        use aws_lc_rs::signature::KeyPair as _;
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// A JWKS endpoint on 127.0.0.1:0 that counts its fetches.
struct JwksServer {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: actix_web::dev::ServerHandle,
}

async fn serve_jwks(jwks: Value) -> JwksServer {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = actix_web::HttpServer::new(move || {
        let jwks = jwks.clone();
        let h = h.clone();
        actix_web::App::new().route(
            "/jwks.json",
            actix_web::web::get().to(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { actix_web::HttpResponse::Ok().json(jwks) }
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
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        hits,
        server: handle,
    }
}

fn now() -> u64 {
    claims::now_secs()
}

/// Claims of a valid assertion for `sub`.
fn assertion_claims(idp: &DevIdpHandle, sub: &str) -> Value {
    let now = now();
    json!({"iss": ASSERTION_ISS, "sub": sub, "aud": idp.issuer(), "iat": now, "nbf": now,
        "exp": now + 120, "jti": uuid::Uuid::new_v4().to_string()})
}

/// The contract realm trusting `ASSERTION_ISS` (alias `backstage`) for `token-broker`, alice
/// linked as `user:default/alice`, the IdP's keys (ES256 and RS256) served by a test JWKS
/// server.
async fn jwt_setup() -> (DevIdpHandle, EsKey, keys::RealmKeys, JwksServer) {
    let idp = start_contract().await;
    let key = EsKey::new("es-1");
    let rsa = keys::RealmKeys::generate().unwrap();
    let mut set = rsa.jwks();
    set["keys"].as_array_mut().unwrap().push(key.jwk());
    let jwks = serve_jwks(set).await;
    idp.add_identity_provider(DevIdentityProvider::new(ALIAS, ASSERTION_ISS, &jwks.url));
    assert!(idp.update_client("token-broker", |c| {
        c.jwt_authorization_grant_idps.push(ALIAS.to_owned());
    }));
    assert!(idp.link_user("alice", ALIAS, "user:default/alice"));
    (idp, key, rsa, jwks)
}

async fn jwt_grant_as(
    idp: &DevIdpHandle,
    client: (&str, Option<&str>),
    assertion: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![("grant_type", JWT_BEARER), ("client_id", client.0)];
    if let Some(secret) = client.1 {
        form.push(("client_secret", secret));
    }
    if let Some(a) = assertion {
        form.push(("assertion", a));
    }
    form.extend_from_slice(extra);
    post(idp, &form).await
}

async fn jwt_grant(idp: &DevIdpHandle, assertion: &str) -> (u16, Value) {
    jwt_grant_as(
        idp,
        ("token-broker", Some(BROKER_SECRET)),
        Some(assertion),
        &[],
    )
    .await
}

#[actix_web::test]
async fn jwt_authorization_grant_issues_a_transient_user_token() {
    let (idp, key, rsa, jwks) = jwt_setup().await;
    let alice_id = idp.user_id("alice").unwrap();

    let assertion = key.sign(&assertion_claims(&idp, "user:default/alice"));
    let (status, body) = jwt_grant(&idp, &assertion).await;
    assert_eq!(status, 200, "{body}");
    // §6: access token only, no refresh token, no session_state.
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "access_token",
            "expires_in",
            "not-before-policy",
            "refresh_expires_in",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["refresh_expires_in"], 0);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["not-before-policy"], 0);
    assert_eq!(body["scope"], "profile email");
    let at = body["access_token"].as_str().unwrap();
    let c = payload(at);
    assert_eq!(c["sub"], alice_id.as_str());
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(c["aud"], json!(["kagenti-api", "sonataflow", "account"]));
    assert_eq!(c["typ"], "Bearer");
    assert_eq!(c["iss"], idp.issuer().as_str());
    assert!(c.get("sid").is_none(), "transient session: no sid (§6)");
    assert!(c["jti"].as_str().unwrap().starts_with("trrtag:"), "{c}");
    // The realm key signed it: it verifies as a subject token for V2 exchange.
    assert_eq!(
        exchange(&idp, at, &[("audience", "kagenti-api")]).await.0,
        200
    );

    // §6: `jti` is single-use.
    assert_error(
        &jwt_grant(&idp, &assertion).await,
        400,
        "invalid_grant",
        "Token reuse detected",
    );

    // `aud` = the token endpoint URL is accepted too, also as a one-element array.
    let mut c = assertion_claims(&idp, "user:default/alice");
    c["aud"] = json!([idp.token_endpoint()]);
    assert_eq!(jwt_grant(&idp, &key.sign(&c)).await.0, 200);

    // Keycloak 26.7.3: the 5-minute maximum bounds the age (`iat`), not `exp` ahead; `openid`
    // brings an ID token.
    let mut c = assertion_claims(&idp, "user:default/alice");
    c["exp"] = json!(now() + 600);
    let (status, body) = jwt_grant_as(
        &idp,
        ("token-broker", Some(BROKER_SECRET)),
        Some(&key.sign(&c)),
        &[("scope", "openid")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(payload(body["id_token"].as_str().unwrap())["typ"], "ID");

    // RS256 by an RSA key of the same JWKS (selected by kid).
    let rs = rsa.sign(&assertion_claims(&idp, "user:default/alice"));
    let (status, body) = jwt_grant(&idp, &rs).await;
    assert_eq!(status, 200, "{body}");

    // Optional scopes as for other grants; the JWKS was fetched once for all of the above.
    let (status, body) = jwt_grant_as(
        &idp,
        ("token-broker", Some(BROKER_SECRET)),
        Some(&key.sign(&assertion_claims(&idp, "user:default/alice"))),
        &[("scope", "openid")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "openid profile email");
    // Keycloak 26.7.3: an ID token for `openid`, still no refresh token.
    assert!(body.get("id_token").is_some() && body.get("refresh_token").is_none());
    assert_eq!(jwks.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    jwks.server.stop(true).await;
    idp.stop().await;
}

#[actix_web::test]
async fn jwt_authorization_grant_errors() {
    let (idp, key, _rsa, jwks) = jwt_setup().await;
    let grant_err = |d: &str| (400u16, "invalid_grant", d.to_owned());
    let sign = |f: &dyn Fn(&mut Value)| {
        let mut c = assertion_claims(&idp, "user:default/alice");
        f(&mut c);
        key.sign(&c)
    };
    let now = now();

    // Missing assertion.
    assert_error(
        &jwt_grant_as(&idp, ("token-broker", Some(BROKER_SECRET)), None, &[]).await,
        400,
        "invalid_grant",
        "Missing parameter:assertion",
    );
    // Client authentication runs first (§2 step 5).
    let good = sign(&|_| {});
    assert_error(
        &jwt_grant_as(&idp, ("token-broker", Some("wrong")), Some(&good), &[]).await,
        401,
        "unauthorized_client",
        "Invalid client or Invalid client credentials",
    );
    // A public client, and a confidential client without the capability.
    let (s, e, d) = grant_err("Public client not allowed to use authorization grant");
    assert_error(
        &jwt_grant_as(&idp, ("dev-frontend", None), Some(&good), &[]).await,
        s,
        e,
        &d,
    );
    idp.add_client(DevClient::confidential("plain", "plain-secret"));
    let (s, e, d) = grant_err("JWT Authorization Grant is not supported for the requested client");
    assert_error(
        &jwt_grant_as(&idp, ("plain", Some("plain-secret")), Some(&good), &[]).await,
        s,
        e,
        &d,
    );

    let mut cases: Vec<(&str, String, String)> = Vec::new();
    cases.push((
        "garbage",
        "not-a-jwt".into(),
        "The provided assertion is not a valid JWT".into(),
    ));
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(assertion_claims(&idp, "user:default/alice").to_string())
    );
    cases.push(("alg none", unsigned, "Invalid signature algorithm".into()));
    cases.push((
        "no iss",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        "Missing claim: iss".into(),
    ));
    cases.push((
        "no sub",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
        "Missing claim: sub".into(),
    ));
    cases.push((
        "unknown issuer",
        sign(&|c| c["iss"] = json!("http://elsewhere")),
        "No Identity Provider for provided issuer".into(),
    ));
    let other = EsKey::new("es-1");
    cases.push((
        "foreign key, same kid",
        other.sign(&assertion_claims(&idp, "user:default/alice")),
        "Invalid signature".into(),
    ));
    cases.push((
        "unknown kid",
        EsKey::new("es-unknown").sign(&assertion_claims(&idp, "user:default/alice")),
        "Invalid signature".into(),
    ));
    cases.push((
        "no exp",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        "Token exp claim is required".into(),
    ));
    cases.push((
        "expired",
        sign(&|c| c["exp"] = json!(now - 1)),
        "Token is not active".into(),
    ));
    cases.push((
        "no iat, exp too far ahead",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("iat");
            c["exp"] = json!(now + 400);
        }),
        "Token expiration is too far in the future and iat claim not present in token".into(),
    ));
    cases.push((
        "issued too long ago",
        sign(&|c| {
            c["iat"] = json!(now - 360);
            c["nbf"] = json!(now - 360);
            c["exp"] = json!(now + 60);
        }),
        "Token was issued too far in the past to be used now".into(),
    ));
    cases.push((
        "issued in the future",
        sign(&|c| c["iat"] = json!(now + 60)),
        "Token was issued in the future".into(),
    ));
    cases.push((
        "two audiences",
        sign(&|c| c["aud"] = json!(["someone", idp.token_endpoint()])),
        "Multiple audiences not allowed".into(),
    ));
    cases.push((
        "nbf in the future",
        sign(&|c| c["nbf"] = json!(now + 60)),
        "Token is not active".into(),
    ));
    cases.push((
        "wrong aud",
        sign(&|c| c["aud"] = json!("backstage")),
        "Invalid token audience".into(),
    ));
    cases.push((
        "no aud",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        "Invalid token audience".into(),
    ));
    cases.push((
        "no jti",
        sign(&|c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        "Token jti claim is required".into(),
    ));
    cases.push((
        "unlinked user",
        sign(&|c| c["sub"] = json!("user:default/bob")),
        "User not found".into(),
    ));
    for (name, assertion, description) in cases {
        let got = jwt_grant(&idp, &assertion).await;
        assert_eq!(got.0, 400, "{name}: {}", got.1);
        assert_eq!(got.1["error"], "invalid_grant", "{name}: {}", got.1);
        assert_eq!(got.1["error_description"], description.as_str(), "{name}");
    }

    // Bad scope: as for other grants.
    assert_error(
        &jwt_grant_as(
            &idp,
            ("token-broker", Some(BROKER_SECRET)),
            Some(&sign(&|_| {})),
            &[("scope", "nope")],
        )
        .await,
        400,
        "invalid_scope",
        "Invalid scopes: nope",
    );
    // Disabled user (the 26.5.3 CVE fix).
    idp.set_user_enabled("alice", false);
    let (s, e, d) = grant_err("User is not enabled");
    assert_error(&jwt_grant(&idp, &sign(&|_| {})).await, s, e, &d);
    idp.set_user_enabled("alice", true);
    // The IdP's switch, then the client's allowed list.
    idp.add_identity_provider(DevIdentityProvider {
        jwt_authorization_grant_enabled: false,
        ..DevIdentityProvider::new(ALIAS, ASSERTION_ISS, &jwks.url)
    });
    let (s, e, d) = grant_err("Identity Provider is not configured for JWT Authorization Grant");
    assert_error(&jwt_grant(&idp, &sign(&|_| {})).await, s, e, &d);
    idp.add_identity_provider(DevIdentityProvider::new(
        "other-idp",
        "http://other.test",
        &jwks.url,
    ));
    let (s, e, d) = grant_err("Identity Provider is not allowed for the client");
    assert_error(
        &jwt_grant(&idp, &sign(&|c| c["iss"] = json!("http://other.test"))).await,
        s,
        e,
        &d,
    );
    // JWKS unreachable.
    idp.add_identity_provider(DevIdentityProvider::new(
        ALIAS,
        ASSERTION_ISS,
        "http://127.0.0.1:9/jwks.json",
    ));
    let (s, e, d) = grant_err("Invalid signature");
    assert_error(&jwt_grant(&idp, &sign(&|_| {})).await, s, e, &d);

    // The realm feature off: unsupported grant, absent from discovery (§1).
    idp.set_jwt_authorization_grant_enabled(false);
    assert_error(
        &jwt_grant(&idp, &sign(&|_| {})).await,
        400,
        "unsupported_grant_type",
        "Unsupported grant_type",
    );
    let doc: Value = http()
        .get(format!("{}/.well-known/openid-configuration", idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    jwks.server.stop(true).await;
    idp.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Legacy token exchange V1, naked impersonation (docs/reference/keycloak-token-exchange.md §5)

async fn impersonate_as(
    idp: &DevIdpHandle,
    client: (&str, &str),
    subject: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", TE),
        ("client_id", client.0),
        ("client_secret", client.1),
        ("requested_subject", subject),
    ];
    form.extend_from_slice(extra);
    post(idp, &form).await
}

async fn impersonate(idp: &DevIdpHandle, subject: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    impersonate_as(idp, ("token-broker", BROKER_SECRET), subject, extra).await
}

#[actix_web::test]
async fn v1_naked_impersonation() {
    let idp = start_contract().await;
    let access = [("requested_token_type", AT), ("audience", "kagenti-api")];

    // V1 off (the default): V2's supports() reason is the answer (§3.3).
    assert_error(
        &impersonate(&idp, "alice", &access).await,
        400,
        "invalid_request",
        "Parameter 'requested_subject' is not supported for standard token exchange",
    );

    idp.set_token_exchange_v1_enabled(true);
    let (status, body) = impersonate(&idp, "alice", &access).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], AT);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
    let c = payload(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], idp.user_id("alice").unwrap().as_str());
    assert_eq!(c["azp"], "token-broker");
    // Minted for the target: its mappers (none), the default roles' `account`, the target.
    assert_eq!(c["aud"], json!(["account", "kagenti-api"]));
    // A new user session (§5).
    assert_eq!(body["session_state"], c["sid"]);
    assert!(c["jti"].as_str().unwrap().starts_with("onrtna:"));

    // By user id too; the default requested_token_type is refresh_token (§5).
    let alice_id = idp.user_id("alice").unwrap();
    let (status, body) = impersonate(&idp, &alice_id, &[("audience", "kagenti-api")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:refresh_token"
    );
    assert!(body["refresh_token"].is_string());
    assert_eq!(body["refresh_expires_in"], 1800);

    // Anti-fishing and permissions: the same 403 (§5).
    let denied = |got: &(u16, Value)| {
        assert_error(got, 403, "access_denied", "Client not allowed to exchange")
    };
    denied(&impersonate(&idp, "nobody", &access).await);
    idp.set_user_enabled("bob", false);
    denied(&impersonate(&idp, "bob", &access).await);
    idp.set_user_enabled("bob", true);
    assert_eq!(impersonate(&idp, "bob", &access).await.0, 200);
    // A client without the "impersonate" permission.
    let mut plain = DevClient::confidential("plain", "plain-secret");
    plain.standard_token_exchange_enabled = true;
    idp.add_client(plain);
    denied(&impersonate_as(&idp, ("plain", "plain-secret"), "alice", &access).await);
    // A target whose "token-exchange" permission does not include the requester.
    idp.add_client(DevClient::confidential("closed-api", "x"));
    denied(
        &impersonate(
            &idp,
            "alice",
            &[("requested_token_type", AT), ("audience", "closed-api")],
        )
        .await,
    );
    // exchangeClientToClient errors.
    assert_error(
        &impersonate(&idp, "alice", &[("audience", "no-such-client")]).await,
        400,
        "invalid_client",
        "Audience not found",
    );
    let mut disabled = DevClient::confidential("off-api", "x");
    disabled.enabled = false;
    disabled.v1_token_exchange_clients = vec!["token-broker".into()];
    idp.add_client(disabled);
    assert_error(
        &impersonate(&idp, "alice", &[("audience", "off-api")]).await,
        400,
        "invalid_client",
        "Client disabled",
    );
    assert_error(
        &impersonate(
            &idp,
            "alice",
            &[
                ("audience", "kagenti-api"),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
            ],
        )
        .await,
        400,
        "invalid_request",
        "requested_token_type unsupported",
    );

    // V2 still handles what it supports while V1 is on.
    let subject = alice_token(&idp).await;
    assert_eq!(
        exchange(&idp, &subject, &[("audience", "kagenti-api")])
            .await
            .0,
        200
    );
    idp.stop().await;
}

/// Keycloak 26.7.3's answers that scripts/conformance found the dev IdP lacking (issue 11):
/// the targets' fixed dev secrets, the built-in optional scopes, the default roles' `account`
/// filtered by a single `audience`, and V1's 403 for a subject-token exchange V2 declined.
#[actix_web::test]
async fn keycloak_conformance_details() {
    let idp = start_contract().await;
    // Fixed dev secrets: kagenti-api authenticates, and is refused for lacking the capability.
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "kagenti-api"),
                ("client_secret", "kagenti-api-dev-secret"),
            ],
        )
        .await,
        401,
        "unauthorized_client",
        "Client not enabled to retrieve service account",
    );
    let subject = alice_token(&idp).await;
    // A built-in optional scope joins `scope`; `offline_access` is not emulated.
    let (status, body) = exchange(
        &idp,
        &subject,
        &[("audience", "kagenti-api"), ("scope", "phone")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "profile email phone");
    let c = payload(body["access_token"].as_str().unwrap());
    // One `audience`: only it, and no `account` roles.
    assert_eq!(c["aud"], "kagenti-api");
    assert_eq!(c["resource_access"], json!({}));
    assert_error(
        &exchange(&idp, &subject, &[("scope", "offline_access")]).await,
        400,
        "invalid_scope",
        "Invalid scopes: offline_access",
    );
    // V1 on: what V2 declines for lack of the capability is V1's 403.
    idp.set_token_exchange_v1_enabled(true);
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", TE),
                ("client_id", "kagenti-api"),
                ("client_secret", "kagenti-api-dev-secret"),
                ("subject_token", &subject),
                ("subject_token_type", AT),
                ("audience", "sonataflow"),
            ],
        )
        .await,
        403,
        "access_denied",
        "Client not allowed to exchange",
    );
    assert_error(
        &post(
            &idp,
            &[
                ("grant_type", TE),
                ("client_id", "dev-frontend"),
                ("subject_token", &subject),
                ("subject_token_type", AT),
                ("audience", "kagenti-api"),
            ],
        )
        .await,
        403,
        "access_denied",
        "Client not allowed to exchange",
    );
    idp.stop().await;
}

/// The generic test mode (issue 12): discovery at `{issuer}/.well-known/openid-configuration`
/// for an issuer with a trailing `/` and no realm path, naming that issuer exactly, endpoints
/// still under the realm; without the mode a path outside the realm is the same empty 404 as
/// before.
#[actix_web::test]
async fn generic_mode_serves_discovery_at_the_issuer_and_is_off_by_default() {
    let idp = start_contract().await;
    let client = http();
    let root = format!("http://{}/.well-known/openid-configuration", idp.addr());
    // Introspection is not emulated outside the generic mode: Keycloak's unserved-path 404.
    let introspect = format!("{}/protocol/openid-connect/token/introspect", idp.issuer());
    let r = client
        .post(&introspect)
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "Unable to find matching target resource method"
    );
    let r = client.get(&root).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("content-type").is_none());
    assert!(r.bytes().await.unwrap().is_empty());

    let issuer = format!("http://{}/", idp.addr());
    idp.set_generic(Some(crate::GenericMode {
        issuer: issuer.clone(),
        access_token_typ: Some("at+jwt".into()),
    }));
    let doc: Value = client
        .get(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["token_endpoint"], idp.token_endpoint().as_str());
    assert_eq!(idp.current_issuer(), issuer);
    idp.set_generic(None);
    assert_eq!(client.get(&root).send().await.unwrap().status(), 404);
}
