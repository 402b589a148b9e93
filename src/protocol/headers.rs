//! HTTP header names with a fixed meaning for the broker: the header it sets on proxied calls
//! to say whose call it is, and the request headers that never cross the proxy whatever the
//! configuration says. Both the proxy (which strips them) and the configuration check (which
//! refuses a `forwardHeaders` entry naming one) read this one list, so it sits below both.

/// The header the proxy sets on a forwarded call to name the Backstage user (only the broker
/// sets it; a caller's copy is never forwarded).
pub const BACKSTAGE_USER_HEADER: &str = "x-backstage-user";

/// RFC 9110 §7.6.1 hop-by-hop fields (plus `Proxy-Connection`, still sent by some clients, and
/// `Proxy-Authorization`/`Proxy-Authenticate`, RFC 9110 §11.7, meant for this hop).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Headers never forwarded, by exact name: credentials (only the broker supplies them),
/// framing the proxy sets itself, and headers upstreams read as the user's identity, the
/// client's address, or the URL or method to serve instead of the request line's.
const NEVER_EXACT: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "expect",
    "forwarded",
    // Identity set by authenticating proxies (Apache, Kubernetes, Grafana, cloud LBs).
    "remote-user",
    "x-user",
    "x-user-id",
    "x-email",
    "x-id-token",
    "x-access-token",
    // Client address.
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-original-forwarded-for",
    "x-host",
    // URL and method overrides (IIS URL Rewrite, Symfony, Zend; method tunnelling).
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-original-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers never forwarded, by prefix.
const NEVER_PREFIX: &[&str] = &[
    // RFC 7239's predecessors: the caller's claims about the path are not ours to vouch for.
    "x-forwarded",
    // The broker's own answers and the downstream credential families (SonataFlow's
    // `X-Authorization-{Provider}`).
    "x-token-broker-",
    "x-authorization-",
    // oauth2-proxy (`X-Auth-Request-User`, `-Email`, `-Groups`, `-Access-Token`) and similar.
    "x-auth-",
    // Kubernetes authenticating proxy and Apache (`X-Remote-User`, `-Group`, `-Extra-*`).
    "x-remote-",
    "x-webauth-",
    "x-ms-client-principal",
    "x-goog-authenticated-user-",
    "x-amzn-oidc-",
    // Envoy trusts `x-envoy-internal`, `x-envoy-original-path`, ….
    "x-envoy-",
];

/// Whether `name` (lower-case) is never forwarded upstream, whatever the configuration says.
pub fn never_forwarded(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
        || NEVER_EXACT.contains(&name)
        || NEVER_PREFIX.iter().any(|p| name.starts_with(p))
        || name == BACKSTAGE_USER_HEADER
}
