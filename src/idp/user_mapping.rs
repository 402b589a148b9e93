//! The two grants that map a Backstage user to a Keycloak user without a Keycloak token:
//! - RFC 7523 JWT authorization grant (docs/reference/keycloak-token-exchange.md §6):
//!   `grant_type` jwt-bearer, `assertion`, optional `scope`, with the broker's client authentication;
//! - legacy token exchange V1 naked impersonation (§5): `requested_subject`, one `audience`,
//!   `requested_token_type` set explicitly (V1 defaults to a refresh token), no subject token.

use super::{IdpClient, IdpError, TokenResponse};
use crate::config::TokenType;
use crate::protocol::{GRANT_TYPE_JWT_BEARER, GRANT_TYPE_TOKEN_EXCHANGE};

pub fn jwt_bearer_form(assertion: &str, scopes: &[String]) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", GRANT_TYPE_JWT_BEARER.to_owned()),
        ("assertion", assertion.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    form
}

pub fn impersonation_form(
    requested_subject: &str,
    audience: &str,
    scopes: &[String],
    token_type: TokenType,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE.to_owned()),
        ("requested_subject", requested_subject.to_owned()),
        ("requested_token_type", token_type.urn().to_owned()),
        ("audience", audience.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    form
}

impl IdpClient {
    pub async fn jwt_bearer(
        &self,
        assertion: &str,
        scopes: &[String],
    ) -> Result<TokenResponse, IdpError> {
        self.post_token_form(jwt_bearer_form(assertion, scopes))
            .await
    }

    pub async fn impersonate(
        &self,
        requested_subject: &str,
        audience: &str,
        scopes: &[String],
        token_type: TokenType,
    ) -> Result<TokenResponse, IdpError> {
        self.post_token_form(impersonation_form(
            requested_subject,
            audience,
            scopes,
            token_type,
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let f = jwt_bearer_form("a.b.c", &[]);
        assert_eq!(f.len(), 2);
        let f = impersonation_form(
            "alice",
            "kagenti-api",
            &["x".into()],
            TokenType::AccessToken,
        );
        let keys: Vec<&str> = f.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "grant_type",
                "requested_subject",
                "requested_token_type",
                "audience",
                "scope"
            ]
        );
        assert!(!keys.contains(&"subject_token"));
    }
}
