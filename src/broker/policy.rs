//! Per-target authorisation of callers and resolution of what to request.
//!
//! - `allowedCallers`: glob patterns (`*` matches any run of characters) over the principal's
//!   name (or, for a user via a plugin, the acting `plugin:<id>`); absent = any authenticated
//!   caller.
//! - Backstage `accessRestrictions` (docs/reference/backstage-tokens.md §3.4): a restricted
//!   caller must have an entry for the broker's plugin id, else 403 with Backstage's own wording. Within that
//!   entry, `permission` names restrict targets (`token-broker.target.<name>`), and
//!   `permissionAttribute.action` restricts actions (a token request is a `read`).
//! - Scopes: the caller's `scope` (RFC 6749 §3.3) may only name scopes the target lists in
//!   `scopes` or `allowedScopes`; without one, the target's `scopes` are requested.
//! - `requested_token_type`: only the target's configured type may be requested.

use super::principal::Principal;
use crate::config::{TargetConfig, TokenType};

/// The broker's plugin id in Backstage terms (docs/dev-contract.md).
pub const PLUGIN_ID: &str = "token-broker";

/// The permission name that lets a restricted caller obtain tokens for `target`.
pub fn target_permission(target: &str) -> String {
    format!("{PLUGIN_ID}.target.{target}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    UnsupportedTokenType(String),
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return part.is_empty() || rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = rest.get(pos + part.len()..).unwrap_or("");
        } else {
            return false;
        }
    }
    true
}

/// May `principal` obtain tokens for `target`?
pub fn check_caller(
    target_name: &str,
    target: &TargetConfig,
    principal: &Principal,
    plugin_id: &str,
) -> Result<(), PolicyError> {
    if let Some(restrictions) = &principal.restrictions {
        let Some(mine) = restrictions.iter().find(|r| r.plugin == plugin_id) else {
            let plugins: Vec<String> = restrictions
                .iter()
                .map(|r| format!("'{}'", r.plugin))
                .collect();
            return Err(PolicyError::Forbidden(format!(
                "This token's access is restricted to plugin(s) {}",
                plugins.join(", ")
            )));
        };
        if let Some(names) = &mine.permission_names {
            let needed = format!("{plugin_id}.target.{target_name}");
            if !names.iter().any(|n| n == &needed) {
                return Err(PolicyError::Forbidden(format!(
                    "the caller's access restrictions do not include permission '{needed}'"
                )));
            }
        }
        if let Some(actions) = &mine.actions
            && !actions.iter().any(|a| a == "read")
        {
            return Err(PolicyError::Forbidden(
                "the caller's access restrictions do not allow action 'read'".into(),
            ));
        }
    }
    // A user via a plugin is allowed when the user or the acting plugin is listed.
    if let Some(allowed) = &target.allowed_callers
        && !allowed.iter().any(|p| {
            glob_match(p, &principal.name)
                || principal.actor.as_deref().is_some_and(|a| glob_match(p, a))
        })
    {
        return Err(PolicyError::Forbidden(format!(
            "caller '{}' may not obtain tokens for target '{target_name}'",
            principal.name
        )));
    }
    Ok(())
}

