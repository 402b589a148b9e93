//! `${VAR}`, `$env`, `$file` and `TOKEN_BROKER_CONFIG_*` overrides.

use super::*;

#[test]
fn dollar_brace_substitution() {
    let yaml = MINIMAL
        .replace(
            "clientSecret: abc",
            "clientSecret: pre-${SECRET_A}-${ SECRET_B }-post",
        )
        .replace("audience: kagenti-api", "audience: aud$${NOT_A_VAR}$x$");
    let c = load_env(&yaml, &[("SECRET_A", "1"), ("SECRET_B", "${SECRET_A}")]).unwrap();
    // Replacement text is not rescanned.
    assert_eq!(
        c.keycloak.client_secret.expose_secret(),
        "pre-1-${SECRET_A}-post"
    );
    assert_eq!(c.targets["kagenti"].audience, "aud${NOT_A_VAR}$x$");
}

#[test]
fn substitution_errors() {
    let yaml = MINIMAL
        .replace("clientSecret: abc", "clientSecret: ${MISSING_SECRET}")
        .replace("clientId: token-broker", "clientId: ${not valid}")
        .replace("audience: kagenti-api", "audience: x${UNTERMINATED");
    let issues = errors(&yaml);
    assert_eq!(issues.len(), 3, "{issues:#?}");
    assert_issue(
        &issues,
        "keycloak.clientSecret",
        "environment variable MISSING_SECRET is not set",
    );
    assert_issue(
        &issues,
        "keycloak.clientId",
        "must contain an environment variable name",
    );
    assert_issue(&issues, "targets.kagenti.audience", "unterminated ${");
}

#[test]
fn env_directive() {
    let yaml = MINIMAL.replace("clientSecret: abc", "clientSecret:\n    $env: KC_SECRET");
    let c = load_env(&yaml, &[("KC_SECRET", "from-env")]).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), "from-env");

    let issues = errors(&yaml);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_issue(
        &issues,
        "keycloak.clientSecret",
        "environment variable KC_SECRET is not set ($env)",
    );

    let issues = errors(&MINIMAL.replace("clientSecret: abc", "clientSecret: {$env: X, other: 1}"));
    assert_issue(
        &issues,
        "keycloak.clientSecret",
        "$env must be the only key",
    );
    let issues = errors(&MINIMAL.replace("clientSecret: abc", "clientSecret: {$env: [1]}"));
    assert_issue(&issues, "keycloak.clientSecret", "$env must be a string");
    let issues = errors(&MINIMAL.replace("clientSecret: abc", "clientSecret: {$include: x.yaml}"));
    assert_issue(
        &issues,
        "keycloak.clientSecret",
        "$include is not supported",
    );
}

