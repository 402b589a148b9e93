//! Unit tests of the configuration loader: valid documents, defaults, every error kind with its
//! key path, substitution and overrides, and that secrets never reach error text or `Debug`.

mod backstage;
mod keycloak;
mod proxy;
mod server_admin;
mod shared_cache;
mod substitution;
mod targets;
mod user_token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

const SECRET: &str = "s3cr3t-SENTINEL-value-91823";

const MINIMAL: &str = "
keycloak:
  issuer: https://kc.example.com/realms/rhdh
  clientId: token-broker
  clientSecret: abc
targets:
  kagenti:
    audience: kagenti-api
";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(yaml: &str) -> Result<Config, ConfigErrors> {
    load_str(yaml, &env(&[]), Path::new("."))
}

fn load_env(yaml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    load_str(yaml, &env(pairs), Path::new("."))
}

fn errors(yaml: &str) -> Vec<ConfigIssue> {
    errors_env(yaml, &[])
}

fn errors_env(yaml: &str, pairs: &[(&str, &str)]) -> Vec<ConfigIssue> {
    match load_env(yaml, pairs) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.issues,
    }
}

/// Asserts that exactly one issue is at `path` and its message contains `needle`.
#[track_caller]
fn assert_issue(issues: &[ConfigIssue], path: &str, needle: &str) {
    let at: Vec<&ConfigIssue> = issues.iter().filter(|i| i.path == path).collect();
    assert!(
        at.iter().any(|i| i.message.contains(needle)),
        "no issue at {path} containing {needle:?}; got {issues:#?}"
    );
}

/// MINIMAL with `extra` YAML appended under `targets.kagenti` (indented by the caller).
fn with_target(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "token-broker-config-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn full_valid_config() {
    let yaml = r#"
server:
  listen: 127.0.0.1:8080
  workers: 4
  maxBodyBytes: 1024
admin:
  listen: "[::1]:9091"
  token: admin-token-123
keycloak:
  issuer: https://kc.example.com/realms/rhdh
  clientId: token-broker
  clientSecret: the-client-secret
  clientAuthMethod: client_secret_post
  connectTimeout: 500ms
  timeout: 1m
  jwksMinRefreshInterval: 30
userToken:
  header: X-User-Token
backend:
  auth:
    externalAccess:
      - type: static
        options:
          token: static-token-1
          subject: ci
        accessRestrictions:
          - plugin: token-broker
            permission: "token-broker.target.kagenti, token-broker.target.other"
            permissionAttribute:
              action: [read, update]
          - plugin: catalog
      - type: static
        options: {token: static-token-2, subject: other}
        accessRestrictions: []
cache:
  maxEntries: 5
  safetyMargin: 1h
targets:
  kagenti:
    audience: kagenti-api
    scopes: openid  profile
    allowedScopes: [kagenti:write, "x"]
    requestedTokenType: urn:ietf:params:oauth:token-type:id_token
    fallback: service_account
    allowedCallers: [ci, "plugin:*"]
  other-2:
    audience: other
logging:
  format: json
  level: debug
"#;
    let c = load(yaml).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.workers, Some(4));
    assert_eq!(c.server.max_body_bytes, 1024);
    assert_eq!(c.admin.listen.unwrap().to_string(), "[::1]:9091");
    assert_eq!(c.admin.token.unwrap().expose_secret(), "admin-token-123");
    assert_eq!(
        c.keycloak.issuer.as_str(),
        "https://kc.example.com/realms/rhdh"
    );
    assert_eq!(c.keycloak.client_id, "token-broker");
    assert_eq!(
        c.keycloak.client_secret.expose_secret(),
        "the-client-secret"
    );
    assert_eq!(
        c.keycloak.client_auth_method,
        ClientAuthMethod::ClientSecretPost
    );
    assert_eq!(c.keycloak.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.keycloak.timeout, Duration::from_secs(60));
    assert_eq!(
        c.keycloak.jwks_min_refresh_interval,
        Duration::from_secs(30)
    );
    assert_eq!(c.user_token.header, "X-User-Token");
    assert_eq!(c.external_access.len(), 2);
    let first = &c.external_access[0];
    let ExternalAccessKind::Static { token, subject } = &first.kind else {
        panic!("static entry expected")
    };
    assert_eq!(token.expose_secret(), "static-token-1");
    assert_eq!(subject, "ci");
    assert_eq!(
        first.access_restrictions.as_deref().unwrap(),
        &[
            AccessRestriction {
                plugin: "token-broker".into(),
                permission_names: Some(vec![
                    "token-broker.target.kagenti".into(),
                    "token-broker.target.other".into()
                ]),
                actions: Some(vec!["read".into(), "update".into()]),
            },
            AccessRestriction {
                plugin: "catalog".into(),
                permission_names: None,
                actions: None,
            },
        ]
    );
    assert!(c.external_access[1].access_restrictions.is_none());
    assert_eq!(c.cache.max_entries, 5);
    assert_eq!(c.cache.safety_margin, Duration::from_secs(3600));
    let t = &c.targets["kagenti"];
    assert_eq!(t.audience, "kagenti-api");
    assert_eq!(t.scopes, vec!["openid", "profile"]);
    assert_eq!(t.allowed_scopes, vec!["kagenti:write", "x"]);
    assert_eq!(t.requested_token_type, TokenType::IdToken);
    assert_eq!(t.fallback, FallbackPolicy::ServiceAccount);
    assert_eq!(t.allowed_callers.as_deref().unwrap(), &["ci", "plugin:*"]);
    assert_eq!(c.targets["other-2"].audience, "other");
    assert_eq!(c.logging.format, LogFormat::Json);
    assert_eq!(c.logging.level, "debug");
}

