//! `keycloak`.

use super::*;

#[test]
fn keycloak_errors() {
    let cases: &[(&str, &str)] = &[
        ("ftp://kc.example.com/realms/x", "http or https"),
        ("not a url", "absolute http or https URL"),
        ("https://kc.example.com/realms/x?a=b", "query"),
        ("https://kc.example.com/realms/x#f", "fragment"),
        ("HTTPS://idp.example.com/", "normalised form"),
        ("https://idp.example.com:443", "normalised form"),
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

/// Issue 12: the issuer exactly as the IdP publishes it — with or without a trailing slash,
/// without a path, with a deep path — is accepted and kept byte for byte (nothing trimmed,
/// nothing added, not even the `/` `Url` puts on an empty path).
#[test]
fn issuer_forms_are_kept_exactly() {
    for issuer in [
        "https://kc.example.com/realms/rhdh",
        "https://tenant.auth0.com/",
        "https://accounts.google.com",
        "https://idp.example.com/",
        "https://auth.example.com/application/o/app/",
        "https://login.example.com/a/b/c/v2.0",
        "http://127.0.0.1:7080/realms/dev",
    ] {
        let yaml = MINIMAL.replace("https://kc.example.com/realms/rhdh", issuer);
        let c = load(&yaml).unwrap_or_else(|e| panic!("{issuer}: {e}"));
        assert_eq!(c.keycloak.issuer_id, issuer);
    }
}

/// The realm-path rule of Keycloak is advice, and only under the keycloak profile.
#[test]
fn realm_path_is_a_warning_under_the_keycloak_profile_only() {
    let realm = load(MINIMAL).unwrap();
    assert!(warnings(&realm).is_empty(), "{:?}", warnings(&realm));
    for issuer in [
        "https://idp.example.com/",
        "https://idp.example.com",
        "https://kc.example.com/realms/rhdh/",
    ] {
        let yaml = MINIMAL.replace("https://kc.example.com/realms/rhdh", issuer);
        let c = load(&yaml).unwrap();
        assert_eq!(c.keycloak.profile, IdpProfile::Keycloak);
        let w = warnings(&c);
        assert!(
            w.iter()
                .any(|w| w.contains("no Keycloak realm path") && !w.contains(issuer)),
            "{issuer}: {w:?}"
        );
        let generic = yaml.replace("  clientId:", "  profile: generic\n  clientId:");
        let c = load(&generic).unwrap();
        assert_eq!(c.keycloak.profile, IdpProfile::Generic);
        assert!(warnings(&c).is_empty(), "{issuer}: {:?}", warnings(&c));
    }
    let bad = MINIMAL.replace("  clientId:", "  profile: okta\n  clientId:");
    assert_issue(
        &errors(&bad),
        "keycloak.profile",
        "must be one of: keycloak, generic",
    );
}

/// The subject-token type rule follows the profile unless set; impersonation (Keycloak V1)
/// needs the keycloak profile.
#[test]
fn profile_defaults_and_keycloak_only_features() {
    assert_eq!(
        load(MINIMAL).unwrap().user_token.token_type_check,
        TokenTypeCheck::KeycloakClaim
    );
    let generic = MINIMAL.replace("  clientId:", "  profile: generic\n  clientId:");
    assert_eq!(
        load(&generic).unwrap().user_token.token_type_check,
        TokenTypeCheck::Jwt
    );
    for (value, want) in [
        ("keycloak", TokenTypeCheck::KeycloakClaim),
        ("at+jwt", TokenTypeCheck::AtJwt),
        ("jwt", TokenTypeCheck::Jwt),
    ] {
        let y = format!("{generic}userToken:\n  tokenTypeCheck: \"{value}\"\n");
        assert_eq!(load(&y).unwrap().user_token.token_type_check, want);
    }
    let y = format!("{MINIMAL}userToken:\n  tokenTypeCheck: none\n");
    assert_issue(
        &errors(&y),
        "userToken.tokenTypeCheck",
        "must be one of: keycloak, at+jwt, jwt",
    );
    let imp = "    userMapping:\n      type: impersonation\n";
    assert!(load(&with_target(imp)).is_ok());
    let y = format!("{generic}{imp}");
    assert_issue(
        &errors(&y),
        "targets.kagenti.userMapping",
        "needs keycloak.profile: keycloak",
    );
}

/// `userToken.verify`: jwks by default, introspection (RFC 7662) on request.
#[test]
fn user_token_verification_mode() {
    assert_eq!(
        load(MINIMAL).unwrap().user_token.verify,
        UserTokenVerify::Jwks
    );
    let y = format!("{MINIMAL}userToken:\n  verify: introspection\n");
    assert_eq!(
        load(&y).unwrap().user_token.verify,
        UserTokenVerify::Introspection
    );
    let y = format!("{MINIMAL}userToken:\n  verify: both\n");
    assert_issue(
        &errors(&y),
        "userToken.verify",
        "must be one of: jwks, introspection",
    );
}
