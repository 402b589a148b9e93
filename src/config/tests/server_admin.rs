//! `server`, `admin` and `logging`.

use super::*;

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
