//! Proxy mode's decisions, free of actix types: where a request goes (path normalisation that
//! never leaves the configured upstream base), which headers pass in each direction, the
//! `X-Backstage-User` value, which failures are retried and how long to wait, and the bounded
//! read-ahead that makes small request bodies replayable ([`body`]), and the forwarder that
//! makes the call ([`forward`]: the upstream client, the headers sent, attempts and retries,
//! the 401 re-exchange decision, streaming both ways). The actix handler over it is
//! `http/proxy.rs`.

pub mod body;
pub mod forward;
pub mod headers;

pub use headers::{connection_named, forward_request_header, forward_response_header};

use std::time::Duration;

use url::Url;

use crate::inbound::Principal;
use crate::inbound::oidc::VerifiedUserToken;

/// The header carrying the principal's user entity ref to the target (audit on the target side).
pub use crate::protocol::headers::BACKSTAGE_USER_HEADER;

/// Why a request path cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an empty segment (//)")]
    EmptySegment,
    #[error("the path has a . or .. segment (also before a ;)")]
    DotSegment,
    #[error("the path has an encoded / or \\, a \\, or a control character")]
    ForbiddenCharacter,
    #[error("the path has an invalid percent-encoding")]
    BadEncoding,
    #[error("the path has a ; (matrix parameter), which this target does not accept")]
    MatrixParameter,
}

/// The upstream URL for `rest` (the raw, still percent-encoded path after
/// `/v1/proxy/<target>/`) and the raw query. `base` is the configured upstream, whose path ends
/// in `/`. The result is always `base` plus segments below it:
/// - `.`/`..` segments, also percent-encoded (`%2e%2E`), are refused (RFC 3986 §5.2.4 would
///   otherwise climb out of the base); so is a segment whose decoded form *before its first
///   `;`* is `.` or `..` (`..;`, `..;x=1`, `%2e%2e;`, `..%3b`): Tomcat, Jetty and Spring strip
///   RFC 3986 §3.3 path parameters before resolving dot segments, so `..;` climbs for them;
/// - a segment that is empty before its first `;` (`;x`) counts as empty;
/// - unless `allow_matrix` (the target's `allowMatrixParams`), any `;` in a segment, raw or
///   `%3B`, is refused: servers disagree on what path parameters mean, and a rule at the
///   upstream written for `/admin` may not match `/admin;x`;
/// - `%2f`/`%5c` (encoded `/` and `\`), a raw `\` (some servers read it as `/`) and control
///   characters (also `%00`…) are refused;
/// - empty segments are refused, so `//host/…` and `http://host/…` cannot be read as an
///   authority (RFC 3986 §3.2) anywhere downstream; one trailing `/` is kept;
/// - the query (RFC 3986 §3.4) is passed through as sent.
pub fn upstream_url(
    base: &Url,
    rest: &str,
    query: Option<&str>,
    allow_matrix: bool,
) -> Result<Url, PathError> {
    let rest = rest.strip_suffix('/').map_or((rest, false), |r| (r, true));
    let (rest, trailing) = rest;
    let mut path = base.path().to_owned();
    if !rest.is_empty() {
        for seg in rest.split('/') {
            check_segment(seg, allow_matrix)?;
        }
        path.push_str(rest);
        if trailing {
            path.push('/');
        }
    } else if trailing {
        // `/v1/proxy/t//`: an empty segment.
        return Err(PathError::EmptySegment);
    }
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(query);
    // Defence in depth: whatever `url` made of it, it must still be below the base.
    if url.scheme() != base.scheme()
        || url.host() != base.host()
        || url.port_or_known_default() != base.port_or_known_default()
        || !url.path().starts_with(base.path())
    {
        return Err(PathError::DotSegment);
    }
    Ok(url)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_segment(seg: &str, allow_matrix: bool) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bytes = seg.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let h = bytes.get(i + 1).copied().and_then(hex_digit);
            let l = bytes.get(i + 2).copied().and_then(hex_digit);
            let (Some(h), Some(l)) = (h, l) else {
                return Err(PathError::BadEncoding);
            };
            decoded.push(h * 16 + l);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if bytes.contains(&b'\\')
        || decoded
            .iter()
            .any(|&c| c == b'/' || c == b'\\' || c < 0x20 || c == 0x7f)
    {
        return Err(PathError::ForbiddenCharacter);
    }
    // What a servlet container resolves: the segment up to its first `;`, decoded.
    let name = decoded.split(|&c| c == b';').next().unwrap_or(&[]);
    if name == b"." || name == b".." {
        return Err(PathError::DotSegment);
    }
    if name.is_empty() {
        return Err(PathError::EmptySegment);
    }
    if !allow_matrix && decoded.contains(&b';') {
        return Err(PathError::MatrixParameter);
    }
    Ok(())
}

