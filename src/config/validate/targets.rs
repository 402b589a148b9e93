//! `targets`: one entry per named target. What to ask Keycloak for (audience, scopes, token
//! type), who may use it and what happens without a user token (fallback, callers, service
//! principals), how the user is mapped, and the proxy-mode keys of a target with an `upstream`.

use std::collections::BTreeMap;

use serde_json::Value;
use url::Url;

use super::rules::{UrlRule, entity_template, http_url, is_tchar, section};
use crate::config::error::Issues;
use crate::config::model::*;
use crate::config::walk::{Field, Obj, kind};

const TARGET_KEYS: &[&str] = &[
    "audience",
    "scopes",
    "allowedScopes",
    "requestedTokenType",
    "fallback",
    "servicePrincipals",
    "allowedCallers",
    "upstream",
    "tokenHeader",
    "streaming",
    "forwardHeaders",
    "allowMatrixParams",
    "userMapping",
    "issuedTokenAudience",
    "issuedTokenFormat",
];

pub(super) fn targets(
    field: &Field<'_>,
    issues: &mut Issues,
) -> Option<BTreeMap<String, TargetConfig>> {
    let obj = Obj::new(field.value, field.path.clone(), None, issues)?;
    if obj.is_empty() {
        issues.push(&field.path, "is required: at least one target");
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, target_field) in obj.entries() {
        let name_ok = is_target_name(name);
        if !name_ok {
            issues.push(
                &target_field.path,
                "target names must match ^[a-z0-9][a-z0-9-]*$ and be at most 64 characters",
            );
        }
        match (target(&target_field, issues), name_ok) {
            (Some(t), true) => {
                out.insert(name.clone(), t);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// `^[a-z0-9][a-z0-9-]*$`, at most 64 characters. No `_` so that a target name is one segment of
/// a `TOKEN_BROKER_CONFIG_targets_<name>_<key>` override, and no `.` so that it is one segment
/// of a key path and of the `token-broker.target.<name>` permission name.
fn is_target_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn target(field: &Field<'_>, issues: &mut Issues) -> Option<TargetConfig> {
    if field.value.is_none() {
        issues.push(&field.path, "expected a mapping with at least audience");
        return None;
    }
    let obj = section(field, TARGET_KEYS, issues)?;
    let audience_field = obj.field("audience");
    let audience = audience_field.req_str(issues).and_then(|a| {
        if a.is_empty() || a.chars().any(char::is_whitespace) {
            issues.push(
                &audience_field.path,
                "must be a Keycloak client id: non-empty, no whitespace",
            );
            None
        } else {
            Some(a.to_owned())
        }
    });
    let scopes = scope_list(&obj.field("scopes"), issues);
    let allowed_scopes = scope_list(&obj.field("allowedScopes"), issues);
    let requested_token_type = obj.field("requestedTokenType").enum_or(
        TokenType::AccessToken,
        &[
            (TokenType::ACCESS_TOKEN_URN, TokenType::AccessToken),
            (TokenType::ID_TOKEN_URN, TokenType::IdToken),
        ],
        issues,
    );
    let fallback = obj.field("fallback").enum_or(
        FallbackPolicy::Deny,
        &[
            ("service_account", FallbackPolicy::ServiceAccount),
            ("deny", FallbackPolicy::Deny),
        ],
        issues,
    );
    // Service principals default to the fallback policy: a strict (`deny`) target hands the
    // broker's service-account token to nobody unless it says so explicitly.
    let service_principals = obj.field("servicePrincipals").enum_or(
        fallback.unwrap_or(FallbackPolicy::Deny),
        &[
            ("service_account", FallbackPolicy::ServiceAccount),
            ("deny", FallbackPolicy::Deny),
        ],
        issues,
    );
    let callers_field = obj.field("allowedCallers");
    let allowed_callers = callers_field
        .opt_str_list(
            |c| {
                (c.is_empty() || c.chars().any(char::is_whitespace))
                    .then_some("must be a non-empty principal name pattern without whitespace")
            },
            issues,
        )
        .and_then(|callers| match callers {
            Some(c) if c.is_empty() => {
                // An empty list would silently lock the target; omitting the key is the way to
                // say "any authenticated caller".
                issues.push(
                    &callers_field.path,
                    "must not be empty (omit it to allow any authenticated caller)",
                );
                None
            }
            other => Some(other),
        });
    let upstream = target_upstream(&obj, issues);
    let user_mapping = user_mapping(&obj.field("userMapping"), issues);
    let issued_token_audience = obj.field("issuedTokenAudience").enum_or(
        IssuedAudience::Required,
        &[
            ("required", IssuedAudience::Required),
            ("may_be_absent", IssuedAudience::MayBeAbsent),
        ],
        issues,
    );
    let format_field = obj.field("issuedTokenFormat");
    let issued_token_format = format_field.enum_or(
        IssuedFormat::Jwt,
        &[("jwt", IssuedFormat::Jwt), ("opaque", IssuedFormat::Opaque)],
        issues,
    );
    if issued_token_format == Some(IssuedFormat::Opaque) {
        // An opaque answer has no claims: nothing would show a mapped user's token is that
        // user's, and an ID token is always a JWT.
        if matches!(user_mapping, Some(Some(_))) {
            issues.push(
                &format_field.path,
                "opaque cannot be combined with userMapping: the broker must see that the answer is the mapped user's token",
            );
            return None;
        }
        if requested_token_type == Some(TokenType::IdToken) {
            issues.push(
                &format_field.path,
                "opaque cannot be combined with requestedTokenType id_token: an ID token is a JWT",
            );
            return None;
        }
    }
    Some(TargetConfig {
        issued_token_audience: issued_token_audience?,
        issued_token_format: issued_token_format?,
        upstream: upstream?,
        user_mapping: user_mapping?,
        audience: audience?,
        scopes: scopes?,
        allowed_scopes: allowed_scopes?,
        requested_token_type: requested_token_type?,
        fallback: fallback?,
        service_principals: service_principals?,
        allowed_callers: allowed_callers?,
    })
}

const SCOPE_TOKEN_MSG: &str =
    "each scope must be an RFC 6749 §3.3 scope-token: printable ASCII without space, \" or \\";

/// `scopes`/`allowedScopes`: a list, or one space-delimited string (RFC 6749 §3.3 `scope`).
fn scope_list(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<String>> {
    let check = |s: &str| (!is_scope_token(s)).then_some(SCOPE_TOKEN_MSG);
    let list = match field.value {
        Some(Value::String(_)) => field.opt_split_list(|c| c == ' ', check, issues)?,
        _ => field.opt_str_list(check, issues)?,
    };
    let mut out: Vec<String> = Vec::new();
    for s in list.unwrap_or_default() {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Some(out)
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// `targets.<name>.userMapping`: `jwt_authorization_grant`, `impersonation`, or
/// `{type, subject}`.
fn user_mapping(field: &Field<'_>, issues: &mut Issues) -> Option<Option<UserMapping>> {
    let kinds = [
        (
            "jwt_authorization_grant",
            UserMappingKind::JwtAuthorizationGrant,
        ),
        ("impersonation", UserMappingKind::Impersonation),
    ];
    let default_subject = |k: UserMappingKind| match k {
        UserMappingKind::JwtAuthorizationGrant => "{ref}",
        UserMappingKind::Impersonation => "{name}",
    };
    match field.value {
        None => Some(None),
        Some(Value::String(_)) => {
            let k = field.enum_or(UserMappingKind::Impersonation, &kinds, issues)?;
            Some(Some(UserMapping {
                kind: k,
                subject: default_subject(k).to_owned(),
            }))
        }
        Some(Value::Object(_)) => {
            let obj = section(field, &["type", "subject"], issues)?;
            let tf = obj.field("type");
            if tf.value.is_none() {
                issues.push(
                    &tf.path,
                    "is required: jwt_authorization_grant or impersonation",
                );
                return None;
            }
            let k = tf.enum_or(UserMappingKind::Impersonation, &kinds, issues);
            let subject = match k {
                Some(k) => entity_template(&obj.field("subject"), default_subject(k), issues),
                None => None,
            };
            Some(Some(UserMapping {
                kind: k?,
                subject: subject?,
            }))
        }
        Some(other) => {
            issues.push(
                &field.path,
                format!("expected a string or a mapping, found {}", kind(other)),
            );
            None
        }
    }
}

/// Headers a target may not use for its token: the broker sets or strips them itself
/// (RFC 9110 §7.6.1 hop-by-hop fields, framing, `Host`, forwarding and broker headers).
const RESERVED_TOKEN_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
    "x-backstage-user",
];

/// `upstream`, `tokenHeader`, `streaming`, `forwardHeaders`, `allowMatrixParams` of one target.
fn target_upstream(obj: &Obj<'_>, issues: &mut Issues) -> Option<Option<UpstreamConfig>> {
    let url_field = obj.field("upstream");
    let header_field = obj.field("tokenHeader");
    let streaming_field = obj.field("streaming");
    let forward_field = obj.field("forwardHeaders");
    let matrix_field = obj.field("allowMatrixParams");
    let base = match url_field.opt_str(issues) {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => upstream_url(&url_field, raw, issues).map(Some),
    };
    let token_header = match header_field.opt_str(issues) {
        None => None,
        Some(None) => Some(TokenHeader::Authorization),
        Some(Some(h)) => {
            let lower = h.to_ascii_lowercase();
            if h.is_empty() || !h.bytes().all(is_tchar) {
                issues.push(
                    &header_field.path,
                    "must be an HTTP header name (RFC 9110 §5.1: letters, digits and !#$%&'*+-.^_`|~)",
                );
                None
            } else if RESERVED_TOKEN_HEADERS.contains(&lower.as_str())
                || lower.starts_with("x-forwarded-")
                || lower.starts_with("x-token-broker-")
            {
                issues.push(
                    &header_field.path,
                    "is a header the proxy sets or removes itself; choose another name",
                );
                None
            } else if lower == "authorization" {
                Some(TokenHeader::Authorization)
            } else {
                Some(TokenHeader::Custom(lower))
            }
        }
    };
    let streaming = streaming_field.bool_or(false, issues);
    let forward_headers = forward_headers(&forward_field, issues);
    let allow_matrix_params = matrix_field.bool_or(false, issues);
    let base = base?;
    if base.is_none() {
        for f in [
            &header_field,
            &streaming_field,
            &forward_field,
            &matrix_field,
        ] {
            if f.value.is_some() {
                issues.push(&f.path, "has no effect without upstream");
            }
        }
    }
    let (token_header, streaming) = (token_header?, streaming?);
    let (forward_headers, allow_matrix_params) = (forward_headers?, allow_matrix_params?);
    Some(base.map(|base| UpstreamConfig {
        base,
        token_header,
        streaming,
        forward_headers,
        allow_matrix_params,
    }))
}

/// `forwardHeaders`: header names (or `prefix*` patterns) forwarded in addition to the
/// built-in allow-list. Names the proxy never forwards (credentials, hop-by-hop, identity,
/// client-IP and URL-override headers, see `protocol::headers`) are refused here; at run time they
/// are stripped even when a pattern covers them.
fn forward_headers(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<String>> {
    let list = field.opt_str_list(
        |h| {
            let name = h.strip_suffix('*').unwrap_or(h);
            if name.is_empty() || !name.bytes().all(is_tchar) || name.contains('*') {
                Some(
                    "each entry must be an HTTP header name (RFC 9110 §5.1), or a non-empty prefix followed by *",
                )
            } else if !h.ends_with('*')
                && crate::protocol::headers::never_forwarded(&h.to_ascii_lowercase())
            {
                Some(
                    "is a header the proxy never forwards (credentials, hop-by-hop, identity, client-IP or URL-override headers)",
                )
            } else {
                None
            }
        },
        issues,
    )?;
    let mut out: Vec<String> = list
        .unwrap_or_default()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// An upstream base URL: absolute http(s), a host, no user info, query or fragment. Its path
/// is stored ending in `/` so request paths append below it.
fn upstream_url(field: &Field<'_>, raw: &str, issues: &mut Issues) -> Option<Url> {
    let example = "https://kagenti.example.com/api";
    let mut url = http_url(field, raw, UrlRule::Base { example }, issues)?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}
