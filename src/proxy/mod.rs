//! Proxy mode's decisions, free of actix types: where a request goes (path normalisation that
//! never leaves the configured upstream base), which headers pass in each direction, the
//! `X-Backstage-User` value, which failures are retried and how long to wait, and the bounded
//! read-ahead that makes small request bodies replayable. The handler is `http/proxy.rs`.

pub mod body;

use std::time::Duration;

use url::Url;

use crate::inbound::Principal;
use crate::inbound::oidc::VerifiedUserToken;

/// The header carrying the principal's user entity ref to the target (audit on the target side).
pub const BACKSTAGE_USER_HEADER: &str = "x-backstage-user";

/// Why a request path cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an empty segment (//)")]
    EmptySegment,
    #[error("the path has a . or .. segment")]
    DotSegment,
    #[error("the path has an encoded / or \\, a \\, or a control character")]
    ForbiddenCharacter,
    #[error("the path has an invalid percent-encoding")]
    BadEncoding,
}

/// The upstream URL for `rest` (the raw, still percent-encoded path after
/// `/v1/proxy/<target>/`) and the raw query. `base` is the configured upstream, whose path ends
/// in `/`. The result is always `base` plus segments below it:
/// - `.`/`..` segments, also percent-encoded (`%2e%2E`), are refused (RFC 3986 §5.2.4 would
///   otherwise climb out of the base);
/// - `%2f`/`%5c` (encoded `/` and `\`), a raw `\` (some servers read it as `/`) and control
///   characters (also `%00`…) are refused;
/// - empty segments are refused, so `//host/…` and `http://host/…` cannot be read as an
///   authority (RFC 3986 §3.2) anywhere downstream; one trailing `/` is kept;
/// - the query (RFC 3986 §3.4) is passed through as sent.
pub fn upstream_url(base: &Url, rest: &str, query: Option<&str>) -> Result<Url, PathError> {
    let rest = rest.strip_suffix('/').map_or((rest, false), |r| (r, true));
    let (rest, trailing) = rest;
    let mut path = base.path().to_owned();
    if !rest.is_empty() {
        for seg in rest.split('/') {
            check_segment(seg)?;
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

fn check_segment(seg: &str) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bytes = seg.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEncoding)?;
            decoded.push(v);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if b"\\".iter().any(|c| bytes.contains(c))
        || decoded
            .iter()
            .any(|&c| c == b'/' || c == b'\\' || c < 0x20 || c == 0x7f)
    {
        return Err(PathError::ForbiddenCharacter);
    }
    if decoded == b"." || decoded == b".." {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// RFC 9110 §7.6.1 hop-by-hop fields (plus `Proxy-Connection`, still sent by some clients, and
/// `Proxy-Authorization`, RFC 9110 §11.7.2, meant for this hop).
const HOP_BY_HOP: &[&str] = &[
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

/// The field names listed in `Connection` headers (RFC 9110 §7.6.1: also hop-by-hop).
pub fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether a caller request header (lower-case `name`) is forwarded upstream. Removed: the
/// caller's credentials (`Authorization`, `Cookie`, the user-token header), hop-by-hop fields
/// and those `Connection` names, `Host` (the upstream's comes from config), framing
/// (`Content-Length` is set again from the body, `Expect` is answered here), `Forwarded` and
/// `X-Forwarded-*` (RFC 7239; the caller's claims about the path are not ours to vouch for),
/// the target's token header, any `X-Authorization-*` and the broker's own headers (the
/// caller cannot set them).
pub fn forward_request_header(
    name: &str,
    connection: &[String],
    user_token_header: &str,
    token_header: &str,
) -> bool {
    !(HOP_BY_HOP.contains(&name)
        || connection.iter().any(|c| c == name)
        || matches!(
            name,
            "authorization" | "cookie" | "host" | "content-length" | "expect" | "forwarded"
        )
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-token-broker-")
        // SonataFlow's credential-propagation family `X-Authorization-{Provider}`: only the
        // broker supplies downstream credentials, whichever header the target reads.
        || name.starts_with("x-authorization-")
        || name == BACKSTAGE_USER_HEADER
        || name.eq_ignore_ascii_case(user_token_header)
        || name == token_header)
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

/// The `X-Backstage-User` value: for a Backstage user principal (a user token, or a plugin
/// token on behalf of a user) its entity ref as Backstage verified it; otherwise the user whose
/// verified Keycloak token came with the call, `user:default/<preferred_username>` (or `<sub>`
/// when the username is not a valid Backstage entity name). `None` when no user is involved.
pub fn user_entity_ref(principal: &Principal, user: Option<&VerifiedUserToken>) -> Option<String> {
    if principal.backstage_user.is_some() && principal.name.starts_with("user:") {
        return Some(principal.name.clone());
    }
    let user = user?;
    let name = user
        .preferred_username
        .as_deref()
        .filter(|n| is_entity_name(n))
        .or_else(|| Some(user.sub.as_str()).filter(|s| is_entity_name(s)))?;
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
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

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
        let u = |rest: &str, q: Option<&str>| upstream_url(&base(), rest, q).map(String::from);
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
        let e = |rest: &str| upstream_url(&base(), rest, None).unwrap_err();
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
    }

    #[test]
    fn request_header_hygiene() {
        let conn = connection_named([b"keep-alive, X-Secret-Hop".as_slice()].into_iter());
        let f = |n: &str| {
            forward_request_header(
                n,
                &conn,
                "X-Forwarded-Access-Token",
                "x-authorization-keycloak",
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
        ] {
            assert!(!f(stripped), "{stripped} must be stripped");
        }
        for kept in ["accept", "content-type", "x-request-id", "user-agent"] {
            assert!(f(kept), "{kept} must pass");
        }
        assert!(!forward_response_header("transfer-encoding", &[]));
        assert!(!forward_response_header("x-token-broker-cache", &[]));
        assert!(forward_response_header("content-type", &[]));
        assert!(forward_response_header("www-authenticate", &[]));
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
        let mut u = VerifiedUserToken {
            raw: SecretString::from("x".to_owned()),
            sub: "0b7c-42".into(),
            exp: 0,
            preferred_username: Some("alice".into()),
            azp: None,
            match_value: None,
            service_account: false,
            broker_in_aud: true,
            kid: "k".into(),
            fingerprint: "f".into(),
            digest: [0; 32],
        };
        assert_eq!(user_entity_ref(&p, Some(&u)).unwrap(), "user:default/alice");
        u.preferred_username = Some("alice@example.com".into());
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