/// The `X-Backstage-User` value: for a Backstage user principal (a user token, or a plugin
/// token on behalf of a user) its entity ref as Backstage verified it; otherwise the user whose
/// verified Keycloak token came with the call, `user:default/<preferred_username>` (or `<sub>`
/// when the username is not a valid Backstage entity name). `None` when no user is involved.
pub fn user_entity_ref(
    principal: &Principal,
    user: Option<&VerifiedUserToken<'_>>,
) -> Option<String> {
    if principal.backstage_user.is_some() && principal.name.starts_with("user:") {
        return Some(principal.name.clone());
    }
    let user = user?;
    let name = user
        .preferred_username()
        .filter(|n| is_entity_name(n))
        .or_else(|| Some(user.sub()).filter(|s| is_entity_name(s)))?;
    Some(format!("user:default/{name}"))
}

/// Backstage entity name: `[a-zA-Z0-9]` then `[-_.a-zA-Z0-9]`, at most 63 characters, not
/// ending in a separator.
fn is_entity_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// RFC 9110 §9.2.2 idempotent methods: the only ones retried after a connection error or a
/// 502/503/504.
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE")
}

/// Methods the proxy refuses with 405 (RFC 9110 §15.5.6) before anything else: `TRACE`
/// (RFC 9110 §9.3.8) would echo the request, including whatever headers the upstream's own
/// proxies add, back to the caller; `CONNECT` (§9.3.6) asks for a tunnel, which is not what a
/// target is.
pub fn refused_method(method: &str) -> bool {
    method.eq_ignore_ascii_case("TRACE") || method.eq_ignore_ascii_case("CONNECT")
}

/// The `Allow` value of a 405 from the proxy (RFC 9110 §10.2.1).
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Whether an upstream status is retried (for idempotent, replayable requests).
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// Wait before retry `attempt` (1-based): 100 ms doubling, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(2_000))
}

