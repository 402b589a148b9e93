//! `token-broker check-config --online` and `serve`'s start-up probe of the broker's client
//! authentication (issue 12): the real binary against the dev IdP, with the right and a wrong
//! client secret and a wrong issuer.

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

fn config(
    dir: &std::path::Path,
    name: &str,
    issuer: &str,
    secret: &str,
    public: u16,
    admin: u16,
) -> std::path::PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(
            r#"
server: {{listen: "127.0.0.1:{public}", workers: 1, drainDelay: 0s, shutdownTimeout: 1s}}
admin: {{listen: "127.0.0.1:{admin}"}}
keycloak:
  issuer: "{issuer}"
  clientId: token-broker
  clientSecret: {secret}
  timeout: 3s
targets:
  kagenti: {{audience: kagenti-api, fallback: deny}}
  ghost: {{audience: no-such-client, fallback: deny}}
logging: {{format: plain, level: info}}
"#
        ),
    )
    .unwrap();
    file
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tb-online-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `check-config --online` off the runtime (the dev IdP is served on it).
async fn check_online(file: std::path::PathBuf) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .args([
                "check-config",
                "--online",
                "--config",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn check_config_online_reports_each_probe() {
    let idp = token_broker_devidp::start(Opts::default().idp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let d = dir("check");
    let issuer = idp.issuer();

    let ok = config(&d, "ok.yaml", &issuer, BROKER_SECRET, 0, 0);
    let (code, out) = check_online(ok).await;
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "ok       discovery: the document's issuer equals keycloak.issuer",
        "ok       jwks: ",
        "ok       client authentication: client 'token-broker' authenticated",
        // Keycloak judges the (dummy) subject token before the audience: it cannot tell.
        "unknown  target ghost: audience 'no-such-client'",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_eq!(
        idp.count_grant("urn:ietf:params:oauth:grant-type:token-exchange"),
        3
    );
    assert!(
        idp.requests().iter().all(|r| r.status != 200),
        "a probe was issued a token"
    );

    let wrong = config(&d, "wrong.yaml", &issuer, "not-the-secret-123", 0, 0);
    let (code, out) = check_online(wrong).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "failed   client authentication: the IdP refused client 'token-broker': HTTP 401"
        ),
        "{out}"
    );
    assert!(
        out.contains("fix: check keycloak.clientId, keycloak.clientSecret"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-secret-123"),
        "the secret was printed:\n{out}"
    );

    let slash = config(&d, "slash.yaml", &format!("{issuer}/"), BROKER_SECRET, 0, 0);
    let (code, out) = check_online(slash).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("failed   discovery: "), "{out}");
    assert!(out.contains("unknown  jwks: not checked"), "{out}");
    idp.stop().await;
}

/// `serve` probes its client authentication once at start: a refused secret is an error log
/// and `token_broker_idp_client_auth_ok 0`; the right one gives 1.
#[actix_web::test]
async fn serve_reports_a_refused_client_secret_at_start() {
    let idp = token_broker_devidp::start(Opts::default().idp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let d = dir("serve");
    for (secret, want) in [("not-the-secret-123", "0"), (BROKER_SECRET, "1")] {
        let (public, admin) = (free_port(), free_port());
        let file = config(
            &d,
            &format!("serve-{want}.yaml"),
            &idp.issuer(),
            secret,
            public,
            admin,
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let readers = [
            std::thread::spawn(move || {
                let mut s = String::new();
                stdout.read_to_string(&mut s).ok();
                s
            }),
            std::thread::spawn(move || {
                let mut s = String::new();
                stderr.read_to_string(&mut s).ok();
                s
            }),
        ];
        let http = reqwest::Client::new();
        let mut value = String::new();
        let mut metrics = String::new();
        for _ in 0..100 {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{admin}/metrics"))
                .send()
                .await
            {
                let text = r.text().await.unwrap_or_default();
                if let Some(v) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("token_broker_idp_client_auth_ok "))
                    && v != "-1"
                {
                    value = v.to_owned();
                    metrics = text;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        let logs: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(value, want, "metric for secret {want}:\n{logs}");
        // The probe's dummy exchange is counted as a probe (the IdP refuses it by design), not
        // as a user's token exchange.
        let count = |request: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "token_broker_idp_requests_total{{request=\"{request}\","
                    ))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        assert_eq!(count("probe"), 1.0, "{metrics}");
        assert_eq!(count("token_exchange"), 0.0, "{metrics}");
        if want == "0" {
            assert!(logs.contains("ERROR"), "{logs}");
            assert!(
                logs.contains("REFUSED the broker's client authentication"),
                "{logs}"
            );
            assert!(!logs.contains(secret), "the secret was logged");
        } else {
            assert!(!logs.contains("REFUSED"), "{logs}");
        }
    }
    idp.stop().await;
}
