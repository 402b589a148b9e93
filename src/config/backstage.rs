//! Validation of the Backstage-facing keys: `backstage` (`pluginId`, `trustedPlugins`),
//! `backend.baseUrl`, `backend.auth.keys`, the `jwks` and `legacy` external-access handlers,
//! `discovery.endpoints`, target `userMapping` and `assertion`. Shapes follow Backstage's app-config exactly where Backstage
//! has the key (backstage-tokens.md §2.2, §3.4), so an admin can paste their block.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use super::error::Issues;
use super::model::*;
use super::walk::{Field, Obj, is_js_non_space, is_js_space, kind};

fn section<'v>(field: &Field<'v>, known: &[&str], issues: &mut Issues) -> Option<Obj<'v>> {
    Obj::new(field.value, field.path.clone(), Some(known), issues)
}

/// The longest plugin id the broker accepts. Backstage's pattern has no length limit, but a
/// plugin token's `sub` picks a URL to fetch before any signature is checked, so an id is
/// bounded before it reaches discovery (real plugin ids are a few words long).
pub const MAX_PLUGIN_ID_LEN: usize = 64;

/// Backstage's plugin id pattern (PluginTokenHandler.ts 28): `^[a-z0-9_-]+$`, case-insensitive,
/// and at most [`MAX_PLUGIN_ID_LEN`] characters.
pub(crate) fn is_plugin_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PLUGIN_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A `trustedPlugins` entry: a plugin id in which `*` stands for any run of characters.
fn is_plugin_pattern(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PLUGIN_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'*')
}

/// A required `^\S+$` string (Backstage's check for every handler option).
fn non_space<'v>(field: &Field<'v>, issues: &mut Issues) -> Option<&'v str> {
    let s = field.req_str(issues)?;
    if is_js_non_space(s) {
        Some(s)
    } else {
        issues.push(&field.path, "must be non-empty and contain no whitespace");
        None
    }
}

fn http_url(field: &Field<'_>, raw: &str, issues: &mut Issues) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        _ => {
            issues.push(&field.path, "must be an absolute http or https URL");
            None
        }
    }
}

/// `backstage`: `{pluginId, trustedPlugins}`.
pub(crate) fn backstage_section(
    field: &Field<'_>,
    issues: &mut Issues,
) -> Option<(String, Option<Vec<String>>)> {
    let obj = section(field, &["pluginId", "trustedPlugins"], issues)?;
    let f = obj.field("pluginId");
    let plugin_id = match f.opt_str(issues) {
        None => None,
        Some(None) => Some(super::BROKER_PLUGIN_ID.to_owned()),
        Some(Some(p)) if is_plugin_id(p) => Some(p.to_owned()),
        Some(Some(_)) => {
            issues.push(
                &f.path,
                "must be a Backstage plugin id: ^[a-z0-9_-]+$, at most 64 characters",
            );
            None
        }
    };
    let tf = obj.field("trustedPlugins");
    let trusted = tf
        .opt_str_list(
            |p| {
                (!is_plugin_pattern(p)).then_some(
                    "must be a plugin id or a pattern with * (letters, digits, _, -, *), \
                     at most 64 characters",
                )
            },
            issues,
        )
        .and_then(|list| match list {
            Some(l) if l.is_empty() => {
                // Like allowedCallers: an empty list would silently refuse every plugin token.
                issues.push(
                    &tf.path,
                    "must not be empty (omit it to try every plugin id Backstage admits)",
                );
                None
            }
            other => Some(other),
        });
    Some((plugin_id?, trusted?))
}

/// `backend.baseUrl`.
pub(crate) fn base_url(field: &Field<'_>, issues: &mut Issues) -> Option<Option<Url>> {
    match field.opt_str(issues)? {
        None => Some(None),
        Some(raw) => {
            let u = http_url(field, raw.trim_end_matches('/'), issues)?;
            Some(Some(u))
        }
    }
}

