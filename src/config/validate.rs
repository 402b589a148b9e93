//! Conversion of the substituted tree into the typed [`Config`], checking every key.
//!
//! Each section is validated even when an earlier one failed, so a single run lists every
//! problem. Defaults live here and are documented on the fields of `model.rs` and in
//! `docs/configuration.md`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use super::error::{Issues, KeyPath};
use super::model::*;
use super::walk::{Field, Obj, is_js_non_space, is_js_space, kind};

/// The Backstage plugin id of the broker itself: `accessRestrictions` entries for this plugin
/// decide which targets a restricted static caller may use (see docs/configuration.md).
pub const BROKER_PLUGIN_ID: &str = "token-broker";

const TOP_KEYS: &[&str] = &[
    "server",
    "admin",
    "keycloak",
    "userToken",
    "backend",
    "cache",
    "targets",
    "logging",
    "proxy",
    "backstage",
    "discovery",
    "assertion",
];

pub(crate) fn validate(root: &Value, issues: &mut Issues) -> Option<Config> {
    let top = Obj::new(Some(root), KeyPath::root(), Some(TOP_KEYS), issues)?;
    let server = server(&top.field("server"), issues);
    let admin = admin(
        &top.field("admin"),
        server.as_ref().map(|s| s.listen),
        issues,
    );
    let keycloak = keycloak(&top.field("keycloak"), issues);
    let user_token = user_token(&top.field("userToken"), issues);
    let backend = backend(&top.field("backend"), issues);
    let backstage = super::backstage::backstage_section(&top.field("backstage"), issues);
    let endpoints = super::backstage::discovery(&top.field("discovery"), issues);
    let assertion_field = top.field("assertion");
    let assertion = super::backstage::assertion(&assertion_field, issues);
    let cache = cache(&top.field("cache"), issues);
    let targets = targets(&top.field("targets"), issues);
    let logging = logging(&top.field("logging"), issues);
    let proxy = proxy(&top.field("proxy"), issues);
    if let (Some(t), Some(None)) = (&targets, &assertion)
        && let Some((name, _)) = t.iter().find(|(_, t)| {
            t.user_mapping
                .as_ref()
                .is_some_and(|m| m.kind == UserMappingKind::JwtAuthorizationGrant)
        })
    {
        issues.push(
            &assertion_field.path,
            format!("is required: target '{name}' uses userMapping jwt_authorization_grant"),
        );
        return None;
    }
    if let (Some(kc), Some(ut)) = (&keycloak, &user_token)
        && ut.allowed_clients.iter().any(|c| c == &kc.client_id)
    {
        // Every token the broker obtains has azp = its own client: listing it would let those
        // tokens back in as users' tokens (issue 9 §1).
        issues.push(
            top.field("userToken").path.key("allowedClients"),
            "must not list keycloak.clientId: tokens issued to the broker itself are never accepted as a user's token",
        );
        return None;
    }
    let (base_url, external_access) = backend?;
    Some(Config {
        server: server?,
        admin: admin?,
        keycloak: keycloak?,
        user_token: user_token?,
        external_access,
        backstage: {
            let (plugin_id, trusted_plugins) = backstage?;
            BackstageConfig {
                plugin_id,
                base_url,
                endpoints: endpoints?,
                trusted_plugins,
            }
        },
        assertion: assertion?,
        cache: cache?,
        targets: targets?,
        logging: logging?,
        proxy: proxy?,
    })
}

fn section<'v>(field: &Field<'v>, known: &[&str], issues: &mut Issues) -> Option<Obj<'v>> {
    Obj::new(field.value, field.path.clone(), Some(known), issues)
}

