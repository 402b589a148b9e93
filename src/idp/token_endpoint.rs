//! The client at Keycloak's token endpoint: one POST for every grant, with the configured
//! client authentication (RFC 6749 §2.3.1), through the outbound layer (bound, connect
//! retries, size cap, per-call metrics); the answer parsed as a success (RFC 6749 §5.1,
//! RFC 8693 §2.2.1) or an OAuth error (RFC 6749 §5.2). The grants' forms are built by
//! [`super::exchange`], [`super::client_credentials`] and [`super::user_mapping`].

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{IdpClient, IdpError};
use crate::config::ClientAuthMethod;
use crate::metrics::IdpRequest;
use crate::outbound::{OutboundError, Request};

/// Largest token-endpoint answer read (a Keycloak token response is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// A successful token-endpoint answer (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub issued_token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("issued_token_type", &self.issued_token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl IdpClient {
    /// POSTs a form to the token endpoint with the configured client authentication
    /// (RFC 6749 §2.3.1) and returns the parsed success answer.
    pub(crate) async fn post_token_form(
        &self,
        form: Vec<(&'static str, String)>,
    ) -> Result<TokenResponse, IdpError> {
        let raw = self.post_token_form_raw(form).await?;
        parse_token_answer(raw.status, &raw.body)
    }

    /// How the configured client authentication travels, for display: the header or form
    /// fields it adds, with the secret replaced by a note (the exchange tester).
    pub fn client_auth_display(&self) -> (Pairs, Pairs) {
        let note = format!(
            "<redacted: secret of client '{}', sha256 fingerprint {}>",
            self.client_id,
            crate::digest::fingerprint(self.client_secret().expose_secret())
        );
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => (
                vec![(
                    "authorization".to_owned(),
                    format!("Basic {note} (RFC 6749 §2.3.1)"),
                )],
                Vec::new(),
            ),
            ClientAuthMethod::ClientSecretPost => (
                Vec::new(),
                vec![
                    ("client_id".to_owned(), self.client_id.clone()),
                    ("client_secret".to_owned(), note),
                ],
            ),
        }
    }

    /// POSTs a form to the token endpoint and returns Keycloak's literal status and body
    /// (bounded), whatever they are. Transport failures are errors. The call goes through the
    /// outbound layer with the concurrency bound, connect retries and metrics.
    pub(crate) async fn post_token_form_raw(
        &self,
        form: Vec<(&'static str, String)>,
    ) -> Result<RawAnswer, IdpError> {
        let ep = self.endpoints().await?;
        let metric = IdpRequest::for_grant(
            form.iter()
                .find(|(k, _)| *k == "grant_type")
                .map(|(_, v)| v.as_str()),
        );
        self.post_form_raw(ep.token.clone(), form, metric).await
    }

    /// POSTs a form with the configured client authentication to `url` (the token or the
    /// introspection endpoint, both from discovery), through the outbound layer.
    pub(crate) async fn post_form_raw(
        &self,
        url: url::Url,
        mut form: Vec<(&'static str, String)>,
        metric: IdpRequest,
    ) -> Result<RawAnswer, IdpError> {
        let mut headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ];
        match self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                headers.push((
                    "authorization",
                    basic_auth(&self.client_id, &self.client_secret()),
                ));
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_secret",
                    self.client_secret().expose_secret().to_owned(),
                ));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let answer = self
            .outbound
            .send(Request {
                method: reqwest::Method::POST,
                url,
                headers,
                body: Some(body),
                limit: MAX_RESPONSE_BYTES,
                timeout: None,
                bounded: true,
                retry_connect: true,
                metric: Some(metric),
            })
            .await
            .map_err(|e| match e {
                OutboundError::Busy => IdpError::Busy,
                OutboundError::Transport(kind) => IdpError::Transport { kind },
                // An oversized answer is an answer, not a network failure.
                OutboundError::TooLarge { status, limit } => IdpError::Protocol {
                    status: Some(status),
                    detail: format!("response larger than {limit} bytes"),
                },
            })?;
        Ok(RawAnswer {
            status: answer.status,
            body: answer.body,
        })
    }
}

/// Name/value pairs for display.
pub type Pairs = Vec<(String, String)>;

/// Keycloak's literal answer from the token endpoint.
pub struct RawAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A token-endpoint answer as a success or an OAuth error (RFC 6749 §5.1, §5.2). Neither
/// (an HTML page, a malformed 200) is [`IdpError::Protocol`] with the status; the body is
/// never quoted, since it may hold a token.
pub fn parse_token_answer(status: u16, bytes: &[u8]) -> Result<TokenResponse, IdpError> {
    if status == 200 {
        return serde_json::from_slice::<TokenResponse>(bytes).map_err(|_| IdpError::Protocol {
            status: Some(status),
            detail: "HTTP 200 without a token response".into(),
        });
    }
    match serde_json::from_slice::<OAuthError>(bytes) {
        Ok(e) => Err(IdpError::Rejected {
            status: Some(status),
            error: e.error,
            description: e.error_description,
        }),
        Err(_) => Err(IdpError::Protocol {
            status: Some(status),
            detail: format!("HTTP {status} without an OAuth error body"),
        }),
    }
}

/// `Authorization: Basic` with id and secret form-urlencoded first, as RFC 6749 §2.3.1 requires
/// (Keycloak decodes them; a secret containing `:` or `%` would break otherwise).
pub fn basic_auth(id: &str, secret: &SecretString) -> String {
    use base64::Engine;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret.expose_secret()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        use base64::Engine;
        let h = basic_auth("my client", &SecretString::from("a:b%c".to_owned()));
        let raw = h.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "my+client:a%3Ab%25c");
    }
}
