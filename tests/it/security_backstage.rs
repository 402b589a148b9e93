//! Forged plugin tokens must not drive Backstage key-set fetches (docs/security.md, "Forged
//! plugin tokens driving key-set fetches"). A plugin token's unverified `sub` picks the JWKS URL
//! the broker fetches, so these tests count the fetches where they land: at a stand-in for the
//! Backstage backend on 127.0.0.1:0 that serves per-plugin JWKS (good, failing or slow) and
//! answers 404 for plugins it does not know, as Backstage does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, http::StatusCode, web};
use futures_util::future::join_all;

use crate::backstage::EsKey;
use crate::support::*;

/// How the stand-in answers one plugin's `/.backstage/auth/v1/jwks.json`.
#[derive(Clone)]
struct Plugin {
    status: u16,
    body: serde_json::Value,
    delay: Duration,
}

fn keys(k: &EsKey) -> Plugin {
    Plugin {
        status: 200,
        body: serde_json::json!({"keys": [k.jwk()]}),
        delay: Duration::ZERO,
    }
}

fn failing(status: u16) -> Plugin {
    Plugin {
        status,
        body: serde_json::json!({"error": "down"}),
        delay: Duration::ZERO,
    }
}

struct StandIn {
    url: String,
    server: actix_web::dev::ServerHandle,
    /// Requests received, by plugin id (`<other>` for any other path).
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl StandIn {
    fn hits(&self, plugin: &str) -> usize {
        self.hits.lock().unwrap().get(plugin).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

async fn stand_in(plugins: Vec<(String, Plugin)>) -> StandIn {
    let plugins: Arc<HashMap<String, Plugin>> = Arc::new(plugins.into_iter().collect());
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let h = hits.clone();
    let server = HttpServer::new(move || {
        let (p, h, h2) = (plugins.clone(), h.clone(), h.clone());
        App::new()
            .route(
                "/api/{plugin}/.backstage/auth/v1/jwks.json",
                web::get().to(move |id: web::Path<String>| {
                    let (p, h) = (p.clone(), h.clone());
                    async move {
                        *h.lock().unwrap().entry(id.clone()).or_default() += 1;
                        match p.get(id.as_str()) {
                            Some(plugin) => {
                                tokio::time::sleep(plugin.delay).await;
                                HttpResponse::build(StatusCode::from_u16(plugin.status).unwrap())
                                    .json(&plugin.body)
                            }
                            None => HttpResponse::NotFound().finish(),
                        }
                    }
                }),
            )
            .default_service(web::to(move || {
                let h = h2.clone();
                async move {
                    *h.lock().unwrap().entry("<other>".into()).or_default() += 1;
                    HttpResponse::NotFound().finish()
                }
            }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    StandIn {
        url,
        server: handle,
        hits,
    }
}

/// The broker trusting the stand-in as its Backstage, with `extra` appended to the YAML.
async fn broker(bs: &StandIn, extra: &str) -> Env {
    start_with_yaml(Opts::default(), |yaml| {
        yaml.replace(
            "backend:\n  auth:\n",
            &format!("backend:\n  baseUrl: {}\n  auth:\n", bs.url),
        ) + extra
    })
    .await
}

/// A plugin token as Backstage issues it (§3.3 shapes), `sub` = `plugin`, for the broker.
fn plugin_token(key: &EsKey, plugin: &str) -> String {
    let iat = now();
    key.sign_raw(
        &format!(
            r#"{{"typ":"vnd.backstage.plugin","alg":"ES256","kid":"{}"}}"#,
            key.kid
        ),
        &format!(
            r#"{{"sub":"{plugin}","aud":"token-broker","iat":{iat},"exp":{}}}"#,
            iat + 3600
        ),
    )
}

/// A plugin id nobody has: what a flood of forged tokens would carry.
fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// `POST /v1/token` for target `jobs` (service principals get the service-account token):
/// status and body.
async fn call(env: &Env, bearer: &str) -> (u16, serde_json::Value) {
    let r = env
        .token(
            Some(bearer),
            None,
            &[("grant_type", TE), ("audience", "jobs")],
        )
        .await;
    let (status, _, _, body) = parts(r).await;
    (status, body)
}

/// At most this many fetches of never-seen key sets after `elapsed`: the burst of 10 plus one
/// per 6 s (src/inbound/backstage/keys.rs `Limits::default`).
fn unseen_budget(elapsed: Duration) -> usize {
    10 + usize::try_from(elapsed.as_secs() / 6).unwrap()
}

#[actix_web::test]
async fn forged_plugin_tokens_cause_a_handful_of_fetches_and_genuine_callers_pass() {
    let catalog = EsKey::new();
    let bs = stand_in(vec![
        ("catalog".into(), keys(&catalog)),
        ("broken".into(), failing(500)),
    ])
    .await;
    let env = broker(&bs, "").await;
    let (s, body) = call(&env, &plugin_token(&catalog, "catalog")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(bs.hits("catalog"), 1);

    // 300 forged tokens, signed by the attacker's own key: half with fresh plugin ids (404 at
    // Backstage), half for a real plugin whose JWKS endpoint fails. Sent 30 at a time, each
    // wave together with a genuine plugin token.
    let attacker = EsKey::new();
    let forged: Vec<String> = (0..300)
        .map(|i| {
            let sub = if i % 2 == 0 {
                random_id("forged-")
            } else {
                "broken".to_owned()
            };
            plugin_token(&attacker, &sub)
        })
        .collect();
    let t0 = Instant::now();
    for wave in forged.chunks(30) {
        let genuine = plugin_token(&catalog, "catalog");
        let (refused, (ok, body)) = futures_util::join!(
            join_all(wave.iter().map(|t| call(&env, t))),
            call(&env, &genuine)
        );
        for (s, b) in &refused {
            assert_eq!(*s, 401, "{b}");
        }
        assert_eq!(
            ok, 200,
            "a genuine plugin token refused during the flood: {body}"
        );
    }
    let elapsed = t0.elapsed();
    let forged_fetches = bs.total() - bs.hits("catalog");
    // The broken plugin's URL never served a set either: it shares the same budget, and its
    // failure is remembered for the negative TTL.
    assert!(
        forged_fetches <= unseen_budget(elapsed) + 1,
        "300 forged tokens caused {forged_fetches} key-set fetches in {elapsed:?}"
    );
    let broken_bound = 1 + usize::try_from(elapsed.as_secs() / 10).unwrap();
    assert!(bs.hits("broken") <= broken_bound, "{}", bs.hits("broken"));
    assert_eq!(bs.hits("catalog"), 1, "the genuine set was never dropped");

    // After the flood: genuine callers still pass without a new fetch.
    let (s, body) = call(&env, &plugin_token(&catalog, "catalog")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(bs.hits("catalog"), 1);
    eprintln!("300 forged plugin tokens → {forged_fetches} JWKS fetches in {elapsed:?}");
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn concurrent_requests_share_one_slow_jwks_fetch() {
    const DELAY: Duration = Duration::from_millis(1500);
    let slow = EsKey::new();
    let mut plugin = keys(&slow);
    plugin.delay = DELAY;
    let bs = stand_in(vec![("slowpoke".into(), plugin)]).await;
    let env = broker(&bs, "").await;

    let t0 = Instant::now();
    let done = join_all((0..8).map(|_| {
        let token = plugin_token(&slow, "slowpoke");
        let env = &env;
        async move {
            let (s, body) = call(env, &token).await;
            (s, body, t0.elapsed())
        }
    }))
    .await;
    for (s, body, _) in &done {
        assert_eq!(*s, 200, "{body}");
    }
    let slowest = done.iter().map(|d| d.2).max().unwrap();
    assert_eq!(bs.hits("slowpoke"), 1, "eight waiters, one fetch");
    // Not serialised (8 × 1.5 s before the fix): about one fetch time.
    assert!(
        slowest < DELAY * 2,
        "8 concurrent requests took {slowest:?} with a {DELAY:?} JWKS"
    );
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn a_failed_jwks_fetch_is_remembered_for_the_negative_ttl() {
    let bs = stand_in(vec![("broken".into(), failing(503))]).await;
    let env = broker(&bs, "").await;
    let attacker = EsKey::new();
    let unknown = random_id("nobody-");
    for round in 1..=3 {
        // A plugin whose endpoint fails, and one Backstage does not have (404).
        for plugin in ["broken", unknown.as_str()] {
            let (s, body) = call(&env, &plugin_token(&attacker, plugin)).await;
            assert_eq!(s, 401, "{plugin} round {round}: {body}");
            assert_eq!(bs.hits(plugin), 1, "{plugin} round {round}: fetched again");
        }
    }
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn an_overlong_plugin_id_is_refused_without_a_fetch() {
    let key = EsKey::new();
    let longest = "b".repeat(64);
    let bs = stand_in(vec![
        ("a".repeat(65), keys(&key)),
        (longest.clone(), keys(&key)),
    ])
    .await;
    let env = broker(&bs, "").await;

    let (s, body) = call(&env, &plugin_token(&key, &"a".repeat(65))).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .ends_with("Failed plugin token verification: forbidden subject format"),
        "{body}"
    );
    assert_eq!(bs.total(), 0, "an over-long id reached the network");
    // 64 characters is still a plugin id.
    let (s, body) = call(&env, &plugin_token(&key, &longest)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(bs.total(), 1);
    bs.server.stop(true).await;
    env.stop().await;
}

#[actix_web::test]
async fn trusted_plugins_refuse_other_ids_without_a_fetch() {
    let (catalog, scaffolder, tools) = (EsKey::new(), EsKey::new(), EsKey::new());
    let bs = stand_in(vec![
        ("catalog".into(), keys(&catalog)),
        ("scaffolder".into(), keys(&scaffolder)),
        ("rhdh-tools".into(), keys(&tools)),
    ])
    .await;
    let env = broker(&bs, "backstage:\n  trustedPlugins: [catalog, \"rhdh-*\"]\n").await;

    // A real plugin with a valid token, but not trusted: refused before any fetch.
    let (s, body) = call(&env, &plugin_token(&scaffolder, "scaffolder")).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .ends_with("Failed plugin token verification: plugin is not trusted"),
        "{body}"
    );
    // A flood of forged ids outside the list: not one fetch.
    let attacker = EsKey::new();
    let refused = join_all((0..100).map(|_| async {
        call(&env, &plugin_token(&attacker, &random_id("forged-")))
            .await
            .0
    }))
    .await;
    assert!(refused.iter().all(|s| *s == 401));
    assert_eq!(bs.total(), 0, "an untrusted id reached the network");

    // A pattern admits.
    let (s, body) = call(&env, &plugin_token(&tools, "rhdh-tools")).await;
    assert_eq!(s, 200, "{body}");
    // Forged ids the pattern admits still share the budget for unseen key sets ...
    let t0 = Instant::now();
    let refused = join_all((0..60).map(|_| async {
        call(&env, &plugin_token(&attacker, &random_id("rhdh-")))
            .await
            .0
    }))
    .await;
    assert!(refused.iter().all(|s| *s == 401));
    let forged = bs.total() - bs.hits("rhdh-tools");
    assert!(forged < unseen_budget(t0.elapsed()), "{forged} fetches");
    // ... but a plugin named exactly is configured, not unseen: its first token after the
    // flood still passes.
    let (s, body) = call(&env, &plugin_token(&catalog, "catalog")).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(bs.hits("catalog"), 1);
    bs.server.stop(true).await;
    env.stop().await;
}
