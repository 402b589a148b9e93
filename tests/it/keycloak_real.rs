//! End to end against a **real Keycloak** (`scripts/keycloak start all`: realm `dev` of
//! `config/keycloak/dev-realm.json`, instance `main` on 127.0.0.1:7180 with standard token
//! exchange V2 and the JWT authorization grant, instance `v1` on 127.0.0.1:7280 with the legacy
//! V1 for impersonation): the real broker binary (`serve`) with a configuration derived from
//! `config/keycloak.yaml`, every answer from Keycloak itself, passing the broker's post-exchange
//! checks (signature, `aud` ∋ target, `sub` = subject's `sub`, token types) unchanged.
//!
//! Exchanges are counted from Keycloak's own event store (admin REST API
//! `GET /admin/realms/dev/events`, realm events are on in the realm file), per user session,
//! so tests running in parallel do not see each other's exchanges.
//!
//! Gate: run when `TOKEN_BROKER_KEYCLOAK_TEST=1` (`scripts/test` sets it after starting
//! Keycloak); then an unreachable Keycloak is a failure. Without the variable every test prints
//! a SKIPPED line straight to stderr (past the test harness's output capture) and returns.
//!
//! Fixed ports: the realm's identity provider `token-broker-assertions` trusts the issuer
//! `http://127.0.0.1:7070` and fetches its keys from `http://127.0.0.1:7070/.well-known/jwks.json`,
//! so the JWT-authorization-grant test runs its broker on 127.0.0.1:7070 (it fails, saying so,
//! when that port is taken, e.g. by `token-broker dev`). Its assertion key is the one
//! `scripts/conformance` uses (`target/conformance/assertion-key.pem`, created by whichever
//! runs first): Keycloak caches the key set it fetched and refetches for an unknown `kid` at
//! most every 10 s, so two different keys in quick succession would fail `Invalid signature`.
//! Every other broker runs on free ports.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::backstage::{EsKey, FakeBackstage, start_backstage};
use crate::support::{TE, claims, header, now};

const GATE: &str = "TOKEN_BROKER_KEYCLOAK_TEST";
pub(crate) const KC_MAIN: &str = "http://127.0.0.1:7180";
const KC_V1: &str = "http://127.0.0.1:7280";
/// `backend.auth.externalAccess` and `admin.token` of config/keycloak.yaml.
const STATIC: &str = "dev-static-token";
pub(crate) const ADMIN_TOKEN: &str = "dev-admin-token";
const ASSERTION_PORT: u16 = 7070;

// ---------------------------------------------------------------------------------------------
// Gate and Keycloak

