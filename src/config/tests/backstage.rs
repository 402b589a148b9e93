//! `backstage`, `backend` (`baseUrl`, `auth.externalAccess`, `auth.keys`) and `discovery`.

use super::*;

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