#[test]
fn defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:7070");
    assert_eq!(c.server.workers, None);
    assert_eq!(c.server.max_body_bytes, 65_536);
    assert_eq!(c.admin.listen.unwrap().to_string(), "127.0.0.1:7071");
    assert!(c.admin.token.is_none());
    assert_eq!(
        c.keycloak.client_auth_method,
        ClientAuthMethod::ClientSecretBasic
    );
    assert_eq!(c.keycloak.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.keycloak.timeout, Duration::from_secs(10));
    assert_eq!(
        c.keycloak.jwks_min_refresh_interval,
        Duration::from_secs(10)
    );
    assert_eq!(c.user_token.header, "X-Forwarded-Access-Token");
    // Fail closed (issue 9): no user token accepted until clients are listed; no user token
    // alone as a credential.
    assert!(c.user_token.allowed_clients.is_empty());
    assert!(!c.user_token.allow_without_caller);
    assert!(c.external_access.is_empty());
    assert_eq!(c.cache.max_entries, 10_000);
    assert_eq!(c.cache.safety_margin, Duration::from_secs(30));
    let t = &c.targets["kagenti"];
    assert!(t.scopes.is_empty() && t.allowed_scopes.is_empty());
    assert_eq!(t.requested_token_type, TokenType::AccessToken);
    assert_eq!(t.fallback, FallbackPolicy::Deny);
    assert!(t.allowed_callers.is_none());
    assert_eq!(c.logging.format, LogFormat::Plain);
    assert_eq!(c.logging.level, "info");
}

