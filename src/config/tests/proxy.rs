//! `proxy` and the proxy-mode keys of a target.

use super::*;

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