fn server(field: &Field<'_>, issues: &mut Issues) -> Option<ServerConfig> {
    let obj = section(
        field,
        &[
            "listen",
            "workers",
            "maxBodyBytes",
            "maxHeaderBytes",
            "drainDelay",
            "shutdownTimeout",
            "bodyReadTimeout",
            "clientDisconnectTimeout",
            "maxConnections",
        ],
        issues,
    )?;
    let max_header = obj.field("maxHeaderBytes");
    let max_header_bytes = to_usize(&max_header, max_header.opt_uint(1024, issues), issues);
    let drain_delay = obj
        .field("drainDelay")
        .duration_or(Duration::ZERO, true, issues);
    let shutdown_timeout =
        obj.field("shutdownTimeout")
            .duration_or(Duration::from_secs(30), true, issues);
    let default_listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7070));
    let listen = obj.field("listen").socket_or(default_listen, issues);
    let workers_field = obj.field("workers");
    let workers = to_usize(&workers_field, workers_field.opt_uint(1, issues), issues);
    let max_body = obj.field("maxBodyBytes");
    let max_body_bytes = to_usize(&max_body, max_body.opt_uint(1, issues), issues);
    let body_read_timeout =
        obj.field("bodyReadTimeout")
            .duration_or(Duration::from_secs(10), false, issues);
    let client_disconnect_timeout =
        obj.field("clientDisconnectTimeout")
            .duration_or(Duration::from_secs(1), true, issues);
    let max_conn = obj.field("maxConnections");
    let max_connections = to_usize(&max_conn, max_conn.opt_uint(1, issues), issues);
    Some(ServerConfig {
        listen: listen?,
        workers: workers?,
        max_body_bytes: max_body_bytes?.unwrap_or(65_536),
        max_header_bytes: max_header_bytes?.unwrap_or(64 * 1024),
        drain_delay: drain_delay?,
        shutdown_timeout: shutdown_timeout?,
        body_read_timeout: body_read_timeout?,
        client_disconnect_timeout: client_disconnect_timeout?,
        max_connections: max_connections?.unwrap_or(1024),
    })
}

fn to_usize(
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

fn admin(
    field: &Field<'_>,
    server_listen: Option<SocketAddr>,
    issues: &mut Issues,
) -> Option<AdminConfig> {
    let obj = section(field, &["enabled", "listen", "token"], issues)?;
    let enabled = obj.field("enabled").bool_or(true, issues);
    let listen_field = obj.field("listen");
    let listen = listen_field.socket_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 7071)), issues);
    // Port 0 asks the OS for a free port, so two port-0 listeners never collide.
    if enabled == Some(true)
        && listen.is_some()
        && listen == server_listen
        && listen.is_some_and(|a| a.port() != 0)
    {
        issues.push(&listen_field.path, "must differ from server.listen");
    }
    let token_field = obj.field("token");
    let token = match token_field.opt_str(issues) {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => {
            // The admin credential is sent as `Authorization: Bearer <token>`, so it must be an
            // RFC 6750 §2.1 b64token; 8 characters is Backstage's floor for static tokens.
            if !is_b64token(t) {
                issues.push(
                    &token_field.path,
                    "must be an RFC 6750 §2.1 bearer token: letters, digits and -._~+/ optionally followed by =",
                );
                None
            } else if t.len() < 8 {
                issues.push(&token_field.path, "must be at least 8 characters");
                None
            } else {
                Some(Some(SecretString::from(t.to_owned())))
            }
        }
    };
    Some(AdminConfig {
        listen: if enabled? { Some(listen?) } else { None },
        token: token?,
    })
}

fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn keycloak(field: &Field<'_>, issues: &mut Issues) -> Option<KeycloakConfig> {
    let obj = section(
        field,
        &[
            "issuer",
            "clientId",
            "clientSecret",
            "clientAuthMethod",
            "connectTimeout",
            "timeout",
            "jwksMinRefreshInterval",
            "maxConcurrentRequests",
            "retries",
        ],
        issues,
    )?;
    let issuer = issuer(&obj.field("issuer"), issues);
    let client_id = vschar_string(&obj.field("clientId"), "A.1", issues).map(str::to_owned);
    let client_secret = vschar_string(&obj.field("clientSecret"), "A.2", issues)
        .map(|s| SecretString::from(s.to_owned()));
    let client_auth_method = obj.field("clientAuthMethod").enum_or(
        ClientAuthMethod::ClientSecretBasic,
        &[
            ("client_secret_basic", ClientAuthMethod::ClientSecretBasic),
            ("client_secret_post", ClientAuthMethod::ClientSecretPost),
        ],
        issues,
    );
    let connect_timeout =
        obj.field("connectTimeout")
            .duration_or(Duration::from_secs(2), false, issues);
    let timeout = obj
        .field("timeout")
        .duration_or(Duration::from_secs(10), false, issues);
    // Zero would let every token with an unknown `kid` trigger a JWKS fetch.
    let jwks_min_refresh_interval =
        obj.field("jwksMinRefreshInterval")
            .duration_or(Duration::from_secs(10), false, issues);
    // At least one request must be able to reach Keycloak; beyond the bound, misses fail fast.
    let max_concurrent_requests = obj.field("maxConcurrentRequests").uint_or(64, 1, issues);
    // Retries of connection failures only; more than a few would pile requests up in an outage.
    let retries = obj.field("retries").uint_or(2, 0, issues);
    if let Some(r) = retries
        && r > 5
    {
        issues.push(&obj.field("retries").path, "must be at most 5");
    }
    Some(KeycloakConfig {
        max_concurrent_requests: usize::try_from(max_concurrent_requests?).unwrap_or(usize::MAX),
        retries: u32::try_from(retries?.min(5)).unwrap_or(5),
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth_method: client_auth_method?,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        jwks_min_refresh_interval: jwks_min_refresh_interval?,
    })
}

/// Required, non-empty string of RFC 6749 Appendix A VSCHARs (%x20-7E), the syntax of
/// `client_id` (A.1) and `client_secret` (A.2).
fn vschar_string<'v>(field: &Field<'v>, section: &str, issues: &mut Issues) -> Option<&'v str> {
    let s = field.req_str(issues)?;
    if s.is_empty() {
        issues.push(&field.path, "must not be empty");
        None
    } else if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        issues.push(
            &field.path,
            format!("must be printable ASCII (RFC 6749 Appendix {section})"),
        );
        None
    } else {
        Some(s)
    }
}

/// The issuer must compare equal, character for character, to the discovery document's
/// `issuer` (OpenID Connect Discovery 1.0 §4.3) and to the `iss` of tokens, so it is required
/// in the exact form `Url` serialises it to.
fn issuer(field: &Field<'_>, issues: &mut Issues) -> Option<Url> {
    let raw = field.req_str(issues)?;
    let path = &field.path;
    // OIDC Discovery §3: the issuer has no query or fragment component.
    let url = http_base_url(
        field,
        raw,
        "https://keycloak.example.com/realms/NAME",
        issues,
    )?;
    let problem = if raw.ends_with('/') {
        Some("must not end with / (the issuer is compared exactly with the token's iss)")
    } else if url.path() == "/" {
        Some("must include the realm path, e.g. https://keycloak.example.com/realms/NAME")
    } else if url.as_str() != raw {
        Some(
            "must be in normalised form (lowercase scheme and host, no default port, percent-encoded path), because it is compared exactly with the token's iss",
        )
    } else {
        None
    };
    match problem {
        Some(msg) => {
            issues.push(path, msg);
            None
        }
        None => Some(url),
    }
}

