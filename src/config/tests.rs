//! Unit tests of the configuration loader: valid documents, defaults, every error kind with its
//! key path, substitution and overrides, and that secrets never reach error text or `Debug`.

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
fn admin_disabled_and_null_values_are_defaults() {
    let c = load(&format!(
        "{MINIMAL}admin:\n  enabled: false\n  listen: 127.0.0.1:1\nserver:\n  listen:\n"
    ))
    .unwrap();
    assert!(c.admin.listen.is_none());
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:7070");
    let c = load_env(
        &format!("{MINIMAL}admin:\n  enabled: ${{ADMIN_ON}}\n"),
        &[("ADMIN_ON", "false")],
    )
    .unwrap();
    assert!(c.admin.listen.is_none());
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

#[test]
fn keycloak_errors() {
    let cases: &[(&str, &str)] = &[
        ("ftp://kc.example.com/realms/x", "http or https"),
        ("not a url", "absolute http or https URL"),
        ("https://kc.example.com/realms/x/", "must not end with /"),
        ("https://kc.example.com/realms/x?a=b", "query"),
        ("https://kc.example.com/realms/x#f", "fragment"),
        ("https://kc.example.com", "realm path"),
        (
            "https://u:p@kc.example.com/realms/x",
            "user name or password",
        ),
        ("HTTPS://KC.example.com/realms/x", "normalised form"),
        ("https://kc.example.com:443/realms/x", "normalised form"),
    ];
    for (issuer, needle) in cases {
        let yaml = MINIMAL.replace("https://kc.example.com/realms/rhdh", issuer);
        assert_issue(&errors(&yaml), "keycloak.issuer", needle);
    }
    let yaml = MINIMAL.replace(
        "clientSecret: abc",
        "clientSecret: \"\"\n  clientAuthMethod: private_key_jwt",
    );
    let issues = errors(&yaml);
    assert_issue(&issues, "keycloak.clientSecret", "must not be empty");
    assert_issue(
        &issues,
        "keycloak.clientAuthMethod",
        "must be one of: client_secret_basic, client_secret_post",
    );
    let issues = errors(&MINIMAL.replace("clientId: token-broker", "clientId: \"a\\u0001\""));
    assert_issue(&issues, "keycloak.clientId", "printable ASCII");
    let http_ok = MINIMAL.replace(
        "https://kc.example.com/realms/rhdh",
        "http://127.0.0.1:7080/realms/dev",
    );
    assert!(load(&http_ok).is_ok());
}

#[test]
fn server_admin_user_token_logging_errors() {
    let yaml = format!(
        "{MINIMAL}server:\n  listen: localhost:7070\n  workers: 0\n  maxBodyBytes: -5\n\
         admin:\n  enabled: maybe\n  token: \"has space\"\n\
         userToken:\n  header: \"Bad Header\"\n\
         logging:\n  format: xml\n  level: \"\"\n\
         cache:\n  maxEntries: 0\n"
    );
    let issues = errors(&yaml);
    assert_issue(&issues, "server.listen", "IP address and port");
    assert_issue(&issues, "server.workers", "integer of at least 1");
    assert_issue(&issues, "server.maxBodyBytes", "integer of at least 1");
    assert_issue(&issues, "admin.enabled", "expected a boolean");
    assert_issue(&issues, "admin.token", "RFC 6750");
    assert_issue(&issues, "userToken.header", "HTTP header name");
    assert_issue(&issues, "logging.format", "must be one of: plain, json");
    assert_issue(&issues, "logging.level", "tracing filter directive");
    assert_issue(&issues, "cache.maxEntries", "integer of at least 1");

    let issues = errors(&format!(
        "{MINIMAL}admin:\n  token: short\n  listen: 0.0.0.0:7070\nuserToken:\n  header: authorization\n"
    ));
    assert_issue(&issues, "admin.token", "at least 8 characters");
    assert_issue(&issues, "admin.listen", "must differ from server.listen");
    assert_issue(&issues, "userToken.header", "must not be Authorization");

    let issues = errors(&format!("{MINIMAL}server: [1]\nlogging: text\n"));
    assert_issue(&issues, "server", "expected a mapping, found a list");
    assert_issue(&issues, "logging", "expected a mapping, found a string");
}

#[test]
fn target_errors() {
    let yaml = with_target(
        "    scopes: [\"ok\", \"bad scope\", 3]\n    allowedScopes: 'a \"b'\n    \
         requestedTokenType: access_token\n    fallback: allow\n    allowedCallers: [\"\", ok]\n  \
         Bad_Name:\n    audience: \"two words\"\n  empty:\n",
    );
    let issues = errors(&yaml);
    assert_issue(
        &issues,
        "targets.kagenti.scopes[1]",
        "RFC 6749 §3.3 scope-token",
    );
    assert_issue(
        &issues,
        "targets.kagenti.scopes[2]",
        "expected a string, found a number",
    );
    assert_issue(&issues, "targets.kagenti.allowedScopes", "scope-token");
    assert_issue(
        &issues,
        "targets.kagenti.requestedTokenType",
        "urn:ietf:params:oauth:token-type:access_token",
    );
    assert_issue(
        &issues,
        "targets.kagenti.fallback",
        "must be one of: service_account, deny",
    );
    assert_issue(&issues, "targets.kagenti.allowedCallers[0]", "non-empty");
    assert_issue(&issues, "targets.Bad_Name", "^[a-z0-9][a-z0-9-]*$");
    assert_issue(&issues, "targets.Bad_Name.audience", "no whitespace");
    assert_issue(&issues, "targets.empty", "at least audience");

    let long = "a".repeat(65);
    let issues = errors(&format!(
        "{MINIMAL}  {long}:\n    audience: x\n  with.dot:\n    audience: x\n"
    ));
    assert_issue(&issues, &format!("targets.{long}"), "at most 64");
    assert_issue(&issues, "targets.with.dot", "^[a-z0-9][a-z0-9-]*$");
    assert!(
        load(&format!(
            "{MINIMAL}  {}:\n    audience: x\n",
            "a".repeat(64)
        ))
        .is_ok()
    );

    let issues = errors(&with_target("    allowedCallers: []\n"));
    assert_issue(
        &issues,
        "targets.kagenti.allowedCallers",
        "must not be empty",
    );
    let issues =
        errors(&MINIMAL.replace("  kagenti:\n    audience: kagenti-api\n", "  - kagenti\n"));
    assert_issue(&issues, "targets", "expected a mapping, found a list");
}

#[test]
fn scopes_dedupe_and_split() {
    let c = load(&with_target(
        "    scopes: \"a b  a\"\n    allowedScopes: [a, a, b]\n",
    ))
    .unwrap();
    assert_eq!(c.targets["kagenti"].scopes, vec!["a", "b"]);
    assert_eq!(c.targets["kagenti"].allowed_scopes, vec!["a", "b"]);
}

const EA_HEAD: &str = "backend:\n  auth:\n    externalAccess:\n";

#[test]
fn external_access_errors() {
    let yaml = format!(
        "{MINIMAL}{EA_HEAD}{}",
        r#"      - type: static
        options:
          token: short
          subject: two words
          extra: 1
      - type: jwks
        options:
          url: not-a-url
      - type: legacy
        options: {secret: abc}
      - type: custom
      - options: {token: abcdefghij, subject: s}
      - type: static
        options: {token: "abc defghij"}
        unexpected: 1
      - type: static
        options: {token: abcdefghij, subject: s}
        accessRestrictions:
          - plugin: catalog
            foo: 1
          - plugin: catalog
          - plugin: a
            permissionAttribute:
              action: [read, destroy]
              other: 1
          - permission: [1]
"#
    );
    let issues = errors(&yaml);
    let p = "backend.auth.externalAccess";
    assert_issue(
        &issues,
        &format!("{p}[0].options.token"),
        "at least 8 characters",
    );
    assert_issue(&issues, &format!("{p}[0].options.subject"), "no whitespace");
    assert_issue(&issues, &format!("{p}[0].options.extra"), "unknown key");
    assert_issue(
        &issues,
        &format!("{p}[1].options.url"),
        "absolute http or https URL",
    );
    assert_issue(&issues, &format!("{p}[2].options.subject"), "is required");
    assert_issue(
        &issues,
        &format!("{p}[3].type"),
        "must be one of: static, jwks, legacy",
    );
    assert_issue(&issues, &format!("{p}[4].type"), "is required");
    assert_issue(&issues, &format!("{p}[5].options.token"), "no whitespace");
    assert_issue(&issues, &format!("{p}[5].options.subject"), "is required");
    assert_issue(&issues, &format!("{p}[5].unexpected"), "unknown key");
    let r = format!("{p}[6].accessRestrictions");
    assert_issue(
        &issues,
        &format!("{r}[0].foo"),
        "expected one of: plugin, permission, permissionAttribute",
    );
    assert_issue(
        &issues,
        &format!("{r}[1].plugin"),
        "already has restrictions in item [0]",
    );
    assert_issue(
        &issues,
        &format!("{r}[2].permissionAttribute.action[1]"),
        "create, read, update, delete",
    );
    assert_issue(
        &issues,
        &format!("{r}[2].permissionAttribute.other"),
        "unknown key",
    );
    assert_issue(&issues, &format!("{r}[3].plugin"), "is required");
    assert_issue(
        &issues,
        &format!("{r}[3].permission[0]"),
        "expected a string",
    );

    let issues = errors(&format!("{MINIMAL}{EA_HEAD}      type: static\n"));
    assert_issue(&issues, p, "expected a list, found a mapping");
    // The token length counts UTF-16 code units like JavaScript: 4 astral characters = 8.
    assert!(load(&format!("{MINIMAL}{EA_HEAD}      - type: static\n        options: {{token: \"😀😀😀😀\", subject: s}}\n")).is_ok());
}

#[test]
fn access_restriction_parsing() {
    let yaml = format!(
        "{MINIMAL}{EA_HEAD}      - type: static\n        options: {{token: abcdefghij, subject: s}}\n        \
         accessRestrictions:\n          - plugin: token-broker\n            permission: [\"a,b c\", a]\n            \
         permissionAttribute: {{action: \"read, delete\"}}\n          - plugin: x\n            permission: \"\"\n"
    );
    let c = load(&yaml).unwrap();
    let r = c.external_access[0].access_restrictions.clone().unwrap();
    assert_eq!(r[0].permission_names.as_deref().unwrap(), &["a", "b", "c"]);
    assert_eq!(r[0].actions.as_deref().unwrap(), &["read", "delete"]);
    assert_eq!(r[1].permission_names, None);
}

#[test]
fn several_errors_at_once() {
    let yaml = "
server:
  listen: nope
keycloak:
  issuer: https://kc.example.com/realms/x/
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
fn proxy_defaults_and_target_upstream() {
    let c = load(MINIMAL).unwrap();
    assert!(c.targets["kagenti"].upstream.is_none());
    assert_eq!(c.proxy.max_header_bytes, 16 * 1024);
    assert_eq!(c.proxy.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.proxy.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.proxy.replay_buffer_bytes, 64 * 1024);
    assert_eq!(c.proxy.min_stream_token_lifetime, Duration::from_secs(300));
    assert_eq!(c.proxy.max_retries, 2);

    let c = load(&with_target(
        "    upstream: http://127.0.0.1:7090/api\n    tokenHeader: X-Authorization-Keycloak\n    streaming: \"true\"\nproxy:\n  maxHeaderBytes: 4096\n  idleTimeout: 500ms\n  replayBufferBytes: 0\n  minStreamTokenLifetime: 0\n  maxRetries: 0\n  connectTimeout: 1s\n",
    ))
    .unwrap();
    let u = c.targets["kagenti"].upstream.as_ref().unwrap();
    assert_eq!(u.base.as_str(), "http://127.0.0.1:7090/api/");
    assert_eq!(
        u.token_header,
        TokenHeader::Custom("x-authorization-keycloak".into())
    );
    assert!(u.streaming);
    assert_eq!(c.proxy.max_header_bytes, 4096);
    assert_eq!(c.proxy.idle_timeout, Duration::from_millis(500));
    assert_eq!(c.proxy.replay_buffer_bytes, 0);
    assert_eq!(c.proxy.min_stream_token_lifetime, Duration::ZERO);
    assert_eq!(c.proxy.max_retries, 0);

    let c = load(&with_target(
        "    upstream: https://kagenti.example.com\n    tokenHeader: authorization\n",
    ))
    .unwrap();
    let u = c.targets["kagenti"].upstream.as_ref().unwrap();
    assert_eq!(u.base.as_str(), "https://kagenti.example.com/");
    assert_eq!(u.token_header, TokenHeader::Authorization);
    assert!(!u.streaming);
}

#[test]
fn proxy_errors() {
    for (upstream, needle) in [
        ("ftp://x.example.com", "http or https"),
        ("not a url", "absolute http or https URL"),
        ("http://user:pw@x.example.com", "user name or password"),
        ("http://x.example.com/?a=b", "query"),
        ("http://x.example.com/#f", "fragment"),
    ] {
        let issues = errors(&with_target(&format!("    upstream: \"{upstream}\"\n")));
        assert_issue(&issues, "targets.kagenti.upstream", needle);
    }
    for header in [
        "Host",
        "X-Forwarded-For",
        "Connection",
        "X-Token-Broker-Cache",
    ] {
        let issues = errors(&with_target(&format!(
            "    upstream: http://x.example.com\n    tokenHeader: {header}\n"
        )));
        assert_issue(&issues, "targets.kagenti.tokenHeader", "sets or removes");
    }
    let issues = errors(&with_target(
        "    upstream: http://x.example.com\n    tokenHeader: \"bad header\"\n",
    ));
    assert_issue(&issues, "targets.kagenti.tokenHeader", "HTTP header name");
    let issues = errors(&with_target("    tokenHeader: X-A\n    streaming: true\n"));
    assert_issue(&issues, "targets.kagenti.tokenHeader", "without upstream");
    assert_issue(&issues, "targets.kagenti.streaming", "without upstream");
    let issues = errors(&with_target(
        "    upstream: http://x.example.com\n    streaming: yes please\n",
    ));
    assert_issue(&issues, "targets.kagenti.streaming", "boolean");
    let issues = errors(&format!(
        "{MINIMAL}proxy:\n  maxHeaderBytes: 10\n  idleTimeout: 0\n  maxRetries: 11\n  replayBufferBytes: -1\n  minStreamTokenLifetme: 1s\n"
    ));
    assert_issue(&issues, "proxy.maxHeaderBytes", "at least 1024");
    assert_issue(&issues, "proxy.idleTimeout", "greater than zero");
    assert_issue(&issues, "proxy.maxRetries", "at most 10");
    assert_issue(&issues, "proxy.replayBufferBytes", "integer");
    assert_issue(
        &issues,
        "proxy.minStreamTokenLifetme",
        "did you mean minStreamTokenLifetime",
    );
}

#[test]
fn backstage_keys() {
    let yaml = format!(
        "{MINIMAL}    userMapping: jwt_authorization_grant\n  sonataflow:\n    audience: sonataflow\n    userMapping: {{type: impersonation, subject: \"bs-{{name}}\"}}\n{}",
        r#"backstage:
  pluginId: my-broker
  trustedPlugins: [catalog, "rhdh-*"]
backend:
  baseUrl: http://backstage:7007/
  auth:
    keys:
      - secret: c2VjcmV0LWtleQ
    externalAccess:
      - type: jwks
        options:
          url: https://idp.example/jwks
          algorithm: "RS256, ES256"
          issuer: https://idp.example
          subjectPrefix: ci
        accessRestrictions:
          - plugin: my-broker
      - type: legacy
        options: {secret: c2VjcmV0, subject: old-backend}
discovery:
  endpoints:
    - target: http://catalog.internal/api/{{pluginId}}
      plugins: [catalog]
    - target: {internal: "http://all/{{ pluginId }}", external: "https://x"}
      plugins: ["*"]
assertion:
  issuer: https://broker.example
  lifetime: 3m
userToken:
  matchClaim: email
  matchValue: "{name}@example.com"
"#
    );
    let c = load(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.backstage.plugin_id, "my-broker");
    assert_eq!(
        c.backstage.trusted_plugins.as_deref().unwrap(),
        &["catalog", "rhdh-*"]
    );
    assert_eq!(
        c.backstage.base_url.as_ref().unwrap().as_str(),
        "http://backstage:7007/"
    );
    assert_eq!(c.backstage.endpoints.len(), 2);
    assert_eq!(c.backstage.endpoints[1].target, "http://all/{{ pluginId }}");
    assert_eq!(c.external_access.len(), 3);
    let ExternalAccessKind::Jwks {
        algorithms,
        subject_prefix,
        ..
    } = &c.external_access[0].kind
    else {
        panic!("jwks entry expected")
    };
    assert_eq!(algorithms, &["RS256", "ES256"]);
    assert_eq!(subject_prefix.as_deref(), Some("ci"));
    let ExternalAccessKind::Legacy { subject, .. } = &c.external_access[2].kind else {
        panic!("legacy entry expected")
    };
    assert_eq!(subject, "external:backstage-plugin");
    assert_eq!(c.user_token.match_claim, "email");
    let m = c.targets["kagenti"].user_mapping.as_ref().unwrap();
    assert_eq!(
        (m.kind, m.subject.as_str()),
        (UserMappingKind::JwtAuthorizationGrant, "{ref}")
    );
    let m = c.targets["sonataflow"].user_mapping.as_ref().unwrap();
    assert_eq!(
        (m.kind, m.subject.as_str()),
        (UserMappingKind::Impersonation, "bs-{name}")
    );
    assert_eq!(
        c.assertion.as_ref().unwrap().lifetime,
        Duration::from_secs(180)
    );
}

#[test]
fn backstage_key_errors() {
    let issues = errors(&format!(
        "{MINIMAL}    userMapping: magic\n{}",
        r#"backstage: {pluginId: "bad id"}
backend:
  baseUrl: ftp://x
  auth:
    keys: [{secret: "***"}]
discovery:
  endpoints:
    - target: "http+srv://x"
      plugins: []
assertion: {issuer: x, lifetime: 10m}
userToken: {matchValue: "{user}"}
"#
    ));
    assert_issue(&issues, "backstage.pluginId", "plugin id");
    assert_issue(&issues, "backend.baseUrl", "http or https");
    assert_issue(&issues, "backend.auth.keys[0].secret", "base64");
    assert_issue(&issues, "discovery.endpoints[0].target", "http+srv");
    assert_issue(&issues, "discovery.endpoints[0].plugins", "non-empty");
    assert_issue(&issues, "assertion.lifetime", "at most 5m");
    assert_issue(&issues, "userToken.matchValue", "placeholders");
    assert_issue(&issues, "targets.kagenti.userMapping", "must be one of");
    let long = "p".repeat(65);
    let issues = errors(&format!(
        "{MINIMAL}backstage: {{pluginId: {long}, trustedPlugins: [ok, \"a b\", \"x/*\", {long}]}}\n"
    ));
    assert_issue(&issues, "backstage.pluginId", "at most 64");
    for i in 1..=3 {
        assert_issue(
            &issues,
            &format!("backstage.trustedPlugins[{i}]"),
            "plugin id",
        );
    }
    assert!(
        !issues
            .iter()
            .any(|i| i.path == "backstage.trustedPlugins[0]")
    );
    let issues = errors(&format!("{MINIMAL}backstage: {{trustedPlugins: []}}\n"));
    assert_issue(&issues, "backstage.trustedPlugins", "must not be empty");
    let c = load(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.backstage.trusted_plugins.is_none());
    let issues = errors(&format!(
        "{MINIMAL}    userMapping: jwt_authorization_grant\n"
    ));
    assert_issue(&issues, "assertion", "is required");
}

#[test]
fn user_token_acceptance_settings() {
    let c = load(&format!(
        "{MINIMAL}userToken:\n  allowedClients: [rhdh-frontend, other]\n  allowWithoutCaller: true\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.user_token.allowed_clients, ["rhdh-frontend", "other"]);
    assert!(c.user_token.allow_without_caller);
    // A user token alone needs the list of clients whose users may call that way.
    let issues = errors(&format!(
        "{MINIMAL}userToken:\n  allowWithoutCaller: true\n"
    ));
    assert_issue(&issues, "userToken.allowedClients", "is required");
    // The broker's own tokens are never users' tokens.
    let issues = errors(&format!(
        "{MINIMAL}userToken:\n  allowedClients: [rhdh-frontend, token-broker]\n"
    ));
    assert_issue(
        &issues,
        "userToken.allowedClients",
        "must not list keycloak.clientId",
    );
    let issues = errors(&format!(
        "{MINIMAL}userToken:\n  allowedClients: [\"a b\", \"\"]\n  allowWithoutCaller: maybe\n"
    ));
    assert_issue(&issues, "userToken.allowedClients[0]", "client id");
    assert_issue(&issues, "userToken.allowedClients[1]", "client id");
    assert_issue(&issues, "userToken.allowWithoutCaller", "boolean");
    // Env override of the list, as JSON.
    let c = load_env(
        MINIMAL,
        &[(
            "TOKEN_BROKER_CONFIG_userToken_allowedClients",
            "[\"rhdh-frontend\"]",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.user_token.allowed_clients, ["rhdh-frontend"]);
}

#[test]
fn match_value_must_name_one_entity() {
    for bad in ["{namespace}{name}", "{namespace}.{name}", "{namespace}"] {
        let issues = errors(&format!("{MINIMAL}userToken: {{matchValue: \"{bad}\"}}\n"));
        assert_issue(
            &issues,
            "userToken.matchValue",
            "exactly one Backstage entity",
        );
    }
    let c = load(&format!(
        "{MINIMAL}userToken: {{matchValue: \"{{namespace}}/{{name}}\"}}\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.user_token.match_value, "{namespace}/{name}");
}

#[test]
fn server_slow_client_limits() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.client_disconnect_timeout, Duration::from_secs(1));
    assert_eq!(c.server.max_connections, 1024);
    let c = load(&format!(
        "{MINIMAL}server:\n  bodyReadTimeout: 2s\n  clientDisconnectTimeout: 0\n  maxConnections: \"64\"\n"
    ))
    .unwrap();
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(2));
    assert_eq!(c.server.client_disconnect_timeout, Duration::ZERO);
    assert_eq!(c.server.max_connections, 64);
    let issues = errors(&format!(
        "{MINIMAL}server:\n  bodyReadTimeout: 0\n  clientDisconnectTimeout: soon\n  maxConnections: 0\n"
    ));
    assert_issue(&issues, "server.bodyReadTimeout", "greater than zero");
    assert_issue(
        &issues,
        "server.clientDisconnectTimeout",
        "expected a duration",
    );
    assert_issue(&issues, "server.maxConnections", "integer of at least 1");
}

#[test]
fn proxy_forward_headers_and_matrix_params() {
    let c = load(&with_target("    upstream: http://x.example.com\n")).unwrap();
    let u = c.targets["kagenti"].upstream.as_ref().unwrap();
    assert!(u.forward_headers.is_empty());
    assert!(!u.allow_matrix_params);
    let c = load(&with_target(
        "    upstream: http://x.example.com\n    forwardHeaders: [X-Tenant, x-kagenti-*, X-Tenant]\n    allowMatrixParams: true\n",
    ))
    .unwrap();
    let u = c.targets["kagenti"].upstream.as_ref().unwrap();
    assert_eq!(u.forward_headers, vec!["x-kagenti-*", "x-tenant"]);
    assert!(u.allow_matrix_params);
    for header in [
        "X-Auth-Request-User",
        "X-Remote-User",
        "X-Real-IP",
        "True-Client-IP",
        "X-Original-URL",
        "Cookie",
        "Authorization",
        "X-Forwarded-For",
        "Transfer-Encoding",
    ] {
        let issues = errors(&with_target(&format!(
            "    upstream: http://x.example.com\n    forwardHeaders: [{header}]\n"
        )));
        assert_issue(
            &issues,
            "targets.kagenti.forwardHeaders[0]",
            "never forwards",
        );
    }
    for bad in ["\"*\"", "\"bad header\"", "\"a*b*\""] {
        let issues = errors(&with_target(&format!(
            "    upstream: http://x.example.com\n    forwardHeaders: [{bad}]\n"
        )));
        assert_issue(
            &issues,
            "targets.kagenti.forwardHeaders[0]",
            "HTTP header name",
        );
    }
    let issues = errors(&with_target(
        "    forwardHeaders: [x-a]\n    allowMatrixParams: true\n",
    ));
    assert_issue(
        &issues,
        "targets.kagenti.forwardHeaders",
        "without upstream",
    );
    assert_issue(
        &issues,
        "targets.kagenti.allowMatrixParams",
        "without upstream",
    );
}
