//! `targets` (the proxy-mode keys of a target are in `proxy.rs`).

use super::*;

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

/// Issue 12: the issued-token checks a target relaxes, each named in the warnings; opaque is
/// refused where the answer must be shown to be the mapped user's, and with an ID token.
#[test]
fn relaxed_issued_token_checks_are_explicit_and_named() {
    let c = load(MINIMAL).unwrap();
    let t = &c.targets["kagenti"];
    assert_eq!(t.issued_token_audience, IssuedAudience::Required);
    assert_eq!(t.issued_token_format, IssuedFormat::Jwt);
    assert!(warnings(&c).is_empty());
    let c = load(&with_target(
        "    issuedTokenAudience: may_be_absent\n    issuedTokenFormat: opaque\n",
    ))
    .unwrap();
    let t = &c.targets["kagenti"];
    assert_eq!(t.issued_token_audience, IssuedAudience::MayBeAbsent);
    assert_eq!(t.issued_token_format, IssuedFormat::Opaque);
    let w = warnings(&c).join("\n");
    assert!(
        w.contains("targets.kagenti.issuedTokenAudience: may_be_absent"),
        "{w}"
    );
    assert!(
        w.contains("targets.kagenti.issuedTokenFormat: opaque"),
        "{w}"
    );
    assert_issue(
        &errors(&with_target("    issuedTokenFormat: jws\n")),
        "targets.kagenti.issuedTokenFormat",
        "must be one of: jwt, opaque",
    );
    assert_issue(
        &errors(&with_target("    issuedTokenAudience: none\n")),
        "targets.kagenti.issuedTokenAudience",
        "must be one of: required, may_be_absent",
    );
    assert_issue(
        &errors(&with_target(
            "    issuedTokenFormat: opaque\n    userMapping:\n      type: impersonation\n",
        )),
        "targets.kagenti.issuedTokenFormat",
        "cannot be combined with userMapping",
    );
    assert_issue(
        &errors(&with_target(
            "    issuedTokenFormat: opaque\n    requestedTokenType: urn:ietf:params:oauth:token-type:id_token\n",
        )),
        "targets.kagenti.issuedTokenFormat",
        "requestedTokenType id_token",
    );
}
