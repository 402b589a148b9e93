//! Advice on a valid configuration: what is accepted but deserves an operator's attention — an
//! issuer that does not look like the profile's IdP, and every check a target relaxes. Nothing
//! is accepted silently: `check-config` prints each line and `serve` logs each as a warning at
//! start.

use super::model::{Config, IdpProfile, IssuedAudience, IssuedFormat};

/// The warnings of a valid configuration, one sentence each, in a stable order.
pub fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let kc = &c.keycloak;
    if kc.profile == IdpProfile::Keycloak && !is_keycloak_realm_issuer(kc.issuer.path()) {
        // No configured value is printed (substitution can put a secret into any key).
        out.push(
            "keycloak.issuer has no Keycloak realm path (/realms/NAME, no trailing /): Keycloak issues tokens with iss = https://HOST/realms/NAME; for another IdP set keycloak.profile: generic".to_owned(),
        );
    }
    for (name, t) in &c.targets {
        if t.issued_token_audience == IssuedAudience::MayBeAbsent {
            out.push(format!(
                "targets.{name}.issuedTokenAudience: may_be_absent relaxes a check: a token the IdP issues for '{name}' without aud is accepted (one with aud must still contain '{}', and a user's token must still carry the user's sub)",
                t.audience
            ));
        }
        if t.issued_token_format == IssuedFormat::Opaque {
            out.push(format!(
                "targets.{name}.issuedTokenFormat: opaque relaxes checks: tokens the IdP issues for '{name}' are not decoded, so their signature, aud and sub are not checked; their lifetime is the answer's expires_in"
            ));
        }
    }
    out
}

/// The relaxed checks of one target's issued tokens, for the tester's checklist.
pub fn relaxed_checks(t: &super::model::TargetConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if t.issued_token_audience == IssuedAudience::MayBeAbsent {
        out.push("aud may be absent (issuedTokenAudience: may_be_absent)");
    }
    if t.issued_token_format == IssuedFormat::Opaque {
        out.push(
            "the token is opaque: signature, aud and sub not checked (issuedTokenFormat: opaque)",
        );
    }
    out
}

/// Keycloak's issuer is `{base}/realms/{name}` (older versions: `{base}/auth/realms/{name}`),
/// without a trailing slash; `base` may carry a path of its own (`--http-relative-path`).
fn is_keycloak_realm_issuer(path: &str) -> bool {
    let mut segments = path.rsplit('/');
    let name = segments.next().unwrap_or("");
    let realms = segments.next().unwrap_or("");
    !name.is_empty() && realms == "realms"
}

#[cfg(test)]
mod tests {
    use super::is_keycloak_realm_issuer;

    #[test]
    fn keycloak_realm_paths() {
        for p in ["/realms/rhdh", "/auth/realms/x", "/kc/realms/dev"] {
            assert!(is_keycloak_realm_issuer(p), "{p}");
        }
        for p in [
            "/",
            "",
            "/realms/x/",
            "/realms/",
            "/application/o/app/",
            "/x",
        ] {
            assert!(!is_keycloak_realm_issuer(p), "{p}");
        }
    }
}