/// Whether the caller asked for an event stream (`Accept: text/event-stream`).
pub fn accepts_event_stream<'a>(accept: impl Iterator<Item = &'a [u8]>) -> bool {
    accept
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::PrincipalKind;
    use secrecy::SecretString;

    fn base() -> Url {
        Url::parse("http://up.example:8080/api/").unwrap()
    }

    #[test]
    fn paths_append_below_the_base() {
        let u =
            |rest: &str, q: Option<&str>| upstream_url(&base(), rest, q, false).map(String::from);
        assert_eq!(u("", None).unwrap(), "http://up.example:8080/api/");
        assert_eq!(u("a/b", None).unwrap(), "http://up.example:8080/api/a/b");
        assert_eq!(u("a/b/", None).unwrap(), "http://up.example:8080/api/a/b/");
        assert_eq!(
            u("chat/stream", Some("x=1&y=%2F")).unwrap(),
            "http://up.example:8080/api/chat/stream?x=1&y=%2F"
        );
        assert_eq!(
            u("a%20b", None).unwrap(),
            "http://up.example:8080/api/a%20b"
        );
        assert_eq!(
            u("a..b/.c", None).unwrap(),
            "http://up.example:8080/api/a..b/.c"
        );
        // `http:` as a segment is harmless: it stays a path segment.
        assert_eq!(
            u("http:", None).unwrap(),
            "http://up.example:8080/api/http:"
        );
        // Characters `url` must encode are encoded, the host is untouched.
        assert_eq!(u("a@b", None).unwrap(), "http://up.example:8080/api/a@b");
        assert_eq!(u("a#b", None).unwrap(), "http://up.example:8080/api/a%23b");
        assert_eq!(u("a?b", None).unwrap(), "http://up.example:8080/api/a%3Fb");
    }

    #[test]
    fn escapes_are_refused() {
        let e = |rest: &str| upstream_url(&base(), rest, None, false).unwrap_err();
        assert_eq!(e(".."), PathError::DotSegment);
        assert_eq!(e("a/../../x"), PathError::DotSegment);
        assert_eq!(e("./x"), PathError::DotSegment);
        assert_eq!(e("%2e%2E/x"), PathError::DotSegment);
        assert_eq!(e(".%2e"), PathError::DotSegment);
        assert_eq!(e("a%2f..%2fx"), PathError::ForbiddenCharacter);
        assert_eq!(e("a%2Fb"), PathError::ForbiddenCharacter);
        assert_eq!(e("a%5cb"), PathError::ForbiddenCharacter);
        assert_eq!(e("a\\..\\b"), PathError::ForbiddenCharacter);
        assert_eq!(e("a%00b"), PathError::ForbiddenCharacter);
        assert_eq!(e("/evil.example/x"), PathError::EmptySegment);
        assert_eq!(e("http://evil.example/x"), PathError::EmptySegment);
        assert_eq!(e("a//b"), PathError::EmptySegment);
        assert_eq!(e("/"), PathError::EmptySegment);
        assert_eq!(e("a%zz"), PathError::BadEncoding);
        assert_eq!(e("a%2"), PathError::BadEncoding);
        assert_eq!(e("a%+f"), PathError::BadEncoding);
    }

    #[test]
    fn dot_segments_before_a_semicolon_are_refused_even_with_matrix_params() {
        for allow in [false, true] {
            let e = |rest: &str| upstream_url(&base(), rest, None, allow).unwrap_err();
            for rest in [
                "v1/..;/admin",
                "..;",
                "..;x=1/admin",
                "%2e%2e;/admin",
                "%2E.;jsessionid=1/x",
                "..%3b/admin",
                "..%3B/admin",
                ".;/x",
                "a/.%3bx/b",
            ] {
                assert_eq!(e(rest), PathError::DotSegment, "{rest} (allow {allow})");
            }
            assert_eq!(e("a/;x/b"), PathError::EmptySegment, "allow {allow}");
            assert_eq!(e("a/%3b/b"), PathError::EmptySegment, "allow {allow}");
        }
        // Matrix parameters: refused by default, raw or encoded; allowed per target.
        let strict = |rest: &str| upstream_url(&base(), rest, None, false);
        assert_eq!(strict("a;v=1/b"), Err(PathError::MatrixParameter));
        assert_eq!(strict("a%3Bv=1"), Err(PathError::MatrixParameter));
        let open = |rest: &str| upstream_url(&base(), rest, None, true).map(String::from);
        assert_eq!(
            open("cars;color=red/x").unwrap(),
            "http://up.example:8080/api/cars;color=red/x"
        );
        assert_eq!(
            open("a..;b").unwrap(),
            "http://up.example:8080/api/a..;b",
            "only a segment that is exactly . or .. before the ; is a dot segment"
        );
    }

    #[test]
    fn entity_ref_and_retry_rules() {
        let p = Principal {
            name: "oidc:1".into(),
            kind: PrincipalKind::User,
            restrictions: None,
            actor: None,
            backstage_user: None,
        };
        let facts = |preferred_username| crate::broker::principal::Facts {
            sub: "0b7c-42",
            exp: 0,
            kid: "k",
            preferred_username,
            azp: None,
            sid: None,
            match_value: None,
            service_account: false,
            broker_in_aud: true,
        };
        let user = |f| {
            let facts = crate::broker::principal::UserFacts::pack(&f).unwrap();
            VerifiedUserToken::new("x", std::sync::Arc::new(facts), [0; 32])
        };
        let u = user(facts(Some("alice")));
        assert_eq!(user_entity_ref(&p, Some(&u)).unwrap(), "user:default/alice");
        let u = user(facts(Some("alice@example.com")));
        assert_eq!(
            user_entity_ref(&p, Some(&u)).unwrap(),
            "user:default/0b7c-42"
        );
        assert_eq!(user_entity_ref(&p, None), None);
        // A Backstage user principal: the ref Backstage verified, even without a Keycloak token.
        let b = Principal {
            name: "user:default/bob".into(),
            kind: PrincipalKind::User,
            restrictions: None,
            actor: Some("plugin:augment".into()),
            backstage_user: Some(crate::inbound::BackstageUser {
                expires_at: 0,
                credential: SecretString::from("t".to_owned()),
            }),
        };
        assert_eq!(user_entity_ref(&b, None).unwrap(), "user:default/bob");

        assert!(is_idempotent("GET") && is_idempotent("PUT") && !is_idempotent("POST"));
        assert!(!is_idempotent("PATCH"));
        assert!(is_retryable_status(503) && !is_retryable_status(500));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(2));
        assert!(accepts_event_stream(
            [b"application/json, text/event-stream;q=0.9".as_slice()].into_iter()
        ));
        assert!(!accepts_event_stream(
            [b"application/json".as_slice()].into_iter()
        ));
    }
}