/// `discovery`: `{endpoints: [{target: string | {internal, external}, plugins: [...]}]}`.
pub(crate) fn discovery(field: &Field<'_>, issues: &mut Issues) -> Option<Vec<DiscoveryEndpoint>> {
    let obj = section(field, &["endpoints"], issues)?;
    let items = obj
        .field("endpoints")
        .opt_items(issues)?
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut ok = true;
    for f in &items {
        match endpoint(f, issues) {
            Some(e) => out.push(e),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn endpoint(field: &Field<'_>, issues: &mut Issues) -> Option<DiscoveryEndpoint> {
    let obj = section(field, &["target", "plugins"], issues)?;
    let tf = obj.field("target");
    let target = match tf.value {
        Some(Value::String(s)) => Some((tf.path.clone(), s.as_str())),
        Some(Value::Object(_)) => {
            let t = section(&tf, &["internal", "external"], issues)?;
            let internal = t.field("internal");
            internal.req_str(issues).map(|s| (internal.path.clone(), s))
        }
        None => {
            issues.push(&tf.path, "is required");
            None
        }
        Some(other) => {
            issues.push(
                &tf.path,
                format!("expected a string or a mapping, found {}", kind(other)),
            );
            None
        }
    };
    let target = target.and_then(|(path, t)| {
        // Check the template with a sample plugin id substituted.
        let sample = substitute(t, "catalog");
        let f = Field { value: None, path };
        if t.starts_with("http+srv://") {
            issues.push(
                &f.path,
                "http+srv:// discovery is not supported; use http or https",
            );
            return None;
        }
        http_url(&f, &sample, issues).map(|_| t.trim_end_matches('/').to_owned())
    });
    let pf = obj.field("plugins");
    let plugins = pf
        .opt_str_list(
            |p| (p != "*" && !is_plugin_id(p)).then_some("must be a plugin id or *"),
            issues,
        )
        .and_then(|p| match p {
            Some(p) if !p.is_empty() => Some(p),
            _ => {
                issues.push(&pf.path, "is required: a non-empty list of plugin ids or *");
                None
            }
        });
    Some(DiscoveryEndpoint {
        target: target?,
        plugins: plugins?,
    })
}

/// Backstage's `{{pluginId}}` / `{{ pluginId }}` substitution (HostDiscovery.ts).
pub fn substitute(template: &str, plugin_id: &str) -> String {
    template
        .replace("{{pluginId}}", plugin_id)
        .replace("{{ pluginId }}", plugin_id)
}

/// `backend.auth.keys`: `[{secret}]`, each a `legacy` handler with subject
/// `external:backstage-plugin`, appended after `externalAccess` (§3.4).
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

fn legacy_secret(field: &Field<'_>, issues: &mut Issues) -> Option<SecretString> {
    let s = non_space(field, issues)?;
    if lenient_base64url(s).is_empty() {
        issues.push(&field.path, "must be a base64 or base64url encoded key");
        return None;
    }
    Some(SecretString::from(s.to_owned()))
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
            // Parsed by Backstage but unused: only the entry-level key counts (§3.4).
            "accessRestrictions",
        ],
        issues,
    )?;
    let url_field = obj.field("url");
    let url = non_space(&url_field, issues).and_then(|u| http_url(&url_field, u, issues));
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

const TEMPLATE_VARS: &[&str] = &["ref", "kind", "namespace", "name"];

/// Checks that every `{...}` in a template is a known variable.
fn template_ok(t: &str) -> bool {
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let after = rest.get(start + 1..).unwrap_or("");
        let Some(end) = after.find('}') else {
            return false;
        };
        if !TEMPLATE_VARS.contains(&after.get(..end).unwrap_or("")) {
            return false;
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    !rest.contains('}') && !t.is_empty()
}

fn template(field: &Field<'_>, default: &str, issues: &mut Issues) -> Option<String> {
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

/// `userToken.matchClaim` and `userToken.matchValue`.
pub(crate) fn user_match(obj: &Obj<'_>, issues: &mut Issues) -> Option<(String, String)> {
    let cf = obj.field("matchClaim");
    let claim = match cf.opt_str(issues) {
        None => None,
        Some(None) => Some("preferred_username".to_owned()),
        Some(Some(c)) if !c.is_empty() && !c.chars().any(char::is_whitespace) => Some(c.to_owned()),
        Some(Some(_)) => {
            issues.push(&cf.path, "must be a claim name without whitespace");
            None
        }
    };
    let vf = obj.field("matchValue");
    let value = template(&vf, "{name}", issues).and_then(|v| {
        if match_template_is_unambiguous(&v) {
            Some(v)
        } else {
            issues.push(
                &vf.path,
                "must name the entity ({name} or {ref}) and separate any two placeholders by a character an entity ref part cannot contain (e.g. / : @), so one value names exactly one Backstage entity",
            );
            None
        }
    });
    Some((claim?, value?))
}

/// A character a Backstage entity-ref part (kind, namespace, name) may contain:
/// `[a-zA-Z0-9._-]` (Backstage's name, namespace and kind rules are all within it).
pub(crate) fn is_entity_part_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The `userToken.matchValue` rule (issue 9 §5): the template names the entity's name (`{name}`
/// or `{ref}`), and between two placeholders there is a character no entity-ref part can
/// contain. Then, with every part restricted to [`is_entity_part_char`], distinct entity refs
/// expand to distinct values: `{namespace}.{name}` would let `a.b`/`c` and `a`/`b.c` collide.
pub(crate) fn match_template_is_unambiguous(t: &str) -> bool {
    if !t.contains("{name}") && !t.contains("{ref}") {
        return false;
    }
    let mut rest = t;
    let mut after_placeholder = false;
    let mut separated = true;
    while let Some(start) = rest.find('{') {
        let literal = rest.get(..start).unwrap_or("");
        if literal.chars().any(|c| !is_entity_part_char(c)) {
            separated = true;
        }
        if after_placeholder && !separated {
            return false;
        }
        let Some(end) = rest.get(start..).and_then(|r| r.find('}')) else {
            return false;
        };
        rest = rest.get(start + end + 1..).unwrap_or("");
        after_placeholder = true;
        separated = false;
    }
    true
}

/// `targets.<name>.userMapping`: `jwt_authorization_grant`, `impersonation`, or
/// `{type, subject}`.
pub(crate) fn user_mapping(field: &Field<'_>, issues: &mut Issues) -> Option<Option<UserMapping>> {
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
                Some(k) => template(&obj.field("subject"), default_subject(k), issues),
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

/// Keycloak's default "Max allowed assertion expiration" (keycloak-token-exchange.md §6).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// `assertion`: `{issuer, keyFile?, lifetime?}`; `None` when absent.
pub(crate) fn assertion(field: &Field<'_>, issues: &mut Issues) -> Option<Option<AssertionConfig>> {
    if field.value.is_none() {
        return Some(None);
    }
    let obj = section(field, &["issuer", "keyFile", "lifetime"], issues)?;
    let issuer = non_space(&obj.field("issuer"), issues).map(str::to_owned);
    let kf = obj.field("keyFile");
    let key_file = kf.opt_str(issues).map(|k| k.map(std::path::PathBuf::from));
    let lf = obj.field("lifetime");
    let lifetime = lf
        .duration_or(Duration::from_secs(120), false, issues)
        .and_then(|d| {
            if d > MAX_ASSERTION_LIFETIME {
                issues.push(
                    &lf.path,
                    "must be at most 5m (Keycloak's default maximum assertion expiration)",
                );
                None
            } else {
                Some(d)
            }
        });
    Some(Some(AssertionConfig {
        issuer: issuer?,
        key_file: key_file?,
        lifetime: lifetime?,
    }))
}

/// Node's `Buffer.from(s, 'base64url')`: both alphabets, padding optional, invalid characters
/// skipped, decoding stops at `=` (backstage-tokens.md §3.4 legacy).
pub fn lenient_base64url(s: &str) -> Vec<u8> {
    let mut sextets: Vec<u8> = Vec::with_capacity(s.len());
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        sextets.push(v);
    }
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => 0,
        };
        out.extend_from_slice(bytes.get(1..1 + take).unwrap_or(&[]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_templates_must_name_one_entity() {
        for ok in [
            "{name}",
            "{ref}",
            "{name}@example.com",
            "{namespace}/{name}",
            "{kind}:{namespace}/{name}",
            "bs-{name}",
        ] {
            assert!(match_template_is_unambiguous(ok), "{ok}");
        }
        for bad in [
            "{namespace}",
            "fixed",
            "{namespace}{name}",
            "{namespace}.{name}",
            "{namespace}-x_{name}",
            "{ref}{name}",
        ] {
            assert!(!match_template_is_unambiguous(bad), "{bad}");
        }
    }

    #[test]
    fn lenient_base64_matches_node() {
        assert_eq!(lenient_base64url("c2VjcmV0"), b"secret");
        assert_eq!(lenient_base64url("c2VjcmV0LWtleQ"), b"secret-key");
        assert_eq!(lenient_base64url("c2VjcmV0LWtleQ=="), b"secret-key");
        assert_eq!(lenient_base64url("c2Vj cmV0"), b"secret");
        assert_eq!(lenient_base64url("-_-_"), lenient_base64url("+/+/"));
        assert!(lenient_base64url("***").is_empty());
    }

    #[test]
    fn templates() {
        assert!(template_ok("{name}"));
        assert!(template_ok("bs-{namespace}-{name}"));
        assert!(!template_ok("{nam}"));
        assert!(!template_ok("{name"));
        assert!(!template_ok("name}"));
        assert!(!template_ok(""));
    }

    #[test]
    fn substitution() {
        assert_eq!(
            substitute("http://x/{{pluginId}}/{{ pluginId }}", "a"),
            "http://x/a/a"
        );
    }
}