/// The scopes to request: the caller's, if it named any and all are allowed, else the
/// target's defaults. Returned sorted and de-duplicated, so equal requests share a cache key.
pub fn resolve_scopes(
    target_name: &str,
    target: &TargetConfig,
    requested: Option<&str>,
) -> Result<Vec<String>, PolicyError> {
    let mut scopes: Vec<String> = match requested.map(str::trim) {
        None | Some("") => target.scopes.clone(),
        Some(s) => {
            let mut out = Vec::new();
            for sc in s.split(' ').filter(|x| !x.is_empty()) {
                if !target.scopes.iter().any(|t| t == sc)
                    && !target.allowed_scopes.iter().any(|t| t == sc)
                {
                    return Err(PolicyError::InvalidScope(format!(
                        "scope '{}' is not allowed for target '{target_name}'",
                        sc.chars().take(64).collect::<String>()
                    )));
                }
                out.push(sc.to_owned());
            }
            out
        }
    };
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// The token type to request.
pub fn resolve_token_type(
    target_name: &str,
    target: &TargetConfig,
    requested: Option<&str>,
) -> Result<TokenType, PolicyError> {
    match requested {
        None | Some("") => Ok(target.requested_token_type),
        Some(urn) => match TokenType::from_urn(urn) {
            Some(t) if t == target.requested_token_type => Ok(t),
            _ => Err(PolicyError::UnsupportedTokenType(format!(
                "target '{target_name}' issues only {}",
                target.requested_token_type.urn()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::principal::PrincipalKind;
    use crate::config::{AccessRestriction, FallbackPolicy};

    fn target() -> TargetConfig {
        TargetConfig {
            audience: "kagenti-api".into(),
            scopes: vec!["b".into(), "a".into()],
            allowed_scopes: vec!["c".into()],
            requested_token_type: TokenType::AccessToken,
            fallback: FallbackPolicy::Deny,
            service_principals: FallbackPolicy::Deny,
            allowed_callers: None,
            upstream: None,
            user_mapping: None,
            issued_token_audience: Default::default(),
            issued_token_format: Default::default(),
        }
    }

    fn principal(name: &str, restrictions: Option<Vec<AccessRestriction>>) -> Principal {
        Principal::service(name, restrictions)
    }

    fn check_caller(n: &str, t: &TargetConfig, p: &Principal) -> Result<(), PolicyError> {
        super::check_caller(n, t, p, PLUGIN_ID)
    }

    #[test]
    fn allow_list_matches_the_acting_plugin() {
        let mut t = target();
        t.allowed_callers = Some(vec!["plugin:augment".into()]);
        let mut p = principal("user:default/alice", None);
        p.kind = PrincipalKind::User;
        assert!(check_caller("kagenti", &t, &p).is_err());
        p.actor = Some("plugin:augment".into());
        assert!(check_caller("kagenti", &t, &p).is_ok());
        p.actor = Some("plugin:catalog".into());
        assert!(check_caller("kagenti", &t, &p).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("plugin:*", "plugin:augment"));
        assert!(!glob_match("plugin:*", "user:default/alice"));
        assert!(glob_match("user:*/alice", "user:default/alice"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn allow_list() {
        let mut t = target();
        t.allowed_callers = Some(vec!["plugin:augment".into(), "ci-*".into()]);
        assert!(check_caller("kagenti", &t, &principal("plugin:augment", None)).is_ok());
        assert!(check_caller("kagenti", &t, &principal("ci-nightly", None)).is_ok());
        assert!(check_caller("kagenti", &t, &principal("plugin:catalog", None)).is_err());
    }

    #[test]
    fn restrictions() {
        let t = target();
        let other = vec![AccessRestriction {
            plugin: "catalog".into(),
            permission_names: None,
            actions: None,
        }];
        let e = check_caller("kagenti", &t, &principal("ci", Some(other))).unwrap_err();
        assert_eq!(
            e,
            PolicyError::Forbidden(
                "This token's access is restricted to plugin(s) 'catalog'".into()
            )
        );
        let open = vec![AccessRestriction {
            plugin: PLUGIN_ID.into(),
            permission_names: None,
            actions: None,
        }];
        assert!(check_caller("kagenti", &t, &principal("ci", Some(open))).is_ok());
        let named = vec![AccessRestriction {
            plugin: PLUGIN_ID.into(),
            permission_names: Some(vec!["token-broker.target.sonataflow".into()]),
            actions: None,
        }];
        assert!(check_caller("sonataflow", &t, &principal("ci", Some(named.clone()))).is_ok());
        assert!(check_caller("kagenti", &t, &principal("ci", Some(named))).is_err());
        let write_only = vec![AccessRestriction {
            plugin: PLUGIN_ID.into(),
            permission_names: None,
            actions: Some(vec!["update".into()]),
        }];
        assert!(check_caller("kagenti", &t, &principal("ci", Some(write_only))).is_err());
    }

    #[test]
    fn scopes() {
        let t = target();
        assert_eq!(resolve_scopes("k", &t, None).unwrap(), ["a", "b"]);
        assert_eq!(resolve_scopes("k", &t, Some("c a c")).unwrap(), ["a", "c"]);
        assert!(resolve_scopes("k", &t, Some("admin")).is_err());
    }

    #[test]
    fn token_types() {
        let t = target();
        assert_eq!(
            resolve_token_type("k", &t, None).unwrap(),
            TokenType::AccessToken
        );
        assert!(resolve_token_type("k", &t, Some(TokenType::ID_TOKEN_URN)).is_err());
        assert!(resolve_token_type("k", &t, Some("urn:x")).is_err());
    }
}