/// Writes to the process's stderr directly: `eprintln!` would be captured (and hidden) by the
/// test harness for a passing test, and a skip must never be silent.
pub(crate) fn loud(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

/// `Some(Kc)` when the real-Keycloak tests are to run (`TOKEN_BROKER_KEYCLOAK_TEST=1`); then
/// both instances must be up, or the test fails with the command that starts them.
pub(crate) async fn keycloak(test: &str) -> Option<Kc> {
    if std::env::var(GATE).as_deref() != Ok("1") {
        loud(&format!(
            "SKIPPED {test}: real-Keycloak end-to-end test not run ({GATE} is not 1). \
             Run `scripts/keycloak start all` and set {GATE}=1, or run `scripts/test`, which does both."
        ));
        return None;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for base in [KC_MAIN, KC_V1] {
        let url = format!("{base}/realms/dev/.well-known/openid-configuration");
        let r = http.get(&url).send().await;
        let ok = matches!(&r, Ok(r) if r.status() == 200);
        assert!(
            ok,
            "{GATE}=1 but Keycloak is not reachable at {url} ({:?}): start it with `scripts/keycloak start all`",
            r.map(|r| r.status())
        );
    }
    Some(Kc { http })
}

pub(crate) struct Kc {
    http: reqwest::Client,
}

impl Kc {
    /// alice's or bob's access token from the password grant at `client` (a new user session).
    pub(crate) async fn login(&self, base: &str, client: &str, user: &str) -> String {
        let r = self
            .http
            .post(format!("{base}/realms/dev/protocol/openid-connect/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", client),
                ("username", user),
                ("password", user),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "login of {user} at {client}: {v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// An admin access token (master realm, `admin-cli`, the bootstrap admin of
    /// scripts/keycloak).
    async fn admin_token(&self, base: &str) -> String {
        let r = self
            .http
            .post(format!(
                "{base}/realms/master/protocol/openid-connect/token"
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "admin login at {base}");
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// Keycloak's stored `TOKEN_EXCHANGE` events (successful exchanges) of the user session
    /// `sid` of `user_id`, as the admin API lists them.
    async fn exchanges_in_session(&self, user_id: &str, sid: &str) -> usize {
        let token = self.admin_token(KC_MAIN).await;
        let r = self
            .http
            .get(format!("{KC_MAIN}/admin/realms/dev/events"))
            .bearer_auth(token)
            .query(&[
                ("type", "TOKEN_EXCHANGE"),
                ("client", "token-broker"),
                ("user", user_id),
                ("max", "10000"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET /admin/realms/dev/events");
        let events: Vec<Value> = r.json().await.unwrap();
        events
            .iter()
            .filter(|e| e["sessionId"] == sid && e["type"] == "TOKEN_EXCHANGE")
            .count()
    }

    /// The exchange count of a session once Keycloak has stored `want` events (or 15 s have
    /// passed), re-read after a further second so that a late extra event is seen too.
    async fn settled_exchanges(&self, user_id: &str, sid: &str, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.exchanges_in_session(user_id, sid).await < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.exchanges_in_session(user_id, sid).await
    }

    /// Ends one user session at Keycloak (admin API), leaving the user's others alone.
    async fn end_session(&self, sid: &str) {
        let token = self.admin_token(KC_MAIN).await;
        let r = self
            .http
            .delete(format!("{KC_MAIN}/admin/realms/dev/sessions/{sid}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "DELETE session");
    }
}

pub(crate) fn str_claim(token: &str, name: &str) -> String {
    claims(token)[name]
        .as_str()
        .unwrap_or_else(|| panic!("claim {name} in {}", claims(token)))
        .to_owned()
}

fn aud_contains(c: &Value, aud: &str) -> bool {
    match &c["aud"] {
        Value::String(s) => s == aud,
        Value::Array(a) => a.iter().any(|v| v == aud),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The broker binary, configured from config/keycloak.yaml

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `text` with the one occurrence of `from` replaced: config/keycloak.yaml changing shape makes
/// the test fail here, saying what it looked for, instead of testing another configuration.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "config/keycloak.yaml: expected exactly one {from:?}"
    );
    text.replacen(from, to, 1)
}

/// Edits applied to config/keycloak.yaml for one test broker.
#[derive(Default)]
pub(crate) struct Edits {
    /// Public listener port (`None` = a free one).
    port: Option<u16>,
    /// The upstream of both targets (`None` = as in the file).
    upstream: Option<String>,
    /// `backend.baseUrl`: the (fake) Backstage backend.
    backstage: Option<String>,
    /// Keycloak instance (`KC_MAIN` when `None`).
    keycloak: Option<&'static str>,
    client_secret: Option<&'static str>,
    /// `assertion.keyFile`.
    assertion_key: Option<PathBuf>,
    /// kagenti's `userMapping` (`None` = as in the file: `jwt_authorization_grant`).
    kagenti_mapping: Option<&'static str>,
    /// YAML appended under `targets:` (two-space indented target entries).
    extra_targets: &'static str,
}

/// config/keycloak.yaml with the listeners on free ports and `edits` applied.
fn broker_yaml(public: u16, admin: u16, e: &Edits) -> String {
    let mut y = std::fs::read_to_string(repo("config/keycloak.yaml")).unwrap();
    y = replace_once(
        &y,
        "server:\n  listen: 127.0.0.1:7070\n",
        &format!("server:\n  listen: 127.0.0.1:{public}\n"),
    );
    y = replace_once(
        &y,
        "  listen: 127.0.0.1:7071\n",
        &format!("  listen: 127.0.0.1:{admin}\n"),
    );
    if let Some(kc) = e.keycloak {
        y = replace_once(
            &y,
            "  issuer: http://127.0.0.1:7180/realms/dev\n",
            &format!("  issuer: {kc}/realms/dev\n"),
        );
    }
    if let Some(s) = e.client_secret {
        y = replace_once(
            &y,
            "  clientSecret: token-broker-dev-secret\n",
            &format!("  clientSecret: {s}\n"),
        );
    }
    if let Some(u) = &e.upstream {
        assert_eq!(y.matches("upstream: http://127.0.0.1:7090\n").count(), 2);
        y = y.replace(
            "upstream: http://127.0.0.1:7090\n",
            &format!("upstream: {u}\n"),
        );
    }
    if let Some(b) = &e.backstage {
        y = replace_once(
            &y,
            "backend:\n  auth:\n",
            &format!("backend:\n  baseUrl: {b}\n  auth:\n"),
        );
    }
    if let Some(k) = &e.assertion_key {
        y = replace_once(
            &y,
            "  issuer: http://127.0.0.1:7070\n",
            &format!(
                "  issuer: http://127.0.0.1:7070\n  keyFile: {}\n",
                k.display()
            ),
        );
    }
    if let Some(m) = e.kagenti_mapping {
        y = replace_once(
            &y,
            "    userMapping: jwt_authorization_grant\n",
            &format!("    userMapping: {m}\n"),
        );
    }
    if !e.extra_targets.is_empty() {
        y = replace_once(&y, "targets:\n", &format!("targets:\n{}", e.extra_targets));
    }
    y
}

type Tail = Arc<Mutex<Vec<String>>>;

/// A running `token-broker serve`, killed (and its configuration directory removed) on drop.
pub(crate) struct Broker {
    child: Child,
    dir: PathBuf,
    url: String,
    pub(crate) admin: String,
    log: Tail,
    http: reqwest::Client,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

impl Broker {
    pub(crate) async fn start(test: &str, e: Edits) -> Broker {
        let public = e.port.unwrap_or_else(free_port);
        let admin = free_port();
        let dir = std::env::temp_dir().join(format!("tb-kc-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("broker.yaml");
        std::fs::write(&cfg, broker_yaml(public, admin, &e)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: Tail = Arc::default();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                    if l.len() >= 200 {
                        l.remove(0);
                    }
                    l.push(line);
                }
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = Broker {
            child,
            dir,
            url: format!("http://127.0.0.1:{public}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = b.http.get(format!("{}/readyz", b.admin)).send().await
                && r.status() == 200
            {
                break;
            }
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("the broker exited ({status}):\n{}", b.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the broker was not ready after 60 s:\n{}",
                b.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// `POST /v1/token` for `target` with a caller credential and an optional user token.
    async fn token(&self, caller: &str, user: Option<&str>, target: &str) -> Answer {
        let mut req = self
            .http
            .post(format!("{}/v1/token", self.url))
            .bearer_auth(caller)
            .form(&[("grant_type", TE), ("audience", target)]);
        if let Some(u) = user {
            req = req.header("X-Forwarded-Access-Token", u);
        }
        Answer::of(req.send().await.unwrap()).await
    }

    /// The exchange tester (`POST /admin/exchange`).
    pub(crate) async fn tester(&self, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/admin/exchange", self.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "POST /admin/exchange {body}");
        r.json().await.unwrap()
    }
}

/// One answer of `/v1/token`.
struct Answer {
    status: u16,
    identity: String,
    cache: String,
    body: Value,
}

impl Answer {
    async fn of(r: reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            identity: header(&r, "x-token-broker-identity"),
            cache: header(&r, "x-token-broker-cache"),
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    fn token(&self) -> &str {
        self.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}", self.body))
    }
}

/// The broker's answer is Keycloak's user token for `audience`: issued by the realm to the
/// broker's client, for the same user.
fn assert_user_token(a: &Answer, kc: &str, audience: &str, user_sub: &str) {
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.identity, "user", "{}", a.body);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(
        a.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let c = claims(a.token());
    assert_eq!(c["iss"], format!("{kc}/realms/dev"), "{c}");
    assert_eq!(c["azp"], "token-broker", "{c}");
    assert_eq!(c["sub"], user_sub, "{c}");
    assert!(aud_contains(&c, audience), "aud lacks {audience}: {c}");
}

// ---------------------------------------------------------------------------------------------
// The tests

#[actix_web::test]
async fn kc_user_exchange_for_both_targets_then_cache_hits() {
    let Some(kc) = keycloak("kc_user_exchange_for_both_targets_then_cache_hits").await else {
        return;
    };
    let b = Broker::start("exchange", Edits::default()).await;
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let (sub, sid) = (str_claim(&alice, "sub"), str_claim(&alice, "sid"));

    let k1 = b.token(STATIC, Some(&alice), "kagenti").await;
    assert_user_token(&k1, KC_MAIN, "kagenti-api", &sub);
    assert_eq!(k1.cache, "miss");
    assert_eq!(str_claim(k1.token(), "sid"), sid, "the user's own session");
    let s1 = b.token(STATIC, Some(&alice), "sonataflow").await;
    assert_user_token(&s1, KC_MAIN, "sonataflow", &sub);
    assert_eq!(s1.cache, "miss");

    // Again: served from the cache, the same tokens, no call to Keycloak.
    let k2 = b.token(STATIC, Some(&alice), "kagenti").await;
    let s2 = b.token(STATIC, Some(&alice), "sonataflow").await;
    assert_eq!((k2.status, k2.cache.as_str()), (200, "hit"), "{}", k2.body);
    assert_eq!((s2.status, s2.cache.as_str()), (200, "hit"), "{}", s2.body);
    assert_eq!(k2.token(), k1.token());
    assert_eq!(s2.token(), s1.token());
    assert_eq!(
        kc.settled_exchanges(&sub, &sid, 2).await,
        2,
        "Keycloak saw one exchange per target"
    );

    // A token the broker obtained is never accepted back as a user's token (azp token-broker).
    let back = b.token(STATIC, Some(k1.token()), "sonataflow").await;
    assert_eq!(back.status, 400, "{}", back.body);
    assert!(
        back.body["error_description"]
            .as_str()
            .unwrap()
            .contains("broker's own client"),
        "{}",
        back.body
    );
    assert_eq!(kc.settled_exchanges(&sub, &sid, 2).await, 2);
}

#[actix_web::test]
async fn kc_hundred_concurrent_cold_requests_make_one_exchange() {
    let Some(kc) = keycloak("kc_hundred_concurrent_cold_requests_make_one_exchange").await else {
        return;
    };
    let b = Broker::start("burst", Edits::default()).await;
    let bob = kc.login(KC_MAIN, "dev-frontend", "bob").await;
    let (sub, sid) = (str_claim(&bob, "sub"), str_claim(&bob, "sid"));
    let answers =
        futures_util::future::join_all((0..100).map(|_| b.token(STATIC, Some(&bob), "sonataflow")))
            .await;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for a in &answers {
        *outcomes
            .entry(format!("{} {}", a.status, a.cache))
            .or_default() += 1;
    }
    assert!(
        answers.iter().all(|a| a.status == 200),
        "all answered: {outcomes:?}"
    );
    assert_user_token(&answers[0], KC_MAIN, "sonataflow", &sub);
    assert!(
        answers.iter().all(|a| a.token() == answers[0].token()),
        "one token for all: {outcomes:?}"
    );
    assert_eq!(
        outcomes.get("200 miss").copied(),
        Some(1),
        "one request went to Keycloak: {outcomes:?}"
    );
    assert_eq!(
        kc.settled_exchanges(&sub, &sid, 1).await,
        1,
        "Keycloak's own events: exactly one exchange for 100 concurrent cold requests ({outcomes:?})"
    );
}

#[actix_web::test]
async fn kc_fallback_to_client_credentials() {
    let Some(_kc) = keycloak("kc_fallback_to_client_credentials").await else {
        return;
    };
    let b = Broker::start("fallback", Edits::default()).await;
    // kagenti (fallback: service_account) without a user token: the broker's own
    // client-credentials token, which carries every target audience (Audience mappers).
    let a = b.token(STATIC, None, "kagenti").await;
    assert_eq!(
        (a.status, a.identity.as_str()),
        (200, "service"),
        "{}",
        a.body
    );
    let c = claims(a.token());
    assert_eq!(c["iss"], format!("{KC_MAIN}/realms/dev"));
    assert_eq!(c["azp"], "token-broker");
    assert_eq!(c["preferred_username"], "service-account-token-broker");
    assert!(aud_contains(&c, "kagenti-api"), "{c}");
    let again = b.token(STATIC, None, "kagenti").await;
    assert_eq!(
        (again.status, again.cache.as_str()),
        (200, "hit"),
        "{}",
        again.body
    );
    assert_eq!(again.token(), a.token());
    // sonataflow (fallback: deny): no service token in place of a user's.
    let d = b.token(STATIC, None, "sonataflow").await;
    assert_eq!(d.status, 401, "{}", d.body);
    assert_eq!(d.identity, "");
    assert!(d.body.get("access_token").is_none());
}

/// Targets whose audiences the realm refuses, each the way Keycloak does.
const ERROR_TARGETS: &str = "  unavailable:\n    audience: broker\n    fallback: service_account\n  ghost:\n    audience: no-such-client\n    fallback: service_account\n  badscope:\n    audience: kagenti-api\n    fallback: service_account\n    scopes: [no-such-scope]\n";

#[actix_web::test]
async fn kc_keycloak_refusals_pass_through_with_hints() {
    let Some(kc) = keycloak("kc_keycloak_refusals_pass_through_with_hints").await else {
        return;
    };
    let b = Broker::start(
        "errors",
        Edits {
            extra_targets: ERROR_TARGETS,
            ..Edits::default()
        },
    )
    .await;
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    // Keycloak's refusals are passed through with their status and a hint, never replaced by
    // the service token (every one of these targets has fallback: service_account).
    for (target, status, error, description, hint) in [
        (
            "unavailable",
            400,
            "invalid_request",
            "Requested audience not available: broker",
            "Audience mapper",
        ),
        (
            "ghost",
            400,
            "invalid_client",
            "Audience not found",
            "not a client of the realm",
        ),
        (
            "badscope",
            400,
            "invalid_scope",
            "Invalid scopes: no-such-scope",
            "optional client scope",
        ),
    ] {
        let a = b.token(STATIC, Some(&alice), target).await;
        assert_eq!(a.status, status, "{target}: {}", a.body);
        assert_eq!(a.identity, "", "{target}");
        assert_eq!(a.body["error"], error, "{target}: {}", a.body);
        assert_eq!(a.body["error_description"], description, "{target}");
        assert!(
            a.body["hint"].as_str().unwrap_or("").contains(hint),
            "{target}: {}",
            a.body
        );
    }

    // A token of dev-frontend-no-audience (aud lacks token-broker): refused by the broker itself
    // with the hint, before Keycloak (no exchange in that session, not even a failed one).
    let no_aud = kc.login(KC_MAIN, "dev-frontend-no-audience", "alice").await;
    assert!(!aud_contains(&claims(&no_aud), "token-broker"));
    let a = b.token(STATIC, Some(&no_aud), "kagenti").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.body["error"], "invalid_request");
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("aud does not contain the broker's client 'token-broker'"),
        "{}",
        a.body
    );
    assert!(
        a.body["hint"]
            .as_str()
            .unwrap_or("")
            .contains("add an Audience mapper for 'token-broker'"),
        "{}",
        a.body
    );
    let (sub, sid) = (str_claim(&no_aud, "sub"), str_claim(&no_aud, "sid"));
    assert_eq!(kc.settled_exchanges(&sub, &sid, 0).await, 0);

    // A user session ended at Keycloak: the token still verifies locally (signature, expiry),
    // Keycloak answers "Invalid token", and the hint names the likely causes.
    let ended = kc.login(KC_MAIN, "dev-frontend", "bob").await;
    kc.end_session(&str_claim(&ended, "sid")).await;
    let a = b.token(STATIC, Some(&ended), "sonataflow").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(
        (&a.body["error"], &a.body["error_description"]),
        (&json!("invalid_request"), &json!("Invalid token"))
    );
    assert!(
        a.body["hint"]
            .as_str()
            .unwrap_or("")
            .contains("session may have ended"),
        "{}",
        a.body
    );

    // The broker's own client secret wrong: Keycloak's 401 is not the caller's fault → 502.
    drop(b);
    let wrong = Broker::start(
        "errors-secret",
        Edits {
            client_secret: Some("not-the-secret"),
            ..Edits::default()
        },
    )
    .await;
    let a = wrong.token(STATIC, Some(&alice), "kagenti").await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["error"], "unauthorized_client", "{}", a.body);
    assert_eq!(
        a.body["error_description"],
        "Invalid client or Invalid client credentials"
    );
    assert!(
        a.body["hint"]
            .as_str()
            .unwrap_or("")
            .contains("keycloak.clientSecret"),
        "{}",
        a.body
    );
}

/// The tester's checks that did not pass (`ok` false), by name.
pub(crate) fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn kc_exchange_tester_checklist() {
    let Some(kc) = keycloak("kc_exchange_tester_checklist").await else {
        return;
    };
    let b = Broker::start(
        "tester",
        Edits {
            extra_targets: ERROR_TARGETS,
            ..Edits::default()
        },
    )
    .await;
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let sub = str_claim(&alice, "sub");

    // Success: Keycloak issues the token, every check that can be decided passes.
    for target in ["kagenti", "sonataflow"] {
        let r = b
            .tester(json!({"target": target, "subject_token": alice}))
            .await;
        assert_eq!(r["outcome"], "success", "{target}: {r}");
        assert_eq!(r["response"]["status"], 200);
        assert!(!r.to_string().contains(&alice), "subject token echoed");
        assert_eq!(failed_checks(&r), Vec::<String>::new(), "{r}");
        let passed = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == true)
            .count();
        assert!(passed >= 6, "{r}");
        assert_eq!(r["result_claims"]["claims"]["sub"], sub.as_str());
        assert_eq!(r["result_claims"]["claims"]["azp"], "token-broker");
    }
    // The tester's own dev login works against a real Keycloak on loopback too.
    let r = b
        .tester(json!({"target": "kagenti", "dev_user": "alice"}))
        .await;
    assert_eq!(r["outcome"], "success", "{r}");

    // Failures: Keycloak's literal answer, and exactly the check that names the fix fails.
    let no_aud = kc.login(KC_MAIN, "dev-frontend-no-audience", "alice").await;
    for (target, token, status, description, check) in [
        (
            "kagenti",
            no_aud.as_str(),
            403,
            "Client is not within the token audience",
            "Requester client in the subject token's aud or azp",
        ),
        (
            "unavailable",
            alice.as_str(),
            400,
            "Requested audience not available: broker",
            "Audience available to the requester",
        ),
        (
            "ghost",
            alice.as_str(),
            400,
            "Audience not found",
            "Audience available to the requester",
        ),
    ] {
        let r = b
            .tester(json!({"target": target, "subject_token": token}))
            .await;
        assert_eq!(r["outcome"], "keycloak_error", "{target}: {r}");
        assert_eq!(r["response"]["status"], status, "{target}: {r}");
        assert_eq!(
            r["response"]["body"]["error_description"], description,
            "{target}"
        );
        assert!(r["hint"].is_string(), "{target}: {r}");
        assert_eq!(failed_checks(&r), vec![check.to_owned()], "{target}: {r}");
    }
    // The failing aud check names the client to add the mapper to.
    let r = b
        .tester(json!({"target": "kagenti", "subject_token": no_aud}))
        .await;
    let aud = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap();
    assert!(
        aud["fix"]
            .as_str()
            .unwrap()
            .contains("Clients → dev-frontend-no-audience"),
        "{aud}"
    );
}

// ---------------------------------------------------------------------------------------------
// Proxy mode

/// A request as the upstream saw it: path and headers.
type Request = (String, Vec<(String, String)>);

#[derive(Default)]
struct Seen(Mutex<Vec<Request>>);

async fn record(req: HttpRequest, _body: web::Bytes, seen: web::Data<Seen>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    seen.0
        .lock()
        .unwrap()
        .push((req.uri().path().to_owned(), headers));
    HttpResponse::Ok().json(json!({"upstream": "ok"}))
}

#[actix_web::test]
async fn kc_proxy_mode_forwards_keycloak_tokens() {
    let Some(kc) = keycloak("kc_proxy_mode_forwards_keycloak_tokens").await else {
        return;
    };
    let seen = web::Data::new(Seen::default());
    let s = seen.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(s.clone())
            .default_service(web::to(record))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let up = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let b = Broker::start(
        "proxy",
        Edits {
            upstream: Some(format!("{up}/base")),
            ..Edits::default()
        },
    )
    .await;
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let sub = str_claim(&alice, "sub");
    for (target, token_header, audience) in [
        ("kagenti", "authorization", "kagenti-api"),
        ("sonataflow", "x-authorization-keycloak", "sonataflow"),
    ] {
        let r = b
            .http
            .get(format!("{}/v1/proxy/{target}/api/x", b.url))
            .bearer_auth(STATIC)
            .header("X-Forwarded-Access-Token", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{target}");
        assert_eq!(header(&r, "x-token-broker-identity"), "user");
        let (path, headers) = seen.0.lock().unwrap().pop().unwrap();
        assert_eq!(path, "/base/api/x");
        let raw = headers
            .iter()
            .find(|(n, _)| n == token_header)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{target}: no {token_header} in {headers:?}"));
        let token = if token_header == "authorization" {
            raw.strip_prefix("Bearer ").unwrap().to_owned()
        } else {
            raw
        };
        let c = claims(&token);
        assert_eq!(c["iss"], format!("{KC_MAIN}/realms/dev"));
        assert_eq!(c["sub"], sub.as_str(), "{target}");
        assert_eq!(c["azp"], "token-broker");
        assert!(aud_contains(&c, audience), "{target}: {c}");
        assert!(
            !headers.iter().any(|(n, _)| n == "x-forwarded-access-token"),
            "the user's own token is not forwarded"
        );
    }
    // Without a user token kagenti falls back to the service account.
    let r = b
        .http
        .get(format!("{}/v1/proxy/kagenti/api/y", b.url))
        .bearer_auth(STATIC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-token-broker-identity"), "service");
    let (_, headers) = seen.0.lock().unwrap().pop().unwrap();
    let raw = headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    let c = claims(raw.strip_prefix("Bearer ").unwrap());
    assert_eq!(c["preferred_username"], "service-account-token-broker");
    drop(b);
    handle.stop(true).await;
}

// ---------------------------------------------------------------------------------------------
// User mappings: Backstage users without a Keycloak token

/// A fake Backstage backend publishing the auth backend's and plugin `catalog`'s keys.
async fn backstage() -> (FakeBackstage, EsKey, EsKey) {
    let (auth, catalog) = (EsKey::new(), EsKey::new());
    let sets = HashMap::from([
        ("auth".to_owned(), json!({"keys": [auth.jwk()]})),
        ("catalog".to_owned(), json!({"keys": [catalog.jwk()]})),
    ]);
    (start_backstage(sets).await, auth, catalog)
}

/// Plugin `catalog`'s token on behalf of `user` (a new credential at every call).
fn obo(auth: &EsKey, catalog: &EsKey, user: &str) -> String {
    let exp = now() + 3600;
    let limited = auth.limited_token(user, exp);
    catalog.plugin_token("catalog", "token-broker", exp, Some(&limited))
}

/// The assertion key shared with scripts/conformance (see the module doc), created if absent
/// in the same form (PKCS#8 PEM, P-256, mode 0600).
fn shared_assertion_key() -> PathBuf {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let path = repo("target/conformance/assertion-key.pem");
    if !path.is_file() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .unwrap();
            f.write_all(pem.as_bytes()).unwrap();
        }
        // A concurrent creator may have won: keep theirs.
        if !path.is_file() {
            std::fs::rename(&tmp, &path).unwrap();
        } else {
            std::fs::remove_file(&tmp).ok();
        }
    }
    path
}

#[actix_web::test]
async fn kc_jwt_authorization_grant_user_mapping() {
    let Some(kc) = keycloak("kc_jwt_authorization_grant_user_mapping").await else {
        return;
    };
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", ASSERTION_PORT)).is_ok(),
        "127.0.0.1:{ASSERTION_PORT} is in use: this test runs the broker there, because realm dev's \
         identity provider token-broker-assertions trusts http://127.0.0.1:{ASSERTION_PORT} \
         (config/keycloak/dev-realm.json); stop what listens there (token-broker dev or serve?)"
    );
    let (bs, auth, catalog) = backstage().await;
    // config/keycloak.yaml as it is: kagenti maps Backstage users with the JWT authorization
    // grant; the broker on 127.0.0.1:7070, where Keycloak fetches its keys.
    let b = Broker::start(
        "jwt-grant",
        Edits {
            port: Some(ASSERTION_PORT),
            backstage: Some(bs.url.clone()),
            assertion_key: Some(shared_assertion_key()),
            ..Edits::default()
        },
    )
    .await;
    let alice_sub = str_claim(&kc.login(KC_MAIN, "dev-frontend", "alice").await, "sub");
    let bob_sub = str_claim(&kc.login(KC_MAIN, "dev-frontend", "bob").await, "sub");

    // alice through plugin catalog → the broker's assertion → alice's own Keycloak token.
    let cred = obo(&auth, &catalog, "user:default/alice");
    let a = b.token(&cred, None, "kagenti").await;
    assert_user_token(&a, KC_MAIN, "kagenti-api", &alice_sub);
    assert_eq!(a.cache, "miss");
    let c = claims(a.token());
    assert_eq!(c["preferred_username"], "alice");
    assert!(c.get("sid").is_none(), "a transient session: {c}");
    // The same credential again: a cache hit.
    let again = b.token(&cred, None, "kagenti").await;
    assert_eq!((again.status, again.cache.as_str()), (200, "hit"));
    assert_eq!(again.token(), a.token());
    // bob is linked too; a fresh credential means a fresh assertion (Keycloak refuses a reused
    // jti, so a second success proves a new one).
    let a = b
        .token(&obo(&auth, &catalog, "user:default/bob"), None, "kagenti")
        .await;
    assert_user_token(&a, KC_MAIN, "kagenti-api", &bob_sub);
    let a = b
        .token(&obo(&auth, &catalog, "user:default/alice"), None, "kagenti")
        .await;
    assert_user_token(&a, KC_MAIN, "kagenti-api", &alice_sub);

    // A Backstage user without a linked Keycloak user: Keycloak's refusal, passed through,
    // never the service token kagenti's fallback would give.
    let a = b
        .token(&obo(&auth, &catalog, "user:default/carol"), None, "kagenti")
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.identity, "");
    assert_eq!(
        (&a.body["error"], &a.body["error_description"]),
        (&json!("invalid_grant"), &json!("User not found"))
    );
    // sonataflow has no user mapping (fallback deny): refused, no token.
    let a = b
        .token(
            &obo(&auth, &catalog, "user:default/alice"),
            None,
            "sonataflow",
        )
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    drop(b);
    bs.server.stop(true).await;
}

#[actix_web::test]
async fn kc_impersonation_user_mapping_on_v1() {
    let Some(kc) = keycloak("kc_impersonation_user_mapping_on_v1").await else {
        return;
    };
    let (bs, auth, catalog) = backstage().await;
    // The same configuration against the V1 instance, kagenti mapping users by naked
    // impersonation (requested_subject = the Backstage user's name).
    let b = Broker::start(
        "impersonation",
        Edits {
            keycloak: Some(KC_V1),
            backstage: Some(bs.url.clone()),
            kagenti_mapping: Some("impersonation"),
            ..Edits::default()
        },
    )
    .await;
    let alice_sub = str_claim(&kc.login(KC_V1, "dev-frontend", "alice").await, "sub");
    let a = b
        .token(&obo(&auth, &catalog, "user:default/alice"), None, "kagenti")
        .await;
    assert_user_token(&a, KC_V1, "kagenti-api", &alice_sub);
    assert_eq!(claims(a.token())["preferred_username"], "alice");

    // An unknown user: V1's 403, passed through (no service token).
    let a = b
        .token(&obo(&auth, &catalog, "user:default/carol"), None, "kagenti")
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.identity, "");
    assert_eq!(
        (&a.body["error"], &a.body["error_description"]),
        (
            &json!("access_denied"),
            &json!("Client not allowed to exchange")
        )
    );
    // A Keycloak user token on the V1 server is exchanged as on main.
    let alice = kc.login(KC_V1, "dev-frontend", "alice").await;
    let a = b.token(STATIC, Some(&alice), "sonataflow").await;
    assert_user_token(&a, KC_V1, "sonataflow", &alice_sub);
    drop(b);
    bs.server.stop(true).await;
}

// ---------------------------------------------------------------------------------------------
// Logout (issue 13): a Keycloak admin's session logout reaches the broker and evicts

impl Kc {
    /// The realm-internal id of client `client_id`.
    async fn client_uuid(&self, admin: &str, client_id: &str) -> String {
        let r = self
            .http
            .get(format!("{KC_MAIN}/admin/realms/dev/clients"))
            .query(&[("clientId", client_id)])
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET clients?clientId={client_id}");
        let v: Value = r.json().await.unwrap();
        v[0]["id"].as_str().unwrap().to_owned()
    }

    /// Sets (or, with `None`, clears) the "Backchannel logout URL" of `client`, as
    /// docs/keycloak-setup.md step 3 tells an admin to.
    async fn set_backchannel_url(&self, client: &str, url: Option<&str>) {
        let admin = self.admin_token(KC_MAIN).await;
        let id = self.client_uuid(&admin, client).await;
        let client_url = format!("{KC_MAIN}/admin/realms/dev/clients/{id}");
        let r = self
            .http
            .get(&client_url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut rep: Value = r.json().await.unwrap();
        rep["attributes"]["backchannel.logout.url"] = json!(url.unwrap_or(""));
        rep["attributes"]["backchannel.logout.session.required"] = json!("true");
        let r = self
            .http
            .put(&client_url)
            .bearer_auth(&admin)
            .json(&rep)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "PUT client {client}");
    }
}

#[actix_web::test]
async fn kc_admin_session_logout_reaches_the_broker_and_evicts() {
    let test = "kc_admin_session_logout_reaches_the_broker_and_evicts";
    // Only the main instance is needed; the gate is the same.
    if std::env::var(GATE).as_deref() != Ok("1") {
        loud(&format!(
            "SKIPPED {test}: real-Keycloak end-to-end test not run ({GATE} is not 1)."
        ));
        return;
    }
    let kc = Kc {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    };
    let b = Broker::start("logout", Edits::default()).await;
    // The login client's URL: Keycloak tells only the clients with a client session in the
    // user session, and a standard token exchange gives the broker's client none.
    kc.set_backchannel_url(
        "dev-frontend",
        Some(&format!("{}/v1/backchannel-logout", b.url)),
    )
    .await;
    let alice = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let alice2 = kc.login(KC_MAIN, "dev-frontend", "alice").await;
    let sid = str_claim(&alice, "sid");
    for t in [&alice, &alice2] {
        let first = b.token(STATIC, Some(t), "kagenti").await;
        assert_eq!(
            (first.status, first.cache.as_str()),
            (200, "miss"),
            "{}",
            first.body
        );
        let again = b.token(STATIC, Some(t), "kagenti").await;
        assert_eq!(again.cache, "hit");
    }

    // The admin ends alice's first session (admin API); Keycloak tells the login client's
    // back-channel URL: the broker.
    kc.end_session(&sid).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .log_text()
        .contains("back-channel logout: cache entries evicted")
    {
        assert!(
            Instant::now() < deadline,
            "no back-channel logout reached the broker:\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = b.token(STATIC, Some(&alice), "kagenti").await;
    kc.set_backchannel_url("dev-frontend", None).await;
    assert_ne!(after.cache, "hit", "{}", after.body);
    assert_eq!(
        after.status, 400,
        "Keycloak refuses the ended session's token: {}",
        after.body
    );
    // The other session is untouched.
    let other = b.token(STATIC, Some(&alice2), "kagenti").await;
    assert_eq!(
        (other.status, other.cache.as_str()),
        (200, "hit"),
        "{}",
        other.body
    );
}
