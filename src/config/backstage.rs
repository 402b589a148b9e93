//! Backstage's own syntax rules the broker reproduces, shared by the configuration checks and
//! by `inbound` when it reads a Backstage credential: plugin ids, discovery URL templates, the
//! lenient base64 of `legacy` secrets, and the entity-ref templates of `userToken.matchValue` and
//! `userMapping.subject`. The Backstage-facing config keys themselves are checked in
//! `validate::backstage`; what Backstage does with them is in docs/reference/backstage-tokens.md.

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

/// Backstage's `{{pluginId}}` / `{{ pluginId }}` substitution (HostDiscovery.ts).
pub fn substitute(template: &str, plugin_id: &str) -> String {
    template
        .replace("{{pluginId}}", plugin_id)
        .replace("{{ pluginId }}", plugin_id)
}

/// Node's `Buffer.from(s, 'base64url')`: both alphabets, padding optional, invalid characters
/// skipped, decoding stops at `=` (docs/reference/backstage-tokens.md §3.4, legacy).
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

const TEMPLATE_VARS: &[&str] = &["ref", "kind", "namespace", "name"];

/// Checks that every `{...}` in a template is a known variable.
pub(crate) fn template_ok(t: &str) -> bool {
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
