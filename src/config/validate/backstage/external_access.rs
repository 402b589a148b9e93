//! `backend.auth`: Backstage's external-access handlers (`externalAccess` entries of type
//! `static`, `jwks` and `legacy`, each with optional `accessRestrictions`) and the older
//! `backend.auth.keys`, all in the order Backstage tries them. Backstage's rules for them:
//! docs/reference/backstage-tokens.md §3.4 (the `.ts` names below are files of Backstage's
//! source, listed in its §11).

use secrecy::SecretString;
use serde_json::Value;

use super::super::rules::{UrlRule, http_url, non_space, section};
use crate::config::backstage::lenient_base64url;
use crate::config::error::Issues;
use crate::config::model::*;
use crate::config::walk::{Field, is_js_non_space, is_js_space, kind};

/// `backend.auth`: `{externalAccess, keys}`, as entries in the order Backstage tries them.
pub(super) fn auth(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<ExternalAccessEntry>> {
    let auth = section(field, &["externalAccess", "keys"], issues)?;
    let keys = auth_keys(&auth.field("keys"), issues);
    let list = auth.field("externalAccess");
    let items = match list.value {
        None => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            issues.push(
                &list.path,
                format!("expected a list, found {}", kind(other)),
            );
            return None;
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let entry = Field {
            value: Some(item).filter(|v| !v.is_null()),
            path: list.path.index(i),
        };
        match external_access_entry(&entry, issues) {
            Some(e) => out.push(e),
            None => ok = false,
        }
    }
    // backend.auth.keys come after externalAccess (ExternalAuthTokenHandler.ts 64–141).
    out.extend(keys?);
    ok.then_some(out)
}

/// Parser of one handler type's `options`; `None` in [`HANDLERS`] would mark a type Backstage
/// has that the broker does not implement.
type HandlerParser = fn(&Field<'_>, &mut Issues) -> Option<ExternalAccessKind>;

/// Backstage's built-in `externalAccess` types (ExternalAuthTokenHandler.ts).
const HANDLERS: &[(&str, Option<HandlerParser>)] = &[
    ("static", Some(static_handler)),
    ("jwks", Some(jwks_handler)),
    ("legacy", Some(legacy_handler)),
];

fn external_access_entry(field: &Field<'_>, issues: &mut Issues) -> Option<ExternalAccessEntry> {
    let obj = section(field, &["type", "options", "accessRestrictions"], issues)?;
    let type_field = obj.field("type");
    let kind = match type_field.req_str(issues) {
        None => None,
        Some(t) => match HANDLERS.iter().find(|(name, _)| *name == t) {
            Some((_, Some(parse))) => parse(&obj.field("options"), issues),
            Some((name, None)) => {
                issues.push(
                    &type_field.path,
                    format!("type '{name}' is not supported yet"),
                );
                None
            }
            None => {
                issues.push(
                    &type_field.path,
                    "must be one of: static, jwks, legacy (custom handlers are not supported)",
                );
                None
            }
        },
    };
    let access_restrictions = access_restrictions(&obj.field("accessRestrictions"), issues);
    Some(ExternalAccessEntry {
        kind: kind?,
        access_restrictions: access_restrictions?,
    })
}

/// `type: static` (Backstage static.ts): `token` matches `^\S+$` with at least 8 characters,
/// `subject` matches `^\S+$`.
fn static_handler(field: &Field<'_>, issues: &mut Issues) -> Option<ExternalAccessKind> {
    let obj = section(field, &["token", "subject"], issues)?;
    let token_field = obj.field("token");
    let token = non_space(&token_field, issues).and_then(|t| {
        if t.encode_utf16().count() < 8 {
            // JavaScript string length counts UTF-16 code units; match Backstage exactly.
            issues.push(&token_field.path, "must be at least 8 characters");
            None
        } else {
            Some(SecretString::from(t.to_owned()))
        }
    });
    let subject = non_space(&obj.field("subject"), issues).map(str::to_owned);
    Some(ExternalAccessKind::Static {
        token: token?,
        subject: subject?,
    })
}

/// `type: jwks` options (jwks.ts 35–85, helpers.ts 72–110).
pub(crate) fn jwks_handler(field: &Field<'_>, issues: &mut Issues) -> Option<ExternalAccessKind> {
    let obj = section(
        field,
        &[
            "url",
            "algorithm",
            "issuer",
            "audience",
            "subjectPrefix",
            // Parsed by Backstage but unused: only the entry-level key counts
            // (docs/reference/backstage-tokens.md §3.4).
            "accessRestrictions",
        ],
        issues,
    )?;
    let url_field = obj.field("url");
    let url = non_space(&url_field, issues)
        .and_then(|u| http_url(&url_field, u, UrlRule::Backstage, issues));
    let split = |c: char| is_js_space(c) || c == ',';
    let list = |key: &str, issues: &mut Issues| {
        obj.field(key)
            .opt_split_list(split, |_| None, issues)
            .map(Option::unwrap_or_default)
    };
    let algorithms = list("algorithm", issues);
    let issuers = list("issuer", issues);
    let audiences = list("audience", issues);
    let pf = obj.field("subjectPrefix");
    let subject_prefix = pf.opt_str(issues).and_then(|p| match p {
        None => Some(None),
        Some(p) if is_js_non_space(p) => Some(Some(p.to_owned())),
        Some(_) => {
            issues.push(&pf.path, "must be non-empty and contain no whitespace");
            None
        }
    });
    Some(ExternalAccessKind::Jwks {
        url: url?,
        algorithms: algorithms?,
        issuers: issuers?,
        audiences: audiences?,
        subject_prefix: subject_prefix?,
    })
}

/// `type: legacy` options: `{secret, subject}` (legacy.ts 41–103).
pub(crate) fn legacy_handler(field: &Field<'_>, issues: &mut Issues) -> Option<ExternalAccessKind> {
    let obj = section(field, &["secret", "subject"], issues)?;
    let secret = legacy_secret(&obj.field("secret"), issues);
    let subject = non_space(&obj.field("subject"), issues);
    Some(ExternalAccessKind::Legacy {
        secret: secret?,
        subject: subject?.to_owned(),
    })
}

fn legacy_secret(field: &Field<'_>, issues: &mut Issues) -> Option<SecretString> {
    let s = non_space(field, issues)?;
    if lenient_base64url(s).is_empty() {
        issues.push(&field.path, "must be a base64 or base64url encoded key");
        return None;
    }
    Some(SecretString::from(s.to_owned()))
}

/// `backend.auth.keys`: `[{secret}]`, each a `legacy` handler with subject
/// `external:backstage-plugin`, appended after `externalAccess` (docs/reference/backstage-tokens.md
/// §3.4).
pub(crate) fn auth_keys(
    field: &Field<'_>,
    issues: &mut Issues,
) -> Option<Vec<ExternalAccessEntry>> {
    let items = field.opt_items(issues)?.unwrap_or_default();
    let mut out = Vec::new();
    let mut ok = true;
    for f in &items {
        let secret =
            section(f, &["secret"], issues).and_then(|o| legacy_secret(&o.field("secret"), issues));
        match secret {
            Some(secret) => out.push(ExternalAccessEntry {
                kind: ExternalAccessKind::Legacy {
                    secret,
                    subject: "external:backstage-plugin".to_owned(),
                },
                access_restrictions: None,
            }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

const ACTIONS: &[&str] = &["create", "read", "update", "delete"];

/// Entry-level `accessRestrictions` (Backstage helpers.ts `readAccessRestrictionsFromConfig`).
/// An empty list means no restrictions.
fn access_restrictions(
    field: &Field<'_>,
    issues: &mut Issues,
) -> Option<Option<Vec<AccessRestriction>>> {
    let items = match field.value {
        None => return Some(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            issues.push(
                &field.path,
                format!("expected a list, found {}", kind(other)),
            );
            return None;
        }
    };
    let mut out: Vec<AccessRestriction> = Vec::with_capacity(items.len());
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_field = Field {
            value: Some(item).filter(|v| !v.is_null()),
            path: field.path.index(i),
        };
        match access_restriction(&item_field, i, &mut seen, issues) {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some((!out.is_empty()).then_some(out))
}

fn access_restriction(
    field: &Field<'_>,
    index: usize,
    seen: &mut Vec<(String, usize)>,
    issues: &mut Issues,
) -> Option<AccessRestriction> {
    let obj = section(
        field,
        &["plugin", "permission", "permissionAttribute"],
        issues,
    )?;
    if field.value.is_none() {
        issues.push(&field.path, "expected a mapping with at least plugin");
        return None;
    }
    let plugin_field = obj.field("plugin");
    let plugin = plugin_field.req_str(issues).and_then(|p| {
        if !is_js_non_space(p) {
            issues.push(&plugin_field.path, "must be a plugin id: non-empty, no whitespace");
            return None;
        }
        if let Some((_, first)) = seen.iter().find(|(s, _)| s == p) {
            issues.push(
                &plugin_field.path,
                format!(
                    "this plugin already has restrictions in item [{first}]; each plugin may be listed once"
                ),
            );
            return None;
        }
        seen.push((p.to_owned(), index));
        Some(p.to_owned())
    });
    let split = |c: char| is_js_space(c) || c == ',';
    let permission_names = obj
        .field("permission")
        .opt_split_list(split, |_| None, issues)
        .map(|names| names.filter(|n| !n.is_empty()));
    let actions = match section(&obj.field("permissionAttribute"), &["action"], issues) {
        None => None,
        Some(attr) => attr
            .field("action")
            .opt_split_list(
                split,
                |a| {
                    (!ACTIONS.contains(&a))
                        .then_some("each action must be one of: create, read, update, delete")
                },
                issues,
            )
            .map(|a| a.filter(|a| !a.is_empty())),
    };
    Some(AccessRestriction {
        plugin: plugin?,
        permission_names: permission_names?,
        actions: actions?,
    })
}
