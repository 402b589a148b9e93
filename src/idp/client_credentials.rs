//! The client-credentials grant (RFC 6749 §4.4): the broker's own service-account token, used
//! for service callers and as the `service_account` fallback.
//!
//! Built on the `oauth2` crate, which form-encodes id and secret before Basic encoding
//! (RFC 6749 §2.3.1) and parses the standard error body. The shared `reqwest::Client` (no
//! redirects, bounded time) is passed in as its HTTP client.

use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse as _, TokenUrl,
};
use secrecy::ExposeSecret;

use super::{IdpClient, IdpError, TokenResponse};
use crate::config::ClientAuthMethod;

impl IdpClient {
    /// Requests a token for the broker's service account with these scopes.
    pub async fn client_credentials(&self, scopes: &[String]) -> Result<TokenResponse, IdpError> {
        let ep = self.endpoints().await?;
        let token_url = TokenUrl::from_url(ep.token.clone());
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.client_secret().expose_secret().to_owned(),
            ))
            .set_token_uri(token_url)
            .set_auth_type(match self.auth_method {
                ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
                ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
            });
        let resp = client
            .exchange_client_credentials()
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
            .request_async(&self.http)
            .await
            .map_err(map_error)?;
        let token_type = match resp.token_type() {
            BasicTokenType::Bearer => "Bearer".to_owned(),
            BasicTokenType::Mac => "mac".to_owned(),
            BasicTokenType::Extension(s) => s.clone(),
        };
        Ok(TokenResponse {
            access_token: resp.access_token().secret().clone(),
            token_type,
            issued_token_type: None,
            expires_in: resp.expires_in().map(|d| d.as_secs()),
            scope: resp
                .scopes()
                .map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
        })
    }
}

fn map_error(
    e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
) -> IdpError {
    match e {
        RequestTokenError::ServerResponse(r) => IdpError::Rejected {
            // oauth2 does not surface the HTTP status of an error answer.
            status: None,
            error: r.error().as_ref().to_owned(),
            description: r.error_description().cloned(),
        },
        RequestTokenError::Request(oauth2::HttpClientError::Reqwest(re)) => IdpError::Transport {
            timeout: re.is_timeout(),
            detail: super::describe_reqwest(&re),
        },
        RequestTokenError::Request(_) => IdpError::Transport {
            timeout: false,
            detail: "request failed".into(),
        },
        // The Parse variant carries the body, which may hold a token: never surface it.
        RequestTokenError::Parse(_, _) => {
            IdpError::Protocol("the client-credentials answer could not be parsed".into())
        }
        RequestTokenError::Other(_) => {
            IdpError::Protocol("the client-credentials answer was unexpected".into())
        }
    }
}
