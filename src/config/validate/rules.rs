//! Syntax rules several sections share: the section shape, integer conversion, HTTP tokens,
//! non-space strings, entity-ref templates and the one URL check.

use url::Url;

use crate::config::backstage::template_ok;
use crate::config::error::Issues;
use crate::config::walk::{Field, Obj, is_js_non_space};

/// The mapping at `field` with only the `known` keys (an absent section reads as empty).
pub(super) fn section<'v>(
    field: &Field<'v>,
    known: &[&str],
    issues: &mut Issues,
) -> Option<Obj<'v>> {
    Obj::new(field.value, field.path.clone(), Some(known), issues)
}

/// An optional integer key as `usize`, refused when it does not fit the platform.
pub(super) fn to_usize(
    field: &Field<'_>,
    n: Option<Option<u64>>,
    issues: &mut Issues,
) -> Option<Option<usize>> {
    match n? {
        None => Some(None),
        Some(n) => match usize::try_from(n) {
            Ok(n) => Some(Some(n)),
            Err(_) => {
                issues.push(&field.path, "is too large for this platform");
                None
            }
        },
    }
}

/// RFC 9110 §5.6.2 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A required `^\S+$` string (Backstage's check for every handler option).
pub(super) fn non_space<'v>(field: &Field<'v>, issues: &mut Issues) -> Option<&'v str> {
    let s = field.req_str(issues)?;
    if is_js_non_space(s) {
        Some(s)
    } else {
        issues.push(&field.path, "must be non-empty and contain no whitespace");
        None
    }
}

/// An optional entity-ref template (`{ref}`, `{kind}`, `{namespace}`, `{name}`), `default` when
/// absent.
pub(super) fn entity_template(
    field: &Field<'_>,
    default: &str,
    issues: &mut Issues,
) -> Option<String> {
    match field.opt_str(issues)? {
        None => Some(default.to_owned()),
        Some(t) if template_ok(t) => Some(t.to_owned()),
        Some(_) => {
            issues.push(
                &field.path,
                "must be a non-empty template whose placeholders are {ref}, {kind}, {namespace} or {name}",
            );
            None
        }
    }
}

/// Which rules a URL key follows beyond "absolute http(s) URL with a host".
#[derive(Clone, Copy)]
pub(super) enum UrlRule {
    /// A key Backstage also has (`backend.baseUrl`, a `discovery` target, a `jwks` handler's
    /// `url`): Backstage's own check and nothing more, with one message for every failure.
    Backstage,
    /// A base URL the broker builds requests on (the issuer, a target's `upstream`): also no
    /// user info, query or fragment. `example` shows the expected form in the error.
    Base { example: &'static str },
}

/// The one URL check of the configuration: an absolute http(s) URL with a host, plus the
/// stricter base-URL rules when `rule` asks for them.
pub(super) fn http_url(
    field: &Field<'_>,
    raw: &str,
    rule: UrlRule,
    issues: &mut Issues,
) -> Option<Url> {
    const NOT_HTTP: &str = "must be an absolute http or https URL";
    let Ok(url) = Url::parse(raw) else {
        match rule {
            UrlRule::Backstage => issues.push(&field.path, NOT_HTTP),
            UrlRule::Base { example } => {
                issues.push(&field.path, format!("{NOT_HTTP}, e.g. {example}"));
            }
        }
        return None;
    };
    let base = matches!(rule, UrlRule::Base { .. });
    let problem = if !matches!(url.scheme(), "http" | "https") {
        Some("must use the http or https scheme")
    } else if url.host().is_none() {
        Some("must have a host")
    } else if base && (!url.username().is_empty() || url.password().is_some()) {
        Some("must not contain a user name or password")
    } else if base && (url.query().is_some() || url.fragment().is_some()) {
        Some("must not have a query (?) or fragment (#)")
    } else {
        None
    };
    match (problem, rule) {
        (None, _) => Some(url),
        (Some(_), UrlRule::Backstage) => {
            issues.push(&field.path, NOT_HTTP);
            None
        }
        (Some(msg), UrlRule::Base { .. }) => {
            issues.push(&field.path, msg);
            None
        }
    }
}