#[test]
fn file_directive() {
    let dir = temp_dir("file");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/kc"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.join("two-newlines"), "abc\n\n").unwrap();
    std::fs::write(dir.join("crlf"), "line\r\n").unwrap();
    std::fs::write(dir.join("bin"), [0xff, 0xfe]).unwrap();
    let abs = dir.join("crlf");
    let yaml = MINIMAL
        .replace("clientSecret: abc", "clientSecret:\n    $file: secrets/kc")
        .replace(
            "clientId: token-broker",
            &format!("clientId: {{$file: '{}'}}", abs.display()),
        );
    let c = load_str(&yaml, &env(&[]), &dir).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), SECRET);
    assert_eq!(c.keycloak.client_id, "line");

    // ${VAR} in the path.
    let yaml = MINIMAL.replace(
        "clientSecret: abc",
        "clientSecret: {$file: \"${CREDS}/kc\"}",
    );
    let c = load_str(&yaml, &env(&[("CREDS", "secrets")]), &dir).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), SECRET);

    // Only one trailing newline is removed: the second one is kept, and is not a VSCHAR.
    let yaml = MINIMAL.replace("clientSecret: abc", "clientSecret: {$file: two-newlines}");
    let issues = load_str(&yaml, &env(&[]), &dir).unwrap_err().issues;
    assert_issue(&issues, "keycloak.clientSecret", "printable ASCII");

    let yaml = MINIMAL
        .replace("clientSecret: abc", "clientSecret: {$file: missing-file}")
        .replace("clientId: token-broker", "clientId: {$file: bin}");
    let err = load_str(&yaml, &env(&[]), &dir).unwrap_err();
    assert_eq!(err.issues.len(), 2, "{err}");
    assert_issue(&err.issues, "keycloak.clientSecret", "cannot read $file");
    assert_issue(&err.issues, "keycloak.clientSecret", "missing-file");
    assert_issue(&err.issues, "keycloak.clientId", "not valid UTF-8");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn env_overrides() {
    let pairs = [
        (
            "TOKEN_BROKER_CONFIG_keycloak_clientSecret",
            "override-secret",
        ),
        ("TOKEN_BROKER_CONFIG_server_workers", "3"),
        ("TOKEN_BROKER_CONFIG_admin_enabled", "false"),
        (
            "TOKEN_BROKER_CONFIG_targets_kagenti_scopes",
            "[\"a\",\"b\"]",
        ),
        (
            "TOKEN_BROKER_CONFIG_targets_new",
            "{\"audience\":\"new-aud\",\"fallback\":\"deny\"}",
        ),
        (
            "TOKEN_BROKER_CONFIG_targets_new_fallback",
            "service_account",
        ),
        ("TOKEN_BROKER_CONFIG_logging", "{\"format\":\"json\"}"),
        ("TOKEN_BROKER_CONFIG_logging_level", "debug"),
        ("UNRELATED_keycloak", "x"),
    ];
    let c = load_env(MINIMAL, &pairs).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), "override-secret");
    assert_eq!(c.server.workers, Some(3));
    assert!(c.admin.listen.is_none());
    assert_eq!(c.targets["kagenti"].scopes, vec!["a", "b"]);
    // The more specific variable wins over the JSON object.
    assert_eq!(c.targets["new"].audience, "new-aud");
    assert_eq!(c.targets["new"].fallback, FallbackPolicy::ServiceAccount);
    assert_eq!(c.logging.format, LogFormat::Json);
    assert_eq!(c.logging.level, "debug");
    assert_eq!(c.keycloak.client_id, "token-broker");

    // Overrides into a list item; values are not substituted.
    let yaml = format!(
        "{MINIMAL}{EA_HEAD}      - type: static\n        options: {{token: abcdefghij, subject: s}}\n"
    );
    let c = load_env(
        &yaml,
        &[(
            "TOKEN_BROKER_CONFIG_backend_auth_externalAccess_0_options_subject",
            "${X}",
        )],
    )
    .unwrap();
    let ExternalAccessKind::Static { subject, .. } = &c.external_access[0].kind else {
        panic!("static entry expected")
    };
    assert_eq!(subject, "${X}");
}

#[test]
fn env_override_errors() {
    let issues = errors_env(
        MINIMAL,
        &[
            ("TOKEN_BROKER_CONFIG_keycloak__clientId", "x"),
            ("TOKEN_BROKER_CONFIG_", "x"),
            ("TOKEN_BROKER_CONFIG_keycloak_issuer_x", "y"),
            ("TOKEN_BROKER_CONFIG_keycloak_clientSecret", "12345678"),
        ],
    );
    assert_issue(
        &issues,
        "TOKEN_BROKER_CONFIG_keycloak__clientId",
        "single underscores",
    );
    assert_issue(&issues, "TOKEN_BROKER_CONFIG_", "single underscores");
    assert_issue(
        &issues,
        "TOKEN_BROKER_CONFIG_keycloak_issuer_x",
        "keycloak.issuer is not a mapping",
    );
    // A numeric override is JSON: explain how to keep it a string.
    assert_issue(&issues, "keycloak.clientSecret", "wrap it in double quotes");
    let c = load_env(
        MINIMAL,
        &[("TOKEN_BROKER_CONFIG_keycloak_clientSecret", "\"12345678\"")],
    )
    .unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), "12345678");
}

#[test]
fn load_file_resolves_relative_file_paths() {
    let dir = temp_dir("load-file");
    std::fs::write(dir.join("kc-secret"), "from-file\n").unwrap();
    let path = dir.join("broker.yaml");
    std::fs::write(
        &path,
        MINIMAL.replace("clientSecret: abc", "clientSecret: {$file: kc-secret}"),
    )
    .unwrap();
    let c = load_file(&path).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), "from-file");
    let err = load_file(&dir.join("absent.yaml")).unwrap_err();
    assert_eq!(err.issues[0].path, "<root>");
    assert!(err.issues[0].message.contains("cannot read config file"));
    std::fs::remove_dir_all(&dir).ok();
}
