//! `session_mode_idp_calls_ratio` (issue 13): IdP exchanges of a refresh-heavy run with
//! `cache.key: token` divided by those with `cache.key: session`.
//!
//! In-process, on loopback: the dev IdP and one broker per mode. [`USERS`] users log in once
//! each (one Keycloak session each) and call the broker every [`TICK`]; every [`REFRESH`] each
//! user's client refreshes its access token (a new token of the same session: same `sub`,
//! `sid`, `azp`, new `jti`, `iat`, `exp`, signed by the realm, as Keycloak's refresh grant
//! yields), and presents the newest one. Time is compressed: access tokens (the users' and the
//! exchanged ones) live [`LIFESPAN`] instead of Keycloak's 300 s, clients refresh at a third of
//! it, the safety margin is 1 s. The IdP's count of token-exchange requests is the figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use token_broker_devidp::{self as devidp, DevIdpConfig};

use super::{STATIC, TE};

const USERS: usize = 20;
// Token times are whole seconds: with a 6 s life an entry lived 4-5 s after the 1 s margin and
// the rounding decided the figure (1.67 in one run, 2.50 in another). 12 s keeps the rounding
// small against the life while the whole figure still takes about a minute.
const LIFESPAN: Duration = Duration::from_secs(12);
const REFRESH: Duration = Duration::from_millis(4000);
const TICK: Duration = Duration::from_millis(250);
const RUN: Duration = Duration::from_secs(30);

/// Token-mode exchanges ÷ session-mode exchanges, and both counts.
pub async fn run() -> (f64, usize, usize) {
    let token = exchanges(false).await;
    let session = exchanges(true).await;
    (token as f64 / session.max(1) as f64, token, session)
}

fn yaml(issuer: &str, session: bool) -> String {
    let key = if session { "session" } else { "token" };
    format!(
        r#"
server:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: ${{BROKER_SECRET}}
userToken:
  header: X-Forwarded-Access-Token
  allowedClients: [dev-frontend]
backend:
  auth:
    externalAccess:
      - type: static
        options:
          token: {STATIC}
          subject: bench-caller
cache:
  safetyMargin: 1s
  negativeTtl: 0s
  key: {key}
targets:
  kagenti:
    audience: kagenti-api
    fallback: deny
logging:
  format: plain
  level: warn
"#
    )
}

async fn exchanges(session: bool) -> usize {
    let mut idp_cfg = DevIdpConfig::contract();
    for c in &mut idp_cfg.clients {
        if c.client_id == "token-broker" || c.client_id == "dev-frontend" {
            c.access_token_lifespan = Some(LIFESPAN);
        }
    }
    let idp = devidp::start(idp_cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let env = HashMap::from([("BROKER_SECRET".to_owned(), super::SECRET.to_owned())]);
    let cfg = token_broker::config::load_str(
        &yaml(&idp.issuer(), session),
        &env,
        std::path::Path::new("."),
    )
    .unwrap();
    let broker = token_broker::app::start(cfg).await.unwrap();
    let url = format!("{}/v1/token", broker.public_url());
    let http = reqwest::Client::new();

    // One login (one session) per user.
    let mut claims = Vec::new();
    for i in 0..USERS {
        let name = format!("bench{i:02}");
        idp.add_user(token_broker_devidp::DevUser::new(&name, "pw"));
        let v: serde_json::Value = http
            .post(idp.token_endpoint())
            .form(&[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", &name),
                ("password", "pw"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        claims.push(payload(v["access_token"].as_str().unwrap()));
    }
    let before = idp.count_grant(TE);
    let started = Instant::now();
    let mut tokens: Vec<String> = Vec::new();
    let mut refreshed_at = started;
    let mut generation = 0u64;
    while started.elapsed() < RUN {
        if tokens.is_empty() || refreshed_at.elapsed() >= REFRESH {
            generation += 1;
            refreshed_at = Instant::now();
            let now = super::now();
            tokens = claims
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c["jti"] = serde_json::json!(format!("bench-refresh-{generation}"));
                    c["iat"] = serde_json::json!(now);
                    c["exp"] = serde_json::json!(now + LIFESPAN.as_secs());
                    idp.sign_jwt(&c)
                })
                .collect();
        }
        let calls = tokens.iter().map(|t| {
            http.post(&url)
                .bearer_auth(STATIC)
                .header("X-Forwarded-Access-Token", t)
                .form(&[("grant_type", TE), ("audience", "kagenti")])
                .send()
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap().status(), 200, "bench exchange");
        }
        actix_web::rt::time::sleep(TICK).await;
    }
    let n = idp.count_grant(TE) - before;
    broker.stop().await;
    idp.stop().await;
    n
}

fn payload(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
