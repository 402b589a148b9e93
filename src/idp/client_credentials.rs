//! The client-credentials grant (RFC 6749 §4.4): the broker's own service-account token, used
//! for service callers and as the `service_account` fallback.
//!
//! It goes through [`IdpClient::post_token_form`] like every other grant, so it shares the
//! token endpoint's bound on calls in flight (`keycloak.maxConcurrentRequests`), the retry on
//! failed connections, the size limit on answers, the configured client authentication
//! (RFC 6749 §2.3.1) and the IdP metrics (`request="client_credentials"`).

use super::{IdpClient, IdpError, TokenResponse};
use crate::protocol::GRANT_TYPE_CLIENT_CREDENTIALS;

/// The form of a client-credentials request, without client authentication: `scope` only
/// when scopes are requested (RFC 6749 §3.3, space-delimited).
pub fn client_credentials_form(scopes: &[String]) -> Vec<(&'static str, String)> {
    let mut form = vec![("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS.to_owned())];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    form
}

impl IdpClient {
    /// Requests a token for the broker's service account with these scopes.
    pub async fn client_credentials(&self, scopes: &[String]) -> Result<TokenResponse, IdpError> {
        self.post_token_form(client_credentials_form(scopes)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form() {
        let keys =
            |f: Vec<(&'static str, String)>| f.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(client_credentials_form(&[])), ["grant_type"]);
        let f = client_credentials_form(&["a".into(), "b".into()]);
        assert!(f.contains(&("scope", "a b".to_owned())));
        assert_eq!(
            crate::metrics::IdpRequest::for_grant(Some(GRANT_TYPE_CLIENT_CREDENTIALS)).as_str(),
            "client_credentials"
        );
    }
}
