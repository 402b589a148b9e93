//! RFC 8693 token exchange at Keycloak (standard token exchange V2, Keycloak 26.2+).
//!
//! The request carries exactly the fields Keycloak's V2 documents
//! (docs/reference/keycloak-token-exchange.md
//! §3.2): `grant_type`, `subject_token`, `subject_token_type` (always the access-token URN: V2
//! accepts nothing else), `requested_token_type`, one `audience`, and `scope` only when scopes
//! are requested. V1-only fields (`requested_subject`, `requested_issuer`, `subject_issuer`)
//! are never sent: V2 rejects them. Client credentials travel per the configured method, so
//! with `client_secret_basic` neither `client_id` nor `client_secret` is in the form.

use crate::config::TokenType;

use super::{IdpClient, IdpError, TokenResponse};
use crate::protocol::GRANT_TYPE_TOKEN_EXCHANGE;

/// One exchange.
pub struct ExchangeRequest<'a> {
    /// The user's token: borrowed from the request (never copied but into the form sent).
    pub subject_token: &'a str,
    pub audience: &'a str,
    pub scopes: &'a [String],
    pub requested_token_type: TokenType,
}

/// The exact form of an exchange request, without client authentication.
pub fn exchange_form(req: &ExchangeRequest<'_>) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE.to_owned()),
        ("subject_token", req.subject_token.to_owned()),
        ("subject_token_type", TokenType::ACCESS_TOKEN_URN.to_owned()),
        (
            "requested_token_type",
            req.requested_token_type.urn().to_owned(),
        ),
        ("audience", req.audience.to_owned()),
    ];
    if !req.scopes.is_empty() {
        // RFC 6749 §3.3: space-delimited.
        form.push(("scope", req.scopes.join(" ")));
    }
    form
}

impl IdpClient {
    /// Performs one exchange and returns Keycloak's answer, unchecked beyond its shape.
    pub async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<TokenResponse, IdpError> {
        self.post_token_form(exchange_form(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_has_exactly_the_v2_fields() {
        let tok = "tok";
        let scopes = vec!["a".to_owned(), "b".to_owned()];
        let req = ExchangeRequest {
            subject_token: tok,
            audience: "kagenti-api",
            scopes: &scopes,
            requested_token_type: TokenType::AccessToken,
        };
        let form = exchange_form(&req);
        let keys: Vec<&str> = form.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "grant_type",
                "subject_token",
                "subject_token_type",
                "requested_token_type",
                "audience",
                "scope"
            ]
        );
        assert!(form.contains(&("scope", "a b".to_owned())));
        let no_scope = ExchangeRequest { scopes: &[], ..req };
        assert!(!exchange_form(&no_scope).iter().any(|(k, _)| *k == "scope"));
    }
}
