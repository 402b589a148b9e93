//! The admin listener's operator endpoints: `/metrics`, the admin API `POST /admin/exchange`
//! (the exchange tester) and its terminal twin `token-broker exchange`.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

const ADMIN: &str = "test-admin-token";

fn admin_url(env: &Env) -> String {
    format!("http://{}", env.broker.admin_addr.unwrap())
}

async fn tester(env: &Env, auth: Option<&str>, body: Value) -> (u16, String) {
    let mut req = env
        .http
        .post(format!("{}/admin/exchange", admin_url(env)))
        .json(&body);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[actix_web::test]
async fn metrics_are_prometheus_text_with_fixed_labels() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    assert_eq!(env.exchange(Some(&alice), "kagenti").await.status(), 200);
    assert_eq!(env.exchange(Some(&alice), "kagenti").await.status(), 200);
    assert_eq!(env.exchange(None, "kagenti").await.status(), 200);
    assert_eq!(env.exchange(Some(&alice), "no-such").await.status(), 400);
    // A user request the IdP cannot exchange falls back to the service account.
    env.idp.set_token_exchange_enabled(false);
    let bob = env.login("bob").await;
    assert_eq!(env.exchange(Some(&bob), "kagenti").await.status(), 200);
    let r = env
        .http
        .get(format!("{}/metrics", admin_url(&env)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    for want in [
        "token_broker_token_requests_total{target=\"kagenti\",outcome=\"issued_user\"}",
        "token_broker_token_requests_total{target=\"kagenti\",outcome=\"issued_service\"}",
        "token_broker_token_requests_total{target=\"_unknown\",outcome=\"unknown_target\"}",
        "token_broker_cache_requests_total{cache=\"user\",result=\"hit\"}",
        "token_broker_cache_requests_total{cache=\"user\",result=\"miss\"}",
        "token_broker_fallbacks_total{reason=\"exchange_unsupported\"}",
        "token_broker_idp_request_duration_seconds_count{request=\"token_exchange\"}",
        "token_broker_jwks_refreshes_total{result=\"ok\"}",
        "token_broker_cache_entries{cache=\"user\"}",
        "token_broker_ready 1",
    ] {
        // Counters of fixed label sets are exposed from zero: the series must have counted.
        let counted = if want.contains(' ') {
            text.lines().any(|l| l == want)
        } else if want.starts_with("token_broker_cache_entries") {
            // A gauge (moka's count is approximate): present is enough.
            text.contains(want)
        } else {
            text.lines().any(|l| {
                l.strip_prefix(want)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
        };
        assert!(counted, "missing or zero {want} in:\n{text}");
    }
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("token_broker_"), "{line}");
        assert!(!line.contains(&alice[..20]), "token material in metrics");
        assert!(!line.contains("ci-caller"), "caller names are not labels");
    }
    env.stop().await;
}

#[actix_web::test]
async fn admin_exchange_needs_the_admin_credential() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let body = json!({"target": "kagenti", "subject_token": alice});
    assert_eq!(tester(&env, None, body.clone()).await.0, 401);
    assert_eq!(
        tester(&env, Some("wrong-admin-token"), body.clone())
            .await
            .0,
        401
    );
    assert_eq!(tester(&env, Some(STATIC_TOKEN), body).await.0, 401);
    let (s, b) = tester(
        &env,
        Some(ADMIN),
        json!({"target": "nope", "subject_token": "x.y.z"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("invalid_target"));
    let (s, b) = tester(&env, Some(ADMIN), json!({"target": 1})).await;
    assert_eq!(s, 400, "{b}");
    env.stop().await;
}

#[actix_web::test]
async fn admin_exchange_explains_success_and_failure_without_the_cache() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    let before = env.exchanges();
    for _ in 0..2 {
        let (s, text) = tester(
            &env,
            Some(ADMIN),
            json!({"target": "kagenti", "subject_token": alice}),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        assert!(!text.contains(&alice), "subject token echoed");
        assert!(!text.contains(BROKER_SECRET), "client secret echoed");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["response"]["status"], 200);
        assert!(
            v["response"]["body"]["access_token"]
                .as_str()
                .unwrap()
                .starts_with("<redacted")
        );
        assert_eq!(v["result_claims"]["claims"]["aud"], "kagenti-api");
        assert_eq!(v["result_claims"]["claims"]["azp"], "token-broker");
        assert_eq!(v["subject_claims"]["claims"]["azp"], "dev-frontend");
        assert_eq!(v["request"]["form"][1][0], "subject_token");
        assert!(
            v["request"]["form"][1][1]
                .as_str()
                .unwrap()
                .starts_with("<redacted")
        );
        let checks = v["checks"].as_array().unwrap();
        assert!(checks.len() >= 6);
        for c in checks {
            assert!(c["name"].is_string() && c["fix"].is_string() && c.get("ok").is_some());
            assert_ne!(c["ok"], false, "{c}");
        }
    }
    // Both runs went to Keycloak: the tester bypasses the cache.
    assert_eq!(env.exchanges(), before + 2);

    let bob = env.login_at("other-frontend", "bob", "bob").await;
    let (s, text) = tester(
        &env,
        Some(ADMIN),
        json!({"target": "kagenti", "subject_token": bob}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["outcome"], "keycloak_error");
    assert_eq!(v["response"]["status"], 403);
    assert_eq!(
        v["response"]["body"]["error_description"],
        "Client is not within the token audience"
    );
    assert!(v["hint"].as_str().unwrap().contains("Audience mapper"));
    let aud = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("aud or azp"))
        .unwrap();
    assert_eq!(aud["ok"], false);
    assert!(aud["fix"].as_str().unwrap().contains("other-frontend"));

    // Dev users: the issuer is the dev IdP on loopback.
    let (s, text) = tester(
        &env,
        Some(ADMIN),
        json!({"target": "kagenti", "dev_user": "alice-no-aud"}),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("Client is not within the token audience"));
    env.stop().await;
}

#[actix_web::test]
async fn exchange_command_prints_result_or_error_with_hint() {
    let env = start_default().await;
    let dir = std::env::temp_dir().join(format!("tb-exchange-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("broker.yaml");
    std::fs::write(&cfg, config_yaml(&env.idp.issuer(), &Opts::default())).unwrap();
    let alice = env.login("alice").await;
    let bob = env.login_at("other-frontend", "bob", "bob").await;
    let (good, bad) = (dir.join("alice.jwt"), dir.join("bob.jwt"));
    std::fs::write(&good, format!("{alice}\n")).unwrap();
    std::fs::write(&bad, &bob).unwrap();
    let run = |file: &std::path::Path, explain: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_token-broker"));
        c.args([
            "exchange",
            "--config",
            cfg.to_str().unwrap(),
            "--target",
            "kagenti",
        ])
        .args(["--subject-token-file", file.to_str().unwrap()])
        .env("BROKER_SECRET", BROKER_SECRET);
        if explain {
            c.arg("--explain");
        }
        c.output().unwrap()
    };
    let out = run(&good, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Keycloak issued a token"), "{stdout}");
    assert!(stdout.contains("\"aud\": \"kagenti-api\""), "{stdout}");
    assert!(!stdout.contains(&alice));

    let out = run(&bad, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("Client is not within the token audience"),
        "{stdout}"
    );
    assert!(stdout.contains("hint: "), "{stdout}");
    assert!(stdout.contains("[FAIL] Requester client"), "{stdout}");
    assert!(stdout.contains("fix: add an Audience mapper"), "{stdout}");
    assert!(!stdout.contains(&bob) && !stdout.contains(BROKER_SECRET));
    std::fs::remove_dir_all(&dir).ok();
    env.stop().await;
}

/// docs/operations.md lists exactly what `/metrics` emits: every family it documents is
/// exposed, every exposed family is documented, and every label value seen in a scrape (other
/// than target names and the version) is named in that family's row.
#[actix_web::test]
async fn metrics_match_the_documented_names_and_labels() {
    let env = start_default().await;
    let alice = env.login("alice").await;
    assert_eq!(env.exchange(Some(&alice), "kagenti").await.status(), 200);
    env.idp.set_token_exchange_enabled(false);
    let bob = env.login("bob").await;
    assert_eq!(env.exchange(Some(&bob), "kagenti").await.status(), 200);
    // A refused caller credential and a refused admin credential.
    let r = env
        .http
        .post(format!("{}/v1/token", env.broker.public_url()))
        .bearer_auth("not-a-known-caller-token")
        .form(&[("audience", "kagenti")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, _) = tester(&env, Some("wrong"), json!({"target": "kagenti"})).await;
    assert_eq!(status, 401);
    let text = env
        .http
        .get(format!("{}/metrics", admin_url(&env)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let section = doc
        .split("## Metrics")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let rows: std::collections::BTreeMap<String, String> = section
        .lines()
        .filter_map(|l| {
            let name = l.strip_prefix("| `")?.split('`').next()?;
            name.starts_with("token_broker_")
                .then(|| (name.to_owned(), l.to_owned()))
        })
        .collect();
    // OpenMetrics: a counter family `x` has the samples `x_total`, the name queried and
    // documented.
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        })
        .collect();
    let documented: std::collections::BTreeSet<String> = rows.keys().cloned().collect();
    assert_eq!(exposed, documented, "families exposed vs documented");
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, _)) = line.split_once('{') else {
            continue;
        };
        let family = exposed
            .iter()
            .filter(|f| series.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("undocumented series {line}"));
        let row = &rows[family];
        let labels = line.split_once('{').unwrap().1.split('}').next().unwrap();
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            let v = v.trim_matches('"');
            if matches!(k, "target" | "version" | "le") {
                continue;
            }
            assert!(
                row.contains(&format!("`{k}")),
                "label {k} of {family} is not documented"
            );
            assert!(
                row.contains(&format!("`{v}`")) || row.contains(&format!("{k}=\"{v}\"")),
                "value {k}=\"{v}\" of {family} is not documented in: {row}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "too few labels checked: {checked}");
    for want in [
        "token_broker_idp_request_duration_seconds_count{request=\"client_credentials\"}",
        "token_broker_caller_auth_failures_total{kind=\"caller\",reason=\"invalid\"}",
        "token_broker_caller_auth_failures_total{kind=\"admin_token\",reason=\"unknown\"}",
    ] {
        assert!(text.contains(want), "missing {want}");
    }
    env.stop().await;
}
