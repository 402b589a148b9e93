//! Backstage entity refs as the broker's user rules read them: the `{ref}`, `{kind}`,
//! `{namespace}`, `{name}` template expansion (a target's `userMapping.subject`) and the
//! same-person rule between a Backstage user and a Keycloak token (`userToken.matchClaim` /
//! `matchValue`). `inbound` applies the rule to the caller's two credentials; the broker applies
//! it to the token a user mapping obtained.

use crate::config::UserTokenConfig;
use crate::config::backstage::is_entity_part_char;

/// The parts of a Backstage entity ref `[kind:][namespace/]name` (defaults `user`, `default`).
fn entity_ref_parts(entity_ref: &str) -> (&str, &str, &str) {
    let (kind, rest) = match entity_ref.split_once(':') {
        Some((k, r)) => (k, r),
        None => ("user", entity_ref),
    };
    let (namespace, name) = match rest.split_once('/') {
        Some((n, m)) => (n, m),
        None => ("default", rest),
    };
    (kind, namespace, name)
}

/// Expands `{ref}`, `{kind}`, `{namespace}`, `{name}` over a Backstage entity ref
/// (`[kind:][namespace/]name`, defaults `user` and `default`).
pub fn expand_template(template: &str, entity_ref: &str) -> String {
    let (kind, namespace, name) = entity_ref_parts(entity_ref);
    template
        .replace("{ref}", entity_ref)
        .replace("{kind}", kind)
        .replace("{namespace}", namespace)
        .replace("{name}", name)
}

/// The value `userToken.matchClaim` must have for a Keycloak token to be `entity_ref`'s, or
/// `None` when no token can be (issue 9 §5: the whole ref is compared, not only the name):
/// - every part must be made of Backstage's entity characters (`[a-zA-Z0-9._-]`), so a part
///   cannot smuggle a separator of the template;
/// - a part the template does not name must have its default: kind `user` (a group or any
///   other kind is never a person) and namespace `default`. `{ref}` names every part.
///
/// With the template rule enforced at load time (placeholders separated by a non-entity
/// character, `config::backstage::match_template_is_unambiguous`), two different entity refs
/// never give the same value: `user:evil-ns/bob` and `group:default/bob` do not match bob.
pub fn match_value_for(template: &str, entity_ref: &str) -> Option<String> {
    let (kind, namespace, name) = entity_ref_parts(entity_ref);
    let valid = |p: &str| !p.is_empty() && p.chars().all(is_entity_part_char);
    if !(valid(kind) && valid(namespace) && valid(name)) {
        return None;
    }
    let all = template.contains("{ref}");
    if !all && !template.contains("{kind}") && kind != "user" {
        return None;
    }
    if !all && !template.contains("{namespace}") && namespace != "default" {
        return None;
    }
    if !all && !template.contains("{name}") {
        return None;
    }
    let full = format!("{kind}:{namespace}/{name}");
    Some(
        template
            .replace("{ref}", &full)
            .replace("{kind}", kind)
            .replace("{namespace}", namespace)
            .replace("{name}", name),
    )
}

/// Whether a Keycloak token whose `userToken.matchClaim` is `claim_value` belongs to the
/// Backstage entity `entity_ref` (see [`match_value_for`]).
pub fn is_same_person(
    config: &UserTokenConfig,
    entity_ref: &str,
    claim_value: Option<&str>,
) -> bool {
    match (
        match_value_for(&config.match_value, entity_ref),
        claim_value,
    ) {
        (Some(expected), Some(actual)) => expected == actual,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_over_entity_refs() {
        assert_eq!(expand_template("{name}", "user:default/alice"), "alice");
        assert_eq!(
            expand_template("{kind}|{namespace}|{name}|{ref}", "user:team-a/bob"),
            "user|team-a|bob|user:team-a/bob"
        );
        assert_eq!(
            expand_template("{namespace}/{name}", "carol"),
            "default/carol"
        );
    }

    #[test]
    fn the_match_value_binds_the_whole_entity_ref() {
        // Default template {name}: only user:default/<name> can be <name>.
        assert_eq!(
            match_value_for("{name}", "user:default/bob").as_deref(),
            Some("bob")
        );
        for other in [
            "user:evil-ns/bob",
            "group:default/bob",
            "User:default/bob",
            "user:default/bob/x",
            "user:default/bo b",
            "user:default/",
            "user:default/bob@x",
        ] {
            assert_eq!(match_value_for("{name}", other), None, "{other}");
        }
        // A template that names the namespace binds it instead of requiring the default.
        assert_eq!(
            match_value_for("{namespace}/{name}", "user:team-a/bob").as_deref(),
            Some("team-a/bob")
        );
        assert_eq!(
            match_value_for("{namespace}/{name}", "group:team-a/bob"),
            None
        );
        // {ref} names every part, in its full form.
        assert_eq!(
            match_value_for("{ref}", "group:default/bob").as_deref(),
            Some("group:default/bob")
        );
        assert_eq!(
            match_value_for("{ref}", "bob").as_deref(),
            Some("user:default/bob")
        );
        assert_eq!(
            match_value_for("{name}@example.com", "user:default/bob").as_deref(),
            Some("bob@example.com")
        );
    }
}
