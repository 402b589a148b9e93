//! The command line: `check-config` lists every error with its key path and exits non-zero,
//! without echoing secrets.

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_token-broker")
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_accepts_the_dev_config() {
    let out = Command::new(bin())
        .args(["check-config", "--config", &repo("config/dev.yaml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.contains("kagenti") && stdout.contains("sonataflow"),
        "{stdout}"
    );
}

#[test]
fn check_config_lists_all_errors_with_paths_and_no_secrets() {
    let dir = std::env::temp_dir().join(format!("tb-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        r#"
server:
  listen: not-an-address
keycloak:
  issuer: http://KC.example.com/realms/dev
  clientId: token-broker
  clientSecret: 12345-very-secret-value
  clientAuthMethod: client_secret_jwt
backend:
  auth:
    externalAccess:
      - type: static
        options:
          token: short
          subject: ci
cache:
  safetyMargin: soon
targets:
  kagenti:
    audiance: kagenti-api
    fallback: maybe
"#,
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.listen",
        "keycloak.issuer",
        "keycloak.clientAuthMethod",
        "backend.auth.externalAccess[0].options.token",
        "cache.safetyMargin",
        "targets.kagenti.audiance",
        "targets.kagenti.audience",
        "targets.kagenti.fallback",
    ] {
        assert!(stderr.contains(path), "missing {path} in:\n{stderr}");
    }
    for value in [
        "12345-very-secret-value",
        "short",
        "not-an-address",
        "maybe",
        "soon",
    ] {
        assert!(
            !stderr
                .lines()
                .any(|l| l.split(':').skip(1).collect::<String>().contains(value)),
            "value {value} echoed in:\n{stderr}"
        );
    }
    // `serve` refuses the same file the same way, without starting.
    let out = Command::new(bin())
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("targets.kagenti.fallback"));
    std::fs::remove_dir_all(&dir).ok();
}
