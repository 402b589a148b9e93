//! No token or secret appears in the broker's logs: run the real binary (`serve`) at the most
//! verbose level against the dev IdP, drive the success, cache, fallback and error paths,
//! capture everything it writes, and scan it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every piece of a secret a log could carry: the whole string and, for a JWT, each segment.
fn pieces(secret: &str) -> Vec<String> {
    let mut v = vec![secret.to_owned()];
    if secret.matches('.').count() == 2 {
        v.extend(
            secret
                .split('.')
                .filter(|s| s.len() >= 16)
                .map(str::to_owned),
        );
    }
    v
}

#[actix_web::test]
async fn no_token_or_secret_in_logs() {
    let idp = token_broker_devidp::start(Opts::default().idp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tb-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{BROKER_SECRET}\n")).unwrap();
    let (public, admin) = (free_port(), free_port());
    let cfg = format!(
        r#"
server: {{listen: "127.0.0.1:{public}", workers: 1, drainDelay: 200ms, shutdownTimeout: 2s}}
admin: {{listen: "127.0.0.1:{admin}", token: test-admin-token-xyz}}
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: {{$file: {secret}}}
  jwksMinRefreshInterval: 1s
  maxConcurrentRequests: 1
cache: {{negativeTtl: 5s}}
userToken: {{header: X-Forwarded-Access-Token, allowedClients: [dev-frontend, other-frontend], allowWithoutCaller: true}}
backend:
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC_TOKEN}, subject: ci-caller}}
targets:
  kagenti: {{audience: kagenti-api, fallback: service_account}}
  sonataflow: {{audience: sonataflow, fallback: deny}}
  unmapped: {{audience: unmapped-api, fallback: service_account}}
