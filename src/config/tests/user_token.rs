//! `userToken`.

use super::*;

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
