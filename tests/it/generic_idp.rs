//! Issue 12: a standards-compliant IdP that is not Keycloak. The dev IdP's generic test mode
//! publishes an issuer that ends in `/` and has no realm path, and issues tokens without
//! Keycloak's `typ` claim (RFC 9068 header typing instead); the broker, configured with that
//! issuer exactly and `keycloak.profile: generic`, exchanges such tokens end to end. The
//! Keycloak profile keeps refusing tokens without Keycloak's claim.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use token_broker_devidp::{self as devidp, GenericMode};

use crate::support::*;

/// The JOSE header of a JWT (test inspection only).
fn jose_header(jwt: &str) -> serde_json::Value {
    let h = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Starts the dev IdP (generic mode with `issuer_of(addr)` when `typ` is `Some`), then a broker
/// whose YAML is the usual test config with `keycloak.issuer` set to `broker_issuer(addr)` and
/// then rewritten by `edit`.
pub async fn start_generic(
    typ: Option<Option<&str>>,
    issuer_of: impl Fn(&str) -> String,
    broker_issuer: impl Fn(&str) -> String,
    edit: impl FnOnce(String) -> String,
) -> Env {
    let o = Opts::default();
    let idp = devidp::start(o.idp.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("dev IdP starts");
    let addr = idp.addr().to_string();
    if let Some(t) = typ {
        idp.set_generic(Some(GenericMode {
            issuer: issuer_of(&addr),
            access_token_typ: t.map(str::to_owned),
        }));
    }
    let yaml = config_yaml(&idp.issuer(), &o).replace(
        &format!("  issuer: {}\n", idp.issuer()),
        &format!("  issuer: \"{}\"\n", broker_issuer(&addr)),
    );
    let yaml = edit(yaml);
    let env: HashMap<String, String> =
        HashMap::from([("BROKER_SECRET".to_owned(), o.client_secret.clone())]);
    let cfg = token_broker::config::load_str(&yaml, &env, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let broker = token_broker::app::start(cfg).await.expect("broker starts");
    let url = broker.public_url();
    Env {
        idp,
        broker,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        url,
    }
}

pub fn generic_profile(yaml: String) -> String {
    yaml.replacen(
        "  clientId: token-broker\n",
        "  clientId: token-broker\n  profile: generic\n",
        1,
    )
}

fn root_slash(addr: &str) -> String {
    format!("http://{addr}/")
}

/// The "done when": issuer `http://HOST/` (trailing slash, no realm path), user tokens
/// with header `typ: at+jwt` and no Keycloak claim, exchanged with configuration only; the
/// issued token carries that issuer byte for byte and is checked as usual.
#[actix_web::test]
async fn exchanges_at_an_issuer_with_trailing_slash_and_no_realm_path() {
    let env = start_generic(
        Some(Some("at+jwt")),
        root_slash,
        root_slash,
        generic_profile,
    )
    .await;
    let user = env.login("alice").await;
    assert_eq!(jose_header(&user)["typ"], "at+jwt");
    let c = claims(&user);
    assert!(c.get("typ").is_none(), "{c}");
    assert_eq!(c["iss"], format!("http://{}/", env.idp.addr()));

    let (status, id, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(id, "user");
    let issued = claims(body["access_token"].as_str().unwrap());
    assert_eq!(issued["iss"], format!("http://{}/", env.idp.addr()));
    assert_eq!(issued["sub"], c["sub"]);
    assert_eq!(env.exchanges(), 1);
    // The IdP's own errors pass through (an audience it does not know).
    let (status, _, _, body) = parts(env.exchange(Some(&user), "ghost").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    env.stop().await;
}

/// Tokens with no `typ` at all (neither header nor claim) are access tokens under the generic
/// profile's default rule; the same IdP and issuer under the keycloak profile refuse them
/// before anything reaches the IdP.
#[actix_web::test]
async fn untyped_tokens_pass_under_generic_and_fail_under_keycloak() {
    let env = start_generic(Some(None), root_slash, root_slash, generic_profile).await;
    let user = env.login("alice").await;
    assert!(jose_header(&user).get("typ").is_none());
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;

    let env = start_generic(Some(None), root_slash, root_slash, |y| y).await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not an access token"),
        "{body}"
    );
    assert_eq!(env.exchanges(), 0);
    env.stop().await;

    // RFC 9068's header alone is not Keycloak's claim either.
    let env = start_generic(Some(Some("at+jwt")), root_slash, root_slash, |y| y).await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(env.exchanges(), 0);
    env.stop().await;
}

/// Keycloak's own tokens (header `JWT`, claim `typ: Bearer`) pass under both profiles; its ID
/// token (claim `typ: ID`) is refused under both; `tokenTypeCheck: at+jwt` refuses Keycloak's
/// access token.
#[actix_web::test]
async fn keycloak_tokens_under_both_profiles() {
    for edit in [(|y| y) as fn(String) -> String, generic_profile] {
        let env = start_default_with(edit).await;
        let user = env.login("alice").await;
        let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
        assert_eq!(status, 200, "{body}");
        let id_token = env.id_token("alice").await;
        let (status, _, _, body) = parts(env.exchange(Some(&id_token), "kagenti").await).await;
        assert_eq!(status, 400, "{body}");
        env.stop().await;
    }
    let env = start_default_with(|y| {
        generic_profile(y).replacen("userToken:\n", "userToken:\n  tokenTypeCheck: at+jwt\n", 1)
    })
    .await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(env.exchanges(), 0);
    env.stop().await;
}

/// The issuer is compared byte for byte: configured without the IdP's trailing slash,
/// discovery (same URL) names another issuer and nothing is exchanged.
#[actix_web::test]
async fn an_issuer_differing_by_a_trailing_slash_is_refused() {
    let env = start_generic(
        Some(Some("at+jwt")),
        root_slash,
        |a| format!("http://{a}"),
        generic_profile,
    )
    .await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_ne!(status, 200, "{body}");
    assert_eq!(env.exchanges(), 0);
    env.stop().await;
}

/// A deep issuer path ending in `/` (e.g. authentik's `/application/o/app/`): discovery at
/// `{issuer}.well-known/openid-configuration`, tokens verified against it.
#[actix_web::test]
async fn a_deep_issuer_path_with_trailing_slash_works() {
    let deep = |a: &str| format!("http://{a}/application/o/app/");
    let env = start_generic(Some(Some("at+jwt")), deep, deep, generic_profile).await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    env.stop().await;
}

/// The usual test environment (Keycloak mode, realm issuer) with the YAML rewritten by `edit`.
async fn start_default_with(edit: fn(String) -> String) -> Env {
    start_with_yaml(Opts::default(), edit).await
}

impl Env {
    /// An ID token of `user` (password grant with `openid`).
    async fn id_token(&self, user: &str) -> String {
        let r = self
            .http
            .post(self.idp.token_endpoint())
            .form(&[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", user),
                ("password", user),
                ("scope", "openid"),
            ])
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["id_token"].as_str().unwrap().to_owned()
    }
}

/// POST /admin/exchange (the exchange tester) as the admin.
async fn tester(env: &Env, target: &str, subject: &str) -> serde_json::Value {
    let r = env
        .http
        .post(format!(
            "http://{}/admin/exchange",
            env.broker.admin_addr.unwrap()
        ))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"target": target, "subject_token": subject}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Under the generic profile the IdP's errors pass through without Keycloak's hints, and the
/// tester's checklist has no Keycloak console steps; under the keycloak profile both stay.
#[actix_web::test]
async fn keycloak_hints_and_checklist_only_under_the_keycloak_profile() {
    let env = start_generic(
        Some(Some("at+jwt")),
        root_slash,
        root_slash,
        generic_profile,
    )
    .await;
    let user = env.login("alice").await;
    // `unmapped-api`: the IdP answers "Requested audience not available" (a Keycloak text).
    let (status, _, _, body) = parts(env.exchange(Some(&user), "unmapped").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.get("hint").is_none(), "{body}");
    let report = tester(&env, "unmapped", &user).await;
    assert!(report["hint"].is_null(), "{report}");
    let text = report["checks"].to_string();
    assert!(
        !text.contains("Keycloak") && !text.contains("Audience mapper"),
        "{text}"
    );
    assert!(text.contains("The IdP issued a token"), "{text}");
    assert!(
        report["summary"]
            .as_str()
            .unwrap()
            .starts_with("The IdP refused"),
        "{report}"
    );
    // The broker's own acceptance rule (broker in aud): a neutral hint, no Keycloak console.
    let no_aud = env
        .login_at(
            token_broker::tester::dev_login::DEV_NO_AUDIENCE_CLIENT,
            "alice",
            "alice",
        )
        .await;
    let (status, _, _, body) = parts(env.exchange(Some(&no_aud), "kagenti").await).await;
    assert_eq!(status, 400, "{body}");
    let hint = body["hint"].as_str().unwrap();
    assert!(
        hint.contains("configure the IdP") && !hint.contains("Audience mapper"),
        "{body}"
    );
    env.stop().await;

    let env = start_default().await;
    let user = env.login("alice").await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "unmapped").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["hint"].as_str().unwrap().contains("Audience mapper"),
        "{body}"
    );
    let report = tester(&env, "unmapped", &user).await;
    assert!(
        report["checks"].to_string().contains("Audience mapper"),
        "{report}"
    );
    let no_aud = env
        .login_at(
            token_broker::tester::dev_login::DEV_NO_AUDIENCE_CLIENT,
            "alice",
            "alice",
        )
        .await;
    let (_, _, _, body) = parts(env.exchange(Some(&no_aud), "kagenti").await).await;
    assert!(
        body["hint"].as_str().unwrap().contains("Audience mapper"),
        "{body}"
    );
    env.stop().await;
}

const KAGENTI: &str = "    audience: kagenti-api\n    fallback: service_account";

fn kagenti_with(extra: &'static str) -> impl FnOnce(String) -> String {
    move |y: String| y.replacen(KAGENTI, &format!("{KAGENTI}\n    {extra}"), 1)
}

/// An issued token without `aud` is refused by default (502), and accepted only on the target
/// that declares `issuedTokenAudience: may_be_absent`; `sub` must still match there.
#[actix_web::test]
async fn missing_aud_is_refused_unless_the_target_allows_it() {
    use token_broker_devidp::ExchangeFault;
    let env = start_default().await;
    let user = env.login("alice").await;
    env.idp
        .set_exchange_fault(Some(ExchangeFault::OmitAudience));
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("aud"),
        "{body}"
    );
    env.stop().await;

    let env = start_with_yaml(
        Opts::default(),
        kagenti_with("issuedTokenAudience: may_be_absent"),
    )
    .await;
    let user = env.login("alice").await;
    env.idp
        .set_exchange_fault(Some(ExchangeFault::OmitAudience));
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    let issued = claims(body["access_token"].as_str().unwrap());
    assert!(issued.get("aud").is_none(), "{issued}");
    assert_eq!(issued["sub"], claims(&user)["sub"]);
    // Another target keeps the strict default.
    let (status, _, _, body) = parts(env.exchange(Some(&user), "sonataflow").await).await;
    assert_eq!(status, 502, "{body}");
    // A present aud must still name the audience, and sub must always match.
    for fault in [ExchangeFault::WrongAudience, ExchangeFault::WrongSubject] {
        let other = env.login("bob").await;
        env.idp.set_exchange_fault(Some(fault));
        let (status, _, _, body) = parts(env.exchange(Some(&other), "kagenti").await).await;
        assert_eq!(status, 502, "{fault:?}: {body}");
        env.idp.set_exchange_fault(None);
    }
    env.stop().await;
}

/// An opaque issued token is a 502 by default and served only where the target declares
/// `issuedTokenFormat: opaque`, with its lifetime from `expires_in` (then cached).
#[actix_web::test]
async fn opaque_issued_tokens_are_served_only_where_configured() {
    use token_broker_devidp::ExchangeFault;
    let env = start_default().await;
    let user = env.login("alice").await;
    env.idp.set_exchange_fault(Some(ExchangeFault::Opaque));
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 502, "{body}");
    env.stop().await;

    let env = start_with_yaml(Opts::default(), kagenti_with("issuedTokenFormat: opaque")).await;
    let user = env.login("alice").await;
    env.idp.set_exchange_fault(Some(ExchangeFault::Opaque));
    let (status, id, cache, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(id, "user");
    assert_eq!(cache, "miss");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("opaque-"), "{body}");
    let ei = body["expires_in"].as_u64().unwrap();
    assert!(ei > 0 && ei <= 300, "{body}");
    let (status, _, cache, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache, "hit");
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(env.exchanges(), 1);
    // The strict default elsewhere.
    let (status, _, _, body) = parts(env.exchange(Some(&user), "sonataflow").await).await;
    assert_eq!(status, 502, "{body}");
    // The tester names the relaxed check.
    let report = tester(&env, "kagenti", &user).await;
    assert!(
        report["checks"]
            .to_string()
            .contains("Relaxed checks of the issued token"),
        "{report}"
    );
    env.stop().await;
}

