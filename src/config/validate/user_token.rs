//! `userToken`: where the user's Keycloak token arrives, which Keycloak clients' tokens are
//! accepted, and how a token's claim is matched against the Backstage user.

use super::rules::{entity_template, is_tchar, section};
use crate::config::backstage::match_template_is_unambiguous;
use crate::config::error::Issues;
use crate::config::model::{IdpProfile, TokenTypeCheck, UserTokenConfig, UserTokenVerify};
use crate::config::walk::{Field, Obj};

pub(super) fn user_token(
    field: &Field<'_>,
    profile: IdpProfile,
    issues: &mut Issues,
) -> Option<UserTokenConfig> {
    let obj = section(
        field,
        &[
            "header",
            "matchClaim",
            "matchValue",
            "allowedClients",
            "allowWithoutCaller",
            "tokenTypeCheck",
            "verify",
        ],
        issues,
    )?;
    let matching = user_match(&obj, issues);
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
    let token_type_check = obj.field("tokenTypeCheck").enum_or(
        match profile {
            IdpProfile::Keycloak => TokenTypeCheck::KeycloakClaim,
            IdpProfile::Generic => TokenTypeCheck::Jwt,
        },
        &[
            ("keycloak", TokenTypeCheck::KeycloakClaim),
            ("at+jwt", TokenTypeCheck::AtJwt),
            ("jwt", TokenTypeCheck::Jwt),
        ],
        issues,
    );
    let verify = obj.field("verify").enum_or(
        UserTokenVerify::Jwks,
        &[
            ("jwks", UserTokenVerify::Jwks),
            ("introspection", UserTokenVerify::Introspection),
        ],
        issues,
    );
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
        token_type_check: token_type_check?,
        verify: verify?,
    })
}

/// `userToken.matchClaim` and `userToken.matchValue`.
fn user_match(obj: &Obj<'_>, issues: &mut Issues) -> Option<(String, String)> {
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
    let value = entity_template(&vf, "{name}", issues).and_then(|v| {
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
