//! Issue 9 §5, the lower findings: forced re-exchange after upstream 401s, the client-credentials
//! grant under the IdP bound and metrics, the tester's redaction of long IdP answers, and which
//! IdP failures the service-account fallback may cover.
//!
//! Stand-ins: `Front`, an IdP in front of the dev IdP that forwards every request with its own
//! `Host` (the dev IdP, like Keycloak, derives its issuer from `Host`, so the broker sees one
//! consistent IdP at the stand-in's address) and answers token-exchange requests with a canned
//! answer while one is set; `Upstream`, a proxy-mode target that refuses every call with 401.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Stand-ins

/// A canned token-endpoint answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    content_type: &'static str,
    body: String,
}

#[derive(Default)]
struct FrontState {
    /// `http://addr` of the dev IdP.
    upstream: Mutex<String>,
    canned: Mutex<Option<Canned>>,
    canned_served: AtomicUsize,
}

struct Front {
    state: web::Data<FrontState>,
    /// `http://addr` of the stand-in.
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Front {
    fn answer_exchanges_with(&self, status: u16, content_type: &'static str, body: &str) {
        *self.state.canned.lock().unwrap() = Some(Canned {
            status,
            content_type,
            body: body.to_owned(),
        });
    }

    fn forward_everything(&self) {
        *self.state.canned.lock().unwrap() = None;
    }

    async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn front_handle(req: HttpRequest, body: Bytes, st: web::Data<FrontState>) -> HttpResponse {
    let is_exchange = req.path().ends_with("/protocol/openid-connect/token")
        && url::form_urlencoded::parse(&body).any(|(k, v)| k == "grant_type" && v == TE);
    if is_exchange && let Some(c) = st.canned.lock().unwrap().clone() {
        st.canned_served.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(c.status).unwrap())
            .insert_header(("content-type", c.content_type))
            .body(c.body);
    }
    let upstream = st.upstream.lock().unwrap().clone();
    let target = format!(
        "{upstream}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut out = reqwest::Client::new().request(method, target).body(body);
    for name in ["host", "authorization", "content-type", "accept"] {
        if let Some(v) = req.headers().get(name) {
            out = out.header(name, v.as_bytes());
        }
    }
    match out.send().await {
        Ok(r) => {
            let status = actix_web::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "application/octet-stream".into());
            let bytes = r.bytes().await.unwrap_or_default();
            HttpResponse::build(status)
                .insert_header(("content-type", ct))
                .body(bytes)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn front() -> Front {
    let state = web::Data::new(FrontState::default());
    let s = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(s.clone())
            .default_service(web::to(front_handle))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Front {
        state,
        url: format!("http://{addr}"),
        handle,
    }
}

/// A broker whose `keycloak.issuer` is the stand-in's: every IdP call goes through `front`.
async fn start_behind(front: &Front, o: Opts) -> Env {
    start_behind_with(front, o, |y| y).await
}

async fn start_behind_with(front: &Front, o: Opts, edit: impl FnOnce(String) -> String) -> Env {
    start_with_yaml(o, |y| {
        let dev_issuer = y
            .lines()
            .find_map(|l| l.trim().strip_prefix("issuer: "))
            .unwrap()
            .to_owned();
        let dev_base = dev_issuer.split("/realms/").next().unwrap().to_owned();
        *front.state.upstream.lock().unwrap() = dev_base.clone();
        edit(y.replace(&dev_issuer, &dev_issuer.replace(&dev_base, &front.url)))
    })
    .await
}

/// A user token whose `iss` is the stand-in's (logged in through it).
async fn login_via(env: &Env, front: &Front, user: &str) -> String {
    let r = env
        .http
        .post(format!(
            "{}/realms/dev/protocol/openid-connect/token",
            front.url
        ))
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
    let v: Value = r.json().await.unwrap();
    let t = v["access_token"].as_str().unwrap().to_owned();
    assert!(
        claims(&t)["iss"].as_str().unwrap().starts_with(&front.url),
        "the stand-in's issuer"
    );
    t
}

#[derive(Default)]
struct UpstreamState {
    calls: AtomicUsize,
}

struct Upstream {
    state: web::Data<UpstreamState>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

/// A proxy-mode target that refuses every call with 401.
async fn refusing_upstream() -> Upstream {
    let state = web::Data::new(UpstreamState::default());
    let s = state.clone();
    let server = HttpServer::new(move || {
        App::new().app_data(s.clone()).default_service(web::to(
            |st: web::Data<UpstreamState>| async move {
                st.calls.fetch_add(1, Ordering::SeqCst);
                HttpResponse::Unauthorized()
                    .insert_header(("www-authenticate", "Bearer error=\"invalid_token\""))
                    .finish()
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Upstream {
        state,
        url: format!("http://{addr}"),
        handle,
    }
}

async fn env_with_upstream(up: &Upstream) -> Env {
    start(Opts {
        upstream: Some(format!("{}/base", up.url)),
        proxy_yaml: "proxy:\n  idleTimeout: 2s\n  maxRetries: 0\n".into(),
        ..Opts::default()
    })
    .await
}

impl Env {
    async fn proxied(&self, target: &str, user: Option<&str>) -> u16 {
        let mut r = self
            .http
            .get(format!("{}/v1/proxy/{target}/x", self.url))
            .bearer_auth(STATIC_TOKEN);
        if let Some(u) = user {
            r = r.header("X-Forwarded-Access-Token", u);
        }
        r.send().await.unwrap().status().as_u16()
    }

    async fn metrics(&self) -> String {
        let admin = format!("http://{}", self.broker.admin_addr.unwrap());
        self.http
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The value of the metrics line that starts with `series` (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// (a) upstream 401s: forced re-exchange rate-limited per entry; the service token is kept

#[actix_web::test]
async fn upstream_401s_force_one_re_exchange_per_entry_and_keep_the_service_token() {
    let up = refusing_upstream().await;
    let env = env_with_upstream(&up).await;
    // The shared service-account entry, warmed by a service caller.
    let (status, id, _, _) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "service"));
    assert_eq!(env.client_credentials(), 1);

    let alice = env.login("alice").await;
    for _ in 0..30 {
        assert_eq!(env.proxied("kagenti", Some(&alice)).await, 401);
    }
    // The first call: its exchange, one forced re-exchange and one retry. The other 29: the
    // cached token, refused, passed on without exchanging again (was: 31 exchanges).
    assert_eq!(env.exchanges(), 2);
    assert_eq!(up.state.calls.load(Ordering::SeqCst), 31);
    // The service-account entry was not refused, so it was kept.
    let (status, id, cache, _) = parts(env.exchange(None, "kagenti").await).await;
    assert_eq!(
        (status, id.as_str(), cache.as_str()),
        (200, "service", "hit")
    );
    assert_eq!(env.client_credentials(), 1);

    // The limit is per entry: another user's first refusal still re-exchanges.
    let bob = env.login("bob").await;
    assert_eq!(env.proxied("kagenti", Some(&bob)).await, 401);
    assert_eq!(env.exchanges(), 4);
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn a_refused_service_account_token_is_dropped_at_most_once_per_interval() {
    let up = refusing_upstream().await;
    let env = env_with_upstream(&up).await;
    let alice = env.login("alice").await;
    // alice's exchanged token is cached and must survive the service token's refusals.
    let (status, id, _, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((status, id.as_str()), (200, "user"));
    for _ in 0..10 {
        // No user token: kagenti serves the service-account token, which the target refuses.
        assert_eq!(env.proxied("kagenti", None).await, 401);
    }
    assert_eq!(
        env.client_credentials(),
        2,
        "one forced refresh in the interval"
    );
    let (_, id, cache, _) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!((id.as_str(), cache.as_str()), ("user", "hit"));
    assert_eq!(env.exchanges(), 1);
    // After the interval a refused token may be refreshed again.
    tokio::time::sleep(token_broker::broker::FORCED_REFRESH_INTERVAL).await;
    assert_eq!(env.proxied("kagenti", None).await, 401);
    assert_eq!(env.client_credentials(), 3);
    env.stop().await;
    up.handle.stop(true).await;
}

// ---------------------------------------------------------------------------------------------
// (b) client credentials under keycloak.maxConcurrentRequests and in the IdP metrics

#[actix_web::test]
async fn client_credentials_respect_the_idp_bound_and_are_measured() {
    let env = start_with_yaml(Opts::default(), |y| {
        y.replace(
            "  jwksMinRefreshInterval: 1s\n",
            "  jwksMinRefreshInterval: 1s\n  maxConcurrentRequests: 1\n",
        )
    })
    .await;
    const COUNT: &str =
        "token_broker_idp_request_duration_seconds_count{request=\"client_credentials\"}";
    const BUSY: &str =
        "token_broker_idp_requests_total{request=\"client_credentials\",result=\"busy\"}";
    let before = env.metrics().await;
    let alice = env.login("alice").await;
    env.idp.set_token_endpoint_delay(Duration::from_millis(600));

    // An exchange holds the only permit: a client-credentials miss fails fast, nothing sent.
    let slow = env.exchange(Some(&alice), "sonataflow");
    let fast = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let r = env.exchange(None, "kagenti").await;
        (started.elapsed(), r)
    };
    let (slow, (took, fast)) = futures_util::future::join(slow, fast).await;
    assert_eq!(parts(slow).await.0, 200);
    let (status, _, _, body) = parts(fast).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(took < Duration::from_millis(400), "failed fast: {took:?}");
    assert_eq!(
        env.client_credentials(),
        0,
        "nothing beyond the bound was sent"
    );

    // A client-credentials call holds the only permit: an exchange miss fails fast.
    let bob = env.login("bob").await;
    let slow = env.exchange(None, "jobs");
    let fast = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.exchange(Some(&bob), "sonataflow").await
    };
    let (slow, fast) = futures_util::future::join(slow, fast).await;
    let (status, id, _, body) = parts(slow).await;
    assert_eq!((status, id.as_str()), (200, "service"), "{body}");
    let (status, _, _, body) = parts(fast).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(env.exchanges(), 1);

    let after = env.metrics().await;
    assert!(
        metric(&after, COUNT) > metric(&before, COUNT),
        "client-credentials calls are measured:\n{after}"
    );
    assert!(metric(&after, BUSY) > metric(&before, BUSY), "{after}");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (c) the exchange tester redacts the whole answer before cutting it

#[actix_web::test]
async fn the_tester_redacts_tokens_in_a_long_idp_answer() {
    let front = front().await;
    let env = start_behind(&front, Opts::default()).await;
    let alice = login_via(&env, &front, "alice").await;
    let issued = env.idp.sign_jwt(&claims(&alice));
    let refresh = env.idp.sign_jwt(&json!({"typ": "Refresh", "sub": "x"}));
    let answer = json!({
        "access_token": issued,
        "token_type": "Bearer",
        "issued_token_type": AT,
        "expires_in": 300,
        "refresh_token": refresh,
        "padding": "x".repeat(20 * 1024),
    });
    front.answer_exchanges_with(200, "application/json", &answer.to_string());
    let admin = format!("http://{}", env.broker.admin_addr.unwrap());
    let r = env
        .http
        .post(format!("{admin}/admin/exchange"))
        .bearer_auth("test-admin-token")
        .json(&json!({"target": "kagenti", "subject_token": alice}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(front.state.canned_served.load(Ordering::SeqCst), 1);
    assert!(!text.contains(&issued), "the issued token in clear");
    assert!(!text.contains(&refresh), "the refresh token in clear");
    assert!(!text.contains(&alice), "the subject token in clear");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["response"]["status"], 200);
    let shown = v["response"]["body"].to_string();
    assert!(shown.contains("redacted access_token"), "{}", &shown[..300]);
    assert!(
        shown.len() < 20 * 1024,
        "the answer is still cut for display"
    );
    env.stop().await;
    front.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (d) which IdP failures the service-account fallback may cover

#[actix_web::test]
async fn non_oauth_idp_answers_are_shown_never_hidden_by_the_fallback() {
    let front = front().await;
    let env = start_behind(&front, Opts::default()).await;
    let alice = login_via(&env, &front, "alice").await;
    let html = "<html><body>Forbidden</body></html>";
    for (status, ct, body) in [
        (403, "text/html", html),
        (404, "text/html", "<html><body>Not Found</body></html>"),
        (200, "application/json", r#"{"unexpected":true}"#),
        (200, "text/html", "<html>welcome</html>"),
    ] {
        front.answer_exchanges_with(status, ct, body);
        // `kagenti` falls back to the service account, `sonataflow` denies: both show it.
        for target in ["kagenti", "sonataflow"] {
            let (got, id, _, answer) = parts(env.exchange(Some(&alice), target).await).await;
            assert_eq!(
                (got, id.as_str()),
                (502, ""),
                "{status} {ct} for {target}: {answer}"
            );
            assert_eq!(answer["error"], "server_error");
            assert_eq!(answer["idp_status"], status);
            assert!(
                answer["error_description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("HTTP {status}")),
                "{answer}"
            );
        }
    }
    assert_eq!(env.client_credentials(), 0, "no fallback");
    env.stop().await;
    front.stop().await;
}

#[actix_web::test]
async fn no_answer_5xx_and_unsupported_grant_type_still_fall_back() {
    let front = front().await;
    let env = start_behind(&front, Opts::default()).await;
    let alice = login_via(&env, &front, "alice").await;
    let unsupported =
        r#"{"error":"unsupported_grant_type","error_description":"Unsupported grant_type"}"#;
    for (status, ct, body, reason) in [
        (
            503,
            "text/html",
            "<html>Service Unavailable</html>",
            "idp_unavailable",
        ),
        (
            500,
            "application/json",
            r#"{"error":"unknown_error"}"#,
            "idp_unavailable",
        ),
        (400, "application/json", unsupported, "exchange_unsupported"),
    ] {
        front.answer_exchanges_with(status, ct, body);
        let series = format!("token_broker_fallbacks_total{{reason=\"{reason}\"}}");
        let before = metric(&env.metrics().await, &series);
        let (got, id, _, answer) = parts(env.exchange(Some(&alice), "kagenti").await).await;
        assert_eq!((got, id.as_str()), (200, "service"), "{status}: {answer}");
        assert!(metric(&env.metrics().await, &series) > before, "{series}");
        let (got, id, _, answer) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
        assert_eq!((got, id.as_str()), (502, ""), "{status}: {answer}");
    }
    // Connection refused: the IdP is gone; the cached service-account token is served.
    front.forward_everything();
    front.stop().await;
    let (got, id, cache, answer) = parts(env.exchange(Some(&alice), "kagenti").await).await;
    assert_eq!(
        (got, id.as_str(), cache.as_str()),
        (200, "service", "hit"),
        "{answer}"
    );
    let (got, _, _, answer) = parts(env.exchange(Some(&alice), "sonataflow").await).await;
    assert_eq!(got, 502, "{answer}");
    assert_eq!(answer["error"], "temporarily_unavailable");
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// (e) proxied calls count in the request, cache and fallback metrics like token requests

#[actix_web::test]
async fn proxied_calls_count_in_the_request_cache_and_fallback_metrics() {
    let up = refusing_upstream().await;
    let env = env_with_upstream(&up).await;
    let alice = env.login("alice").await;
    let series = |outcome: &str| {
        format!("token_broker_token_requests_total{{target=\"kagenti\",outcome=\"{outcome}\"}}")
    };
    // alice: her exchange, then (the upstream refuses it) one forced re-exchange.
    assert_eq!(env.proxied("kagenti", Some(&alice)).await, 401);
    // bob, with token exchange off at the IdP: kagenti falls back to the service account.
    env.idp.set_token_exchange_enabled(false);
    let bob = env.login("bob").await;
    assert_eq!(env.proxied("kagenti", Some(&bob)).await, 401);
    let text = env.metrics().await;
    assert_eq!(metric(&text, &series("issued_user")), 2, "{text}");
    assert!(metric(&text, &series("issued_service")) >= 1, "{text}");
    assert_eq!(
        metric(
            &text,
            "token_broker_cache_requests_total{cache=\"user\",result=\"miss\"}"
        ),
        2,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "token_broker_fallbacks_total{reason=\"exchange_unsupported\"}"
        ) >= 1,
        "{text}"
    );
    env.stop().await;
    up.handle.stop(true).await;
}