#[test]
fn durations() {
    use super::walk::parse_duration;
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
    for bad in [
        "",
        "s",
        "1.5s",
        "-1s",
        "1 s",
        "1x",
        "99999999999999999999h",
        "1hh",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    let issues = errors(&format!(
        "{MINIMAL}cache:\n  safetyMargin: soon\nkeycloak_:\n"
    ));
    assert_issue(&issues, "cache.safetyMargin", "expected a duration");
    let issues = errors(&MINIMAL.replace("clientSecret: abc", "clientSecret: abc\n  timeout: 0s"));
    assert_issue(&issues, "keycloak.timeout", "greater than zero");
}

#[test]
fn missing_required_keys() {
    let issues = errors("");
    assert_issue(&issues, "keycloak.issuer", "is required");
    assert_issue(&issues, "keycloak.clientId", "is required");
    assert_issue(&issues, "keycloak.clientSecret", "is required");
    assert_issue(&issues, "targets", "at least one target");
    let issues = errors(&MINIMAL.replace("    audience: kagenti-api\n", "    fallback: deny\n"));
    assert_issue(&issues, "targets.kagenti.audience", "is required");
    let issues = errors(&MINIMAL.replace("  kagenti:\n    audience: kagenti-api\n", "  {}\n"));
    assert_issue(&issues, "targets", "at least one target");
}

#[test]
fn unknown_keys_with_hints() {
    let yaml = MINIMAL
        .replace(
            "    audience: kagenti-api",
            "    audience: a\n    audiance: b",
        )
        .replace(
            "  clientSecret: abc",
            "  clientSecret: abc\n  client_secret: x\n  bogus: 1",
        )
        + "extra: 1\nbackend:\n  baseUrl: x\n";
    let issues = errors(&yaml);
    assert_issue(
        &issues,
        "targets.kagenti.audiance",
        "unknown key (did you mean audience?)",
    );
    assert_issue(
        &issues,
        "keycloak.client_secret",
        "did you mean clientSecret?",
    );
    assert_issue(
        &issues,
        "keycloak.bogus",
        "expected one of: issuer, clientId",
    );
    assert_issue(&issues, "extra", "unknown key");
    assert_issue(&issues, "backend.baseUrl", "http or https");
}

const EA_HEAD: &str = "backend:\n  auth:\n    externalAccess:\n";

#[test]
fn several_errors_at_once() {
    let yaml = "
server:
  listen: nope
keycloak:
  issuer: https://kc.example.com/realms/x?a=b
  clientId: token-broker
  clientSecret: abc
targets:
  kagenti:
    audience: kagenti-api
    fallback: maybe
";
    let err = load(yaml).unwrap_err();
    let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server.listen",
            "keycloak.issuer",
            "targets.kagenti.fallback"
        ]
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().all(|l| l.contains(": ")));
    assert!(text.starts_with("server.listen: "));
}

#[test]
fn yaml_syntax_errors() {
    let issues = errors("keycloak: [\n");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].path, "<root>");
    assert!(issues[0].message.starts_with("invalid YAML"));
    assert_issue(
        &errors("- a\n- b\n"),
        "<root>",
        "expected a mapping, found a list",
    );
    assert_issue(
        &errors(&format!("{MINIMAL}cache: !custom {{}}\n")),
        "cache",
        "tags",
    );
    let issues = errors(&format!("{MINIMAL}cache:\n  maxEntries: .inf\n"));
    assert_issue(&issues, "cache.maxEntries", "finite");
}

#[test]
fn yaml_merge_keys_and_anchors() {
    let yaml = format!(
        "{MINIMAL}  other:\n    <<: &base\n      audience: shared\n      fallback: service_account\n  third:\n    <<: *base\n"
    );
    let c = load(&yaml).unwrap();
    assert_eq!(c.targets["third"].audience, "shared");
    assert_eq!(c.targets["other"].fallback, FallbackPolicy::ServiceAccount);
}