logging: {{format: json, level: info}}
"#,
        issuer = idp.issuer(),
        secret = secret_file.display(),
    );
    let cfg_file = dir.join("broker.yaml");
    std::fs::write(&cfg_file, cfg).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
        .args(["serve", "--config", cfg_file.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).ok();
        s
    });

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{public}");
    let ready = wait_ready(&http, admin).await;
    assert!(ready, "broker did not become ready");

    let login = |user: &'static str, client: &'static str| {
        let http = http.clone();
        let te = idp.token_endpoint();
        async move {
            let v: serde_json::Value = http
                .post(te)
                .form(&[
                    ("grant_type", "password"),
                    ("client_id", client),
                    ("username", user),
                    ("password", user),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let alice = login("alice", "dev-frontend").await;
    let bob = login("bob", "other-frontend").await;
    let mut secrets: Vec<String> = vec![
        BROKER_SECRET.into(),
        STATIC_TOKEN.into(),
        "test-admin-token-xyz".into(),
        alice.clone(),
        bob.clone(),
    ];
    let send = |caller: Option<&'static str>, user: Option<String>, target: &'static str| {
        let http = http.clone();
        let url = format!("{base}/v1/token");
        async move {
            let mut req = http
                .post(url)
                .form(&[("grant_type", TE), ("audience", target)]);
            if let Some(c) = caller {
                req = req.bearer_auth(c);
            }
            if let Some(u) = user {
                req = req.header("X-Forwarded-Access-Token", u);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    // Success, then a cache hit.
    let (s, b) = send(Some(STATIC_TOKEN), Some(alice.clone()), "kagenti").await;
    assert_eq!(s, 200);
    secrets.push(b["access_token"].as_str().unwrap().to_owned());
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice.clone()), "kagenti")
            .await
            .0,
        200
    );
    // User-only caller; service-account fallback.
    let (s, b) = send(None, Some(alice.clone()), "sonataflow").await;
    assert_eq!(s, 200);
    secrets.push(b["access_token"].as_str().unwrap().to_owned());
    let (s, b) = send(Some(STATIC_TOKEN), None, "kagenti").await;
    assert_eq!(s, 200);
    secrets.push(b["access_token"].as_str().unwrap().to_owned());
    // Keycloak refusals, bad credentials, bad tokens, unsupported exchange fallback. bob's
    // token lacks the broker in aud: refused by the broker itself (issue 9), where Keycloak
    // would answer 403.
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(bob.clone()), "kagenti")
            .await
            .0,
        400
    );
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice.clone()), "unmapped")
            .await
            .0,
        400
    );
    let wrong = "wrong-static-token-abcdef".to_owned();
    secrets.push(wrong.clone());
    assert_eq!(
        send(Some("wrong-static-token-abcdef"), None, "kagenti")
            .await
            .0,
        401
    );
    let tampered = format!("{}x", alice);
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(tampered), "kagenti").await.0,
        400
    );
    idp.logout_user("alice");
    let alice2 = login("alice", "dev-frontend").await;
    secrets.push(alice2.clone());
    idp.logout_user("alice");
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice2.clone()), "sonataflow")
            .await
            .0,
        400
    );
    // Issue 6 paths: the negative cache answers the repeat of a failed exchange.
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice2.clone()), "sonataflow")
            .await
            .0,
        400
    );
    // The IdP-call bound: one slow exchange in flight, a second one is refused fast (503).
    idp.set_token_endpoint_delay(Duration::from_millis(500));
    let carol1 = login("alice", "dev-frontend").await;
    let carol2 = login("bob", "dev-frontend").await;
    secrets.push(carol1.clone());
    secrets.push(carol2.clone());
    let (a, b) = futures_util::future::join(
        send(Some(STATIC_TOKEN), Some(carol1), "sonataflow"),
        async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            send(Some(STATIC_TOKEN), Some(carol2), "sonataflow").await
        },
    )
    .await;
    assert_eq!((a.0, b.0), (200, 503));
    secrets.push(a.1["access_token"].as_str().unwrap().to_owned());
    idp.set_token_endpoint_delay(Duration::ZERO);
    // A key rotation at the IdP: followed, and the old key's tokens refused locally.
    idp.rotate_keys().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = login("bob", "dev-frontend").await;
    secrets.push(rotated.clone());
    let (s, b) = send(Some(STATIC_TOKEN), Some(rotated), "sonataflow").await;
    assert_eq!(s, 200);
    secrets.push(b["access_token"].as_str().unwrap().to_owned());
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice.clone()), "sonataflow")
            .await
            .0,
        400
    );
    // SIGHUP re-reads the `$file` client secret: a wrong one is used at once, the right one
    // again after the next SIGHUP (rotation without restart).
    let hup = |pid: u32| {
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
    };
    std::fs::write(&secret_file, "rotated-wrong-secret-123\n").unwrap();
    secrets.push("rotated-wrong-secret-123".into());
    assert!(hup(child.id()).success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dave = login("alice", "dev-frontend").await;
    secrets.push(dave.clone());
    assert_ne!(
        send(Some(STATIC_TOKEN), Some(dave), "sonataflow").await.0,
        200
    );
    std::fs::write(&secret_file, format!("{BROKER_SECRET}\n")).unwrap();
    assert!(hup(child.id()).success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let erin = login("alice", "dev-frontend").await;
    secrets.push(erin.clone());
    let (s, b) = send(Some(STATIC_TOKEN), Some(erin), "sonataflow").await;
    assert_eq!(s, 200, "{b}");
    secrets.push(b["access_token"].as_str().unwrap().to_owned());
    idp.set_token_exchange_enabled(false);
    let alice3 = login("alice", "dev-frontend").await;
    secrets.push(alice3.clone());
    assert_eq!(
        send(Some(STATIC_TOKEN), Some(alice3), "kagenti").await.0,
        200
    );

    // The admin listener: the tester (success, Keycloak error, wrong credential) and metrics.
    let admin_url = format!("http://127.0.0.1:{admin}");
    let alice4 = login("alice", "dev-frontend").await;
    secrets.push(alice4.clone());
    for (cred, tok) in [
        ("test-admin-token-xyz", alice4.clone()),
        ("test-admin-token-xyz", bob.clone()),
        ("wrong-admin-token-abcdef", alice4.clone()),
    ] {
        let r = http
            .post(format!("{admin_url}/admin/exchange"))
            .bearer_auth(cred)
            .json(&serde_json::json!({"target": "kagenti", "subject_token": tok}))
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        for s in &secrets {
            for p in pieces(s) {
                assert!(
                    !body.contains(&p),
                    "a secret or token piece in an admin answer"
                );
            }
        }
    }
    secrets.push("wrong-admin-token-abcdef".into());
    let metrics = http
        .get(format!("{admin_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The series start at zero: a run must have been counted.
    let runs: u64 = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("token_broker_tester_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(runs > 0, "no tester run counted:\n{metrics}");

    // Graceful shutdown on SIGTERM (its log lines are scanned too).
    assert!(
        stop_gracefully(&mut child).await,
        "the broker exits on SIGTERM"
    );
    let mut logs = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    logs.push_str(&String::from_utf8_lossy(&err_reader.join().unwrap()));
    assert!(
        logs.contains("token request"),
        "audit lines are logged:\n{logs}"
    );
    // Audit lines are JSON objects with the documented fields.
    let audit: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "token_request")
        .collect();
    assert!(audit.len() >= 9, "one audit line per token request");
    for field in [
        "timestamp",
        "caller",
        "user",
        "target",
        "outcome",
        "cache",
        "identity",
        "idp_error",
        "subject_fp",
        "issued_fp",
        "status",
    ] {
        assert!(
            audit.iter().all(|v| v.get(field).is_some()),
            "audit field {field}"
        );
    }
    // Keycloak's refusals carry its error and status ("Requested audience not available",
    // "Invalid token"); bob's token without the broker in aud was refused locally (issue 9),
    // audited with its fingerprint and no IdP error.
    assert!(
        audit
            .iter()
            .any(|v| v["idp_error"] == "invalid_request" && v["idp_status"] == 400)
    );
    let bob_fp = token_broker::digest::fingerprint(&bob);
    assert!(audit.iter().any(|v| {
        v["status"] == 400
            && v["error"] == "invalid_request"
            && v["idp_error"] == ""
            && v["subject_fp"] == bob_fp.as_str()
    }));
    assert!(logs.lines().count() > 20, "trace logging captured");
    assert!(
        logs.contains("shutting down"),
        "the shutdown path was logged"
    );
    for s in &secrets {
        for p in pieces(s) {
            assert!(
                !logs.contains(&p),
                "a secret or token piece appears in the logs"
            );
        }
    }
    idp.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