fn user_token(field: &Field<'_>, issues: &mut Issues) -> Option<UserTokenConfig> {
    let obj = section(
        field,
        &[
            "header",
            "matchClaim",
            "matchValue",
            "allowedClients",
            "allowWithoutCaller",
        ],
        issues,
    )?;
    let matching = super::backstage::user_match(&obj, issues);
    let header_field = obj.field("header");
    let header = match header_field.opt_str(issues)? {
        None => "X-Forwarded-Access-Token".to_owned(),
        Some(h) => {
            if h.is_empty() || !h.bytes().all(is_tchar) {
                issues.push(
                    &header_field.path,
                    "must be an HTTP header name (RFC 9110 §5.1: letters, digits and !#$%&'*+-.^_`|~)",
                );
                return None;
            }
            if h.eq_ignore_ascii_case("authorization") {
                issues.push(
                    &header_field.path,
                    "must not be Authorization: that header carries the caller's own credential",
                );
                return None;
            }
            h.to_owned()
        }
    };
    let clients_field = obj.field("allowedClients");
    let allowed_clients = clients_field.opt_str_list(
        |c| {
            (c.is_empty() || c.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
                .then_some("must be a Keycloak client id (non-empty, no whitespace)")
        },
        issues,
    );
    let alone_field = obj.field("allowWithoutCaller");
    let allow_without_caller = alone_field.bool_or(false, issues);
    let (match_claim, match_value) = matching?;
    let allowed_clients = allowed_clients?.unwrap_or_default();
    let allow_without_caller = allow_without_caller?;
    if allow_without_caller && allowed_clients.is_empty() {
        // A user token alone is then the whole credential: say whose tokens it may be.
        issues.push(
            &clients_field.path,
            "is required when userToken.allowWithoutCaller is true: list the Keycloak clients (azp) whose users may call with their token alone",
        );
        return None;
    }
    Some(UserTokenConfig {
        header,
        match_claim,
        match_value,
        allowed_clients,
        allow_without_caller,
    })
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

type BackendParts = (Option<Url>, Vec<ExternalAccessEntry>);

fn backend(field: &Field<'_>, issues: &mut Issues) -> Option<BackendParts> {
    let backend = section(field, &["auth", "baseUrl"], issues)?;
    let base_url = super::backstage::base_url(&backend.field("baseUrl"), issues);
    let auth = section(&backend.field("auth"), &["externalAccess", "keys"], issues)?;
    let keys = super::backstage::auth_keys(&auth.field("keys"), issues);
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
    let base_url = base_url?;
    ok.then_some((base_url, out))
}

/// Parser of one handler type's `options`; `None` in [`HANDLERS`] would mark a type Backstage
/// has that the broker does not implement.
type HandlerParser = fn(&Field<'_>, &mut Issues) -> Option<ExternalAccessKind>;

/// Backstage's built-in `externalAccess` types (ExternalAuthTokenHandler.ts).
const HANDLERS: &[(&str, Option<HandlerParser>)] = &[
    ("static", Some(static_handler)),
    ("jwks", Some(super::backstage::jwks_handler)),
    ("legacy", Some(super::backstage::legacy_handler)),
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
    let token = token_field.req_str(issues).and_then(|t| {
        if !is_js_non_space(t) {
            issues.push(
                &token_field.path,
                "must be non-empty and contain no whitespace",
            );
            None
        } else if t.encode_utf16().count() < 8 {
            // JavaScript string length counts UTF-16 code units; match Backstage exactly.
            issues.push(&token_field.path, "must be at least 8 characters");
            None
        } else {
            Some(SecretString::from(t.to_owned()))
        }
    });
    let subject_field = obj.field("subject");
    let subject = subject_field.req_str(issues).and_then(|s| {
        if is_js_non_space(s) {
            Some(s.to_owned())
        } else {
            issues.push(
                &subject_field.path,
                "must be non-empty and contain no whitespace",
            );
            None
        }
    });
    Some(ExternalAccessKind::Static {
        token: token?,
        subject: subject?,
    })
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

fn cache(field: &Field<'_>, issues: &mut Issues) -> Option<CacheConfig> {
    let obj = section(
        field,
        &["maxEntries", "safetyMargin", "negativeTtl"],
        issues,
    )?;
    let max_entries = obj.field("maxEntries").uint_or(10_000, 1, issues);
    let safety_margin =
        obj.field("safetyMargin")
            .duration_or(Duration::from_secs(30), true, issues);
    // Zero turns the negative cache off.
    let negative_ttl = obj
        .field("negativeTtl")
        .duration_or(Duration::from_secs(5), true, issues);
    Some(CacheConfig {
        negative_ttl: negative_ttl?,
        max_entries: max_entries?,
        safety_margin: safety_margin?,
    })
}

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
];

fn targets(field: &Field<'_>, issues: &mut Issues) -> Option<BTreeMap<String, TargetConfig>> {
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
    let user_mapping = super::backstage::user_mapping(&obj.field("userMapping"), issues);
    Some(TargetConfig {
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

fn logging(field: &Field<'_>, issues: &mut Issues) -> Option<LoggingConfig> {
    let obj = section(field, &["format", "level"], issues)?;
    let format = obj.field("format").enum_or(
        LogFormat::Plain,
        &[("plain", LogFormat::Plain), ("json", LogFormat::Json)],
        issues,
    );
    let level_field = obj.field("level");
    let level = level_field.opt_str(issues).and_then(|l| match l {
        None => Some("info".to_owned()),
        Some(l) if !l.trim().is_empty() && !l.chars().any(char::is_control) => Some(l.to_owned()),
        Some(_) => {
            issues.push(
                &level_field.path,
                "must be a tracing filter directive, e.g. info or token_broker=debug,info",
            );
            None
        }
    });
    Some(LoggingConfig {
        format: format?,
        level: level?,
    })
}

/// `proxy`: the limits of proxy mode.
fn proxy(field: &Field<'_>, issues: &mut Issues) -> Option<ProxyConfig> {
    let obj = section(
        field,
        &[
            "maxHeaderBytes",
            "connectTimeout",
            "idleTimeout",
            "replayBufferBytes",
            "minStreamTokenLifetime",
            "maxRetries",
        ],
        issues,
    )?;
    let d = ProxyConfig::default();
    let header_field = obj.field("maxHeaderBytes");
    // Below 1 KiB not even an ordinary request's headers fit.
    let max_header_bytes = to_usize(&header_field, header_field.opt_uint(1024, issues), issues);
    let connect_timeout = obj
        .field("connectTimeout")
        .duration_or(d.connect_timeout, false, issues);
    let idle_timeout = obj
        .field("idleTimeout")
        .duration_or(d.idle_timeout, false, issues);
    let replay_field = obj.field("replayBufferBytes");
    // 0 turns replaying (and so the 401 retry) off.
    let replay_buffer_bytes = to_usize(&replay_field, replay_field.opt_uint(0, issues), issues);
    let min_stream_token_lifetime =
        obj.field("minStreamTokenLifetime")
            .duration_or(d.min_stream_token_lifetime, true, issues);
    let retries_field = obj.field("maxRetries");
    let max_retries = match retries_field.opt_uint(0, issues) {
        None => None,
        Some(None) => Some(d.max_retries),
        Some(Some(n)) if n <= 10 => u32::try_from(n).ok(),
        Some(Some(_)) => {
            issues.push(&retries_field.path, "must be at most 10");
            None
        }
    };
    Some(ProxyConfig {
        max_header_bytes: max_header_bytes?.unwrap_or(d.max_header_bytes),
        connect_timeout: connect_timeout?,
        idle_timeout: idle_timeout?,
        replay_buffer_bytes: replay_buffer_bytes?.unwrap_or(d.replay_buffer_bytes),
        min_stream_token_lifetime: min_stream_token_lifetime?,
        max_retries: max_retries?,
    })
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
/// client-IP and URL-override headers, see `proxy::headers`) are refused here; at run time they
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
                && crate::proxy::headers::never_forwarded(&h.to_ascii_lowercase())
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

/// An absolute http(s) URL with a host and no user info, query or fragment: the common rules
/// of the issuer and upstream base URLs. `example` shows the expected form in the error.
fn http_base_url(field: &Field<'_>, raw: &str, example: &str, issues: &mut Issues) -> Option<Url> {
    let Ok(url) = Url::parse(raw) else {
        issues.push(
            &field.path,
            format!("must be an absolute http or https URL, e.g. {example}"),
        );
        return None;
    };
    let problem = if !matches!(url.scheme(), "http" | "https") {
        Some("must use the http or https scheme")
    } else if url.host().is_none() {
        Some("must have a host")
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("must not contain a user name or password")
    } else if url.query().is_some() || url.fragment().is_some() {
        Some("must not have a query (?) or fragment (#)")
    } else {
        None
    };
    match problem {
        Some(msg) => {
            issues.push(&field.path, msg);
            None
        }
        None => Some(url),
    }
}

/// An upstream base URL: absolute http(s), a host, no user info, query or fragment. Its path
/// is stored ending in `/` so request paths append below it.
fn upstream_url(field: &Field<'_>, raw: &str, issues: &mut Issues) -> Option<Url> {
    let mut url = http_base_url(field, raw, "https://kagenti.example.com/api", issues)?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}