fn introspections(env: &Env) -> usize {
    env.idp
        .requests()
        .iter()
        .filter(|r| r.grant_type.is_none() && r.form.iter().any(|(k, _)| k == "token"))
        .count()
}

fn introspection(yaml: String) -> String {
    generic_profile(yaml).replacen("userToken:\n", "userToken:\n  verify: introspection\n", 1)
}

/// `userToken.verify: introspection` (RFC 7662): an active token is exchanged, and the answer
/// is remembered (one introspection for repeated requests) but never past the token's `exp`;
/// an inactive token (its session ended) is refused before any exchange; an unreachable IdP
/// is 503, never a pass.
#[actix_web::test]
async fn introspection_verifies_users_tokens() {
    // Access tokens of dev-frontend live 3 s here, so the `exp` bound is observable.
    let mut o = Opts::default();
    for c in &mut o.idp.clients {
        if c.client_id == "dev-frontend" {
            c.access_token_lifespan = Some(Duration::from_secs(3));
        }
    }
    let idp = devidp::start(o.idp.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = idp.addr().to_string();
    idp.set_generic(Some(GenericMode {
        issuer: root_slash(&addr),
        access_token_typ: Some("at+jwt".into()),
    }));
    let yaml = introspection(config_yaml(&idp.issuer(), &o).replace(
        &format!("  issuer: {}\n", idp.issuer()),
        &format!("  issuer: \"{}\"\n", root_slash(&addr)),
    ));
    let env_map: HashMap<String, String> =
        HashMap::from([("BROKER_SECRET".to_owned(), o.client_secret.clone())]);
    let cfg = token_broker::config::load_str(&yaml, &env_map, std::path::Path::new(".")).unwrap();
    assert_eq!(
        cfg.user_token.verify,
        token_broker::config::UserTokenVerify::Introspection
    );
    let broker = token_broker::app::start(cfg).await.unwrap();
    let env = Env {
        url: broker.public_url(),
        idp,
        broker,
        http: reqwest::Client::new(),
    };

    let user = env.login("alice").await;
    let exp = claims(&user)["exp"].as_u64().unwrap();
    let (status, _, _, body) = parts(env.exchange(Some(&user), "kagenti").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(introspections(&env), 1);
    let (status, _, _, body) = parts(env.exchange(Some(&user), "sonataflow").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(introspections(&env), 1, "the positive answer is remembered");
    // Past `exp` the remembered answer is gone: the token is refused, not served from memory.
    sleep_until_unix(exp + 1).await;
    let (status, _, _, body) = parts(env.exchange(Some(&user), "jobs").await).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(introspections(&env), 2, "asked again after exp");

    // Inactive: the user's session ended at the IdP.
    let bob = env.login("bob").await;
    env.idp.logout_user("bob");
    let before = env.exchanges();
    let (status, _, _, body) = parts(env.exchange(Some(&bob), "kagenti").await).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not active"),
        "{body}"
    );
    assert_eq!(env.exchanges(), before);

    // The IdP down: 503, fail closed.
    let carol = env.login("alice").await;
    env.idp.stop().await;
    let (status, _, _, body) = parts(env.exchange(Some(&carol), "sonataflow").await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    env.broker.stop().await;
}
