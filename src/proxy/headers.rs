//! Which headers cross the proxy in each direction.
//!
//! Requests: an **allow-list**. Only [`DEFAULT_FORWARDED`] and the target's `forwardHeaders`
//! reach the upstream; everything else the caller sent is dropped. A deny-list cannot keep up
//! with the headers upstreams trust: auth proxies put the user in `X-Auth-Request-User` or
//! `X-Remote-User`, frameworks take the client address from `X-Real-IP` or `True-Client-IP`,
//! and IIS/Symfony/Zend route on `X-Original-URL`/`X-Rewrite-URL`. A caller able to set any of
//! them could speak for the broker. [`never_forwarded`] names the headers that stay out even
//! when an operator's pattern covers them (credentials, hop-by-hop fields, identity, client-IP,
//! URL- and method-override headers); configuration refuses to list them by name. That list
//! lives in [`crate::protocol::headers`], below both this module and the configuration.
//!
//! Responses: the upstream's headers minus hop-by-hop fields, framing and the broker's own
//! `X-Token-Broker-*` (a deny-list: the caller trusts the upstream's answer anyway).

use crate::protocol::headers::HOP_BY_HOP;
pub use crate::protocol::headers::never_forwarded;

/// Request headers every proxy target receives from the caller (lower-case). Content
/// negotiation and description (RFC 9110 §12.5, §8.3–8.5), conditional requests and ranges
/// (RFC 9110 §13, §14.2), caching directives (RFC 9111 §5.2, §5.4), `User-Agent`,
/// `Prefer` (RFC 7240), SSE resumption (`Last-Event-ID`, WHATWG HTML §9.2), and request
/// correlation and tracing: W3C Trace Context (`traceparent`, `tracestate`), W3C Baggage,
/// Zipkin B3, `X-Request-Id`, `X-Correlation-Id`.
pub const DEFAULT_FORWARDED: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "content-type",
    "content-encoding",
    "content-language",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "range",
    "cache-control",
    "pragma",
    "user-agent",
    "prefer",
    "last-event-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
    "x-correlation-id",
];

/// The field names listed in `Connection` headers (RFC 9110 §7.6.1: also hop-by-hop).
pub fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `name` matches one `forwardHeaders` entry: an exact name, or `prefix*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether a caller request header (lower-case `name`) is forwarded upstream: it must be on
/// the allow-list ([`DEFAULT_FORWARDED`] or a `forward` entry of the target) and not be one of
/// the headers that never pass ([`never_forwarded`], the `Connection`-named fields, the
/// user-token header, the target's token header).
pub fn forward_request_header(
    name: &str,
    connection: &[String],
    user_token_header: &str,
    token_header: &str,
    forward: &[String],
) -> bool {
    if never_forwarded(name)
        || connection.iter().any(|c| c == name)
        || name.eq_ignore_ascii_case(user_token_header)
        || name == token_header
    {
        return false;
    }
    DEFAULT_FORWARDED.contains(&name) || forward.iter().any(|p| matches(p, name))
}

/// Whether an upstream response header (lower-case `name`) is passed to the caller: not
/// hop-by-hop (RFC 9110 §7.6.1), not framing (actix frames the answer itself), not the broker's
/// own `X-Token-Broker-*` (only the broker says whose token was used).
pub fn forward_response_header(name: &str, connection: &[String]) -> bool {
    !(HOP_BY_HOP.contains(&name)
        || connection.iter().any(|c| c == name)
        || name == "content-length"
        || name.starts_with("x-token-broker-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_allow_list() {
        let conn = connection_named([b"keep-alive, X-Secret-Hop".as_slice()].into_iter());
        let extra = vec![
            "x-tenant".to_owned(),
            "x-kagenti-*".to_owned(),
            "x-*".to_owned(),
        ];
        let f = |n: &str, extra: &[String]| {
            forward_request_header(
                n,
                &conn,
                "X-Forwarded-Access-Token",
                "x-authorization-keycloak",
                extra,
            )
        };
        for stripped in [
            "authorization",
            "cookie",
            "host",
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "x-secret-hop",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-access-token",
            "x-authorization-keycloak",
            "x-authorization-github",
            "x-backstage-user",
            "x-token-broker-identity",
            "content-length",
            "expect",
            "x-auth-request-user",
            "x-auth-request-email",
            "x-remote-user",
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
        ] {
            // Even a pattern that covers everything starting with `x-` does not let them through.
            assert!(!f(stripped, &extra), "{stripped} must be stripped");
            assert!(never_forwarded(stripped) || stripped == "x-secret-hop");
        }
        for kept in [
            "accept",
            "content-type",
            "x-request-id",
            "user-agent",
            "traceparent",
            "tracestate",
            "baggage",
            "if-none-match",
        ] {
            assert!(f(kept, &[]), "{kept} must pass");
        }
        // Not on the allow-list: dropped unless the target lists it.
        assert!(!f("x-tenant", &[]));
        assert!(f("x-tenant", &extra));
        assert!(!f("x-kagenti-session", &[]));
        assert!(f("x-kagenti-session", &extra[..2]));
        assert!(!f("origin", &extra[..2]));
    }

    #[test]
    fn response_headers() {
        assert!(!forward_response_header("transfer-encoding", &[]));
        assert!(!forward_response_header("x-token-broker-cache", &[]));
        assert!(forward_response_header("content-type", &[]));
        assert!(forward_response_header("www-authenticate", &[]));
    }
}