/// Every error message, rendered, for a config that puts `SECRET` into many wrong places.
fn rendered_errors_with_secret_everywhere() -> String {
    let yaml = format!(
        "server:\n  listen: {SECRET}\n  workers: {SECRET}\n\
         admin:\n  enabled: {SECRET}\n  token: \"{SECRET} x\"\n  {SECRET}: 1\n\
         keycloak:\n  issuer: {SECRET}\n  clientId: \"\\u0001{SECRET}\"\n  clientSecret: [{SECRET}]\n  \
         clientAuthMethod: {SECRET}\n  timeout: {SECRET}\n\
         userToken:\n  header: \"{SECRET} \"\n\
         backend:\n  auth:\n    externalAccess:\n      - type: {SECRET}\n        options: {{token: \"{SECRET} \"}}\n      \
         - type: static\n        options: {{token: \"a {SECRET}\", subject: \"b {SECRET}\"}}\n        \
         accessRestrictions:\n          - plugin: \"{SECRET} \"\n            permissionAttribute: {{action: {SECRET}}}\n\
         cache:\n  safetyMargin: {SECRET}\n  maxEntries: {SECRET}\n\
         targets:\n  kagenti:\n    audience: \"{SECRET} \"\n    scopes: \"{SECRET}\\\\\"\n    \
         requestedTokenType: {SECRET}\n    fallback: {SECRET}\n    allowedCallers: [\" {SECRET}\"]\n  \
         second:\n    audience: ${{SECRET_VAR}}\n    fallback: ${{SECRET_VAR}}\n    scopes: {{$env: SECRET_VAR}}\n\
         logging:\n  format: {SECRET}\n  level: \"\\u0007{SECRET}\"\n"
    );
    let env = env(&[
        ("SECRET_VAR", &format!("{SECRET} \"")),
        ("TOKEN_BROKER_CONFIG_logging_format", SECRET),
        (
            "TOKEN_BROKER_CONFIG_server_maxBodyBytes",
            &format!("\"{SECRET}\""),
        ),
        ("TOKEN_BROKER_CONFIG_keycloak_clientId_x", SECRET),
    ]);
    match load_str(&yaml, &env, Path::new(".")) {
        Ok(_) => panic!("expected errors"),
        Err(e) => {
            assert!(e.issues.len() >= 20, "{e}");
            format!("{e}\n{e:?}")
        }
    }
}

#[test]
fn secrets_never_in_error_text() {
    let text = rendered_errors_with_secret_everywhere();
    // The secret appears once, as a key name (keys are not values and are named in paths).
    let without_key_path = text.replace(&format!("admin.{SECRET}"), "admin.<key>");
    assert!(!without_key_path.contains(SECRET), "secret leaked:\n{text}");
    assert!(
        !without_key_path.contains("SENTINEL"),
        "secret leaked:\n{text}"
    );
}

#[test]
fn secrets_not_in_debug_output() {
    let yaml = format!(
        "{}admin:\n  token: {SECRET}-admin\n{EA_HEAD}      - type: static\n        options: {{token: {SECRET}-static, subject: s}}\n",
        MINIMAL.replace("clientSecret: abc", &format!("clientSecret: {SECRET}"))
    );
    let c = load(&yaml).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), SECRET);
    let debug = format!("{c:?}");
    assert!(!debug.contains("SENTINEL"), "{debug}");
    assert!(debug.contains("REDACTED"));
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn dev_yaml_loads() {
    let path = repo_file("config/dev.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("DEVELOPMENT ONLY"));
    let c = load_str(&text, &env(&[]), path.parent().unwrap()).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(c.admin.listen.unwrap().to_string(), "127.0.0.1:7071");
    assert_eq!(c.admin.token.unwrap().expose_secret(), "dev-admin-token");
    assert_eq!(
        c.keycloak.issuer.as_str(),
        "http://127.0.0.1:7080/realms/dev"
    );
    assert_eq!(c.keycloak.client_id, "token-broker");
    assert_eq!(
        c.keycloak.client_secret.expose_secret(),
        "token-broker-dev-secret"
    );
    assert_eq!(
        c.keycloak.client_auth_method,
        ClientAuthMethod::ClientSecretBasic
    );
    assert_eq!(c.user_token.header, "X-Forwarded-Access-Token");
    assert_eq!(c.user_token.allowed_clients, ["dev-frontend"]);
    assert!(!c.user_token.allow_without_caller);
    let ExternalAccessKind::Static { token, subject } = &c.external_access[0].kind else {
        panic!("static entry expected")
    };
    assert_eq!(token.expose_secret(), "dev-static-token");
    assert_eq!(subject, "dev-caller");
    assert_eq!(c.cache.safety_margin, Duration::from_secs(30));
    assert_eq!(c.cache.max_entries, 10_000);
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets["kagenti"].audience, "kagenti-api");
    assert_eq!(
        c.targets["kagenti"].fallback,
        FallbackPolicy::ServiceAccount
    );
    assert_eq!(c.targets["sonataflow"].audience, "sonataflow");
    assert_eq!(c.targets["sonataflow"].fallback, FallbackPolicy::Deny);
    assert_eq!(c.logging.format, LogFormat::Plain);
    assert_eq!(c.logging.level, "info");
}

