//! Test harness: start a dev IdP and a broker configured against it, both on port 0.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use token_broker::app::RunningBroker;
use token_broker_devidp::{self as devidp, DevClient, DevIdpConfig, DevIdpHandle};

pub const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const STATIC_TOKEN: &str = "test-static-token-1";
pub const RESTRICTED_TOKEN: &str = "restricted-token-1";
pub const BROKER_SECRET: &str = "token-broker-dev-secret";

/// Knobs for one test environment.
pub struct Opts {
    pub idp: DevIdpConfig,
    pub client_auth: &'static str,
    pub client_secret: String,
    pub margin: &'static str,
    pub timeout: &'static str,
    pub max_body: usize,
    /// Proxy mode: the `upstream` of `kagenti` (Authorization) and `sonataflow`
    /// (X-Authorization-Keycloak); `None` = no proxy targets.
    pub upstream: Option<String>,
    /// A top-level `proxy:` section (YAML), empty for the defaults.
    pub proxy_yaml: String,
    /// `cache.negativeTtl`: off by default here, so tests of error paths see every call.
    pub negative_ttl: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        let mut idp = DevIdpConfig::contract();
        // A client the broker has no mapper for ("Requested audience not available").
        idp.clients
            .push(DevClient::confidential("unmapped-api", "unmapped-secret"));
        // A login client whose tokens do not carry the broker in aud.
        let mut other = DevClient::public("other-frontend");
        other.direct_access_grants = true;
        idp.clients.push(other);
        let mut no_aud = DevClient::public(token_broker::tester::dev_login::DEV_NO_AUDIENCE_CLIENT);
        no_aud.direct_access_grants = true;
        idp.clients.push(no_aud);
        Opts {
            idp,
            client_auth: "client_secret_basic",
            client_secret: BROKER_SECRET.into(),
            margin: "2s",
            timeout: "3s",
            max_body: 65536,
            upstream: None,
            proxy_yaml: String::new(),
            negative_ttl: "0s",
        }
    }
}

pub struct Env {
    pub idp: DevIdpHandle,
    pub broker: RunningBroker,
    pub http: reqwest::Client,
    pub url: String,
}

