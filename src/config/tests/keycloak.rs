//! `keycloak`.

use super::*;

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