#[test]
fn example_yaml_loads() {
    let text = std::fs::read_to_string(repo_file("config/example.yaml")).unwrap();
    let dir = temp_dir("example");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/keycloak-client-secret"), "kc-secret\n").unwrap();
    let vars = env(&[
        ("TOKEN_BROKER_ADMIN_TOKEN", "example-admin-token"),
        ("CI_CALLER_TOKEN", "example-ci-token"),
    ]);
    let c = load_str(&text, &vars, &dir).unwrap();
    assert_eq!(c.keycloak.client_secret.expose_secret(), "kc-secret");
    assert_eq!(
        c.admin.token.unwrap().expose_secret(),
        "example-admin-token"
    );
    assert!(c.external_access[0].access_restrictions.is_some());
    assert_eq!(c.targets.len(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn javascript_whitespace_rules() {
    use super::walk::is_js_non_space;
    assert!(is_js_non_space("abc\u{85}def"));
    assert!(!is_js_non_space("abc\u{feff}def"));
    assert!(!is_js_non_space("abc\u{a0}def"));
    assert!(!is_js_non_space(""));
}

#[test]
fn cache_key_mode_and_refresh_ahead() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.cache.key, CacheKeyMode::Token);
    assert_eq!(c.cache.refresh_ahead_percent, None);
    let c = load(&format!(
        "{MINIMAL}cache:\n  key: session\n  refreshAhead: \"20%\"\n"
    ))
    .unwrap();
    assert_eq!(c.cache.key, CacheKeyMode::Session);
    assert_eq!(c.cache.refresh_ahead_percent, Some(20));
    let issues = errors(&format!("{MINIMAL}cache:\n  key: user\n"));
    assert_issue(&issues, "cache.key", "must be one of: token, session");
    for bad in ["0%", "51%", "20", "x%"] {
        let issues = errors(&format!("{MINIMAL}cache:\n  refreshAhead: \"{bad}\"\n"));
        assert_issue(&issues, "cache.refreshAhead", "percentage");
    }
}

#[test]
fn telemetry_section() {
    let c = load(MINIMAL).unwrap();
    assert!(c.telemetry.otlp_endpoint.is_none() && c.telemetry.service_name.is_none());
    let c = load(&format!(
        "{MINIMAL}telemetry:\n  otlpEndpoint: http://otel-collector:4318/\n  serviceName: broker-eu\n"
    ))
    .unwrap();
    assert_eq!(
        c.telemetry.otlp_endpoint.as_deref(),
        Some("http://otel-collector:4318")
    );
    assert_eq!(c.telemetry.service_name.as_deref(), Some("broker-eu"));
    let e = errors(&format!(
        "{MINIMAL}telemetry:\n  otlpEndpoint: otel-collector:4318\n  serviceName: \"\"\n  protocol: grpc\n"
    ));
    assert_issue(&e, "telemetry.otlpEndpoint", "http(s) URL");
    assert_issue(&e, "telemetry.serviceName", "non-empty");
    assert_issue(&e, "telemetry.protocol", "");
}