pub fn config_yaml(issuer: &str, o: &Opts) -> String {
    let (kagenti_up, sonataflow_up) = match &o.upstream {
        Some(u) => (
            format!("\n    upstream: {u}"),
            format!("\n    upstream: {u}\n    tokenHeader: X-Authorization-Keycloak"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
server:
  listen: 127.0.0.1:0
  workers: 2
  maxBodyBytes: {max_body}
admin:
  listen: 127.0.0.1:0
  token: test-admin-token
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: ${{BROKER_SECRET}}
  clientAuthMethod: {auth}
  connectTimeout: 1s
  timeout: {timeout}
  jwksMinRefreshInterval: 1s
userToken:
  header: X-Forwarded-Access-Token
  allowedClients: [dev-frontend, other-frontend]
backend:
  auth:
    externalAccess:
      - type: static
        options:
          token: {STATIC_TOKEN}
          subject: ci-caller
      - type: static
        options:
          token: {RESTRICTED_TOKEN}
          subject: restricted-caller
        accessRestrictions:
          - plugin: catalog
cache:
  maxEntries: 1000
  safetyMargin: {margin}
  negativeTtl: {negative_ttl}
targets:
  kagenti:
    audience: kagenti-api
    fallback: service_account{kagenti_up}
  sonataflow:
    audience: sonataflow
    fallback: deny{sonataflow_up}
  jobs:
    # sonataflow-like strict target that serves scheduled jobs: users must bring their own
    # token, service principals acting as themselves get the service-account token.
    audience: sonataflow
    fallback: deny
    servicePrincipals: service_account
  unmapped:
    audience: unmapped-api
    fallback: service_account
  ghost:
    audience: no-such-client
    fallback: deny
  augment-only:
    audience: kagenti-api
    fallback: deny
    allowedCallers: ["plugin:augment"]
logging:
  format: plain
  level: info
{proxy_yaml}
"#,
        proxy_yaml = o.proxy_yaml,
        max_body = o.max_body,
        auth = o.client_auth,
        timeout = o.timeout,
        margin = o.margin,
        negative_ttl = o.negative_ttl,
    )
}

pub async fn start(o: Opts) -> Env {
    start_with_yaml(o, |y| y).await
}

/// Like [`start`], with the generated YAML rewritten by `edit` first.
pub async fn start_with_yaml(o: Opts, edit: impl FnOnce(String) -> String) -> Env {
    let idp = devidp::start(o.idp.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("dev IdP starts");
    let yaml = edit(config_yaml(&idp.issuer(), &o));
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
            // Below actix's 5 s keep-alive: a test that sleeps ~5 s between requests must not
            // reuse a connection the broker is closing at that moment (hyper then reports
            // `IncompleteMessage`, seen once in CI for `refresh_ahead`).
            .pool_idle_timeout(Duration::from_secs(3))
            .build()
            .unwrap(),
        url,
    }
}

pub async fn start_default() -> Env {
    start(Opts::default()).await
}

/// Config edit: `userToken.allowWithoutCaller: true` (a user token alone is a credential, as
/// behind a trusted proxy); off by default.
pub fn allow_without_caller(yaml: String) -> String {
    yaml.replacen(
        "userToken:\n",
        "userToken:\n  allowWithoutCaller: true\n",
        1,
    )
}

impl Env {
    /// A user access token from the password grant at `client` (public).
    pub async fn login_at(&self, client: &str, user: &str, pass: &str) -> String {
        let r = self
            .http
            .post(self.idp.token_endpoint())
            .form(&[
                ("grant_type", "password"),
                ("client_id", client),
                ("username", user),
                ("password", pass),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {user} at {client}");
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn login(&self, user: &str) -> String {
        self.login_at("dev-frontend", user, user).await
    }

    /// POST /v1/token with optional caller credential, optional user-token header and a form.
    pub async fn token(
        &self,
        caller: Option<&str>,
        user_header: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.post(format!("{}/v1/token", self.url)).form(form);
        if let Some(c) = caller {
            req = req.bearer_auth(c);
        }
        if let Some(u) = user_header {
            req = req.header("X-Forwarded-Access-Token", u);
        }
        req.send().await.unwrap()
    }

    /// The usual exchange request for `target` by the static caller with `user`'s token.
    pub async fn exchange(&self, user_token: Option<&str>, target: &str) -> reqwest::Response {
        self.token(
            Some(STATIC_TOKEN),
            user_token,
            &[("grant_type", TE), ("audience", target)],
        )
        .await
    }

    pub fn exchanges(&self) -> usize {
        self.idp.count_grant(TE)
    }

    pub fn client_credentials(&self) -> usize {
        self.idp.count_grant("client_credentials")
    }

    pub async fn stop(self) {
        self.broker.stop().await;
        self.idp.stop().await;
    }
}

/// The decoded payload of a JWT (no verification: test inspection only).
pub fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Status, identity header, cache header and JSON body of a response.
pub async fn parts(r: reqwest::Response) -> (u16, String, String, serde_json::Value) {
    let status = r.status().as_u16();
    let id = header(&r, "x-token-broker-identity");
    let cache = header(&r, "x-token-broker-cache");
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, id, cache, body)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sleeps until the Unix clock reads at least `t`.
pub async fn sleep_until_unix(t: u64) {
    loop {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if n.as_secs() >= t {
            return;
        }
        let left = Duration::from_secs(t) - n;
        tokio::time::sleep(left.min(Duration::from_millis(200)) + Duration::from_millis(5)).await;
    }
}

/// Polls a broker process's `/readyz` on admin port `admin` for up to 10 s; whether it answered
/// 200 (the broker processes started by logs, security_edge and traces tests).
pub async fn wait_ready(http: &reqwest::Client, admin: u16) -> bool {
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// Stops a broker process the way an orchestrator does (SIGTERM), waits up to 5 s for it to
/// exit (it writes out its audit log first), then kills it; whether it exited by itself.
pub async fn stop_gracefully(child: &mut std::process::Child) -> bool {
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return term;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().ok();
    child.wait().ok();
    false
}
