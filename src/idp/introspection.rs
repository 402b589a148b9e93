//! RFC 7662 token introspection of a user's token (`userToken.verify: introspection`): for
//! IdPs whose user tokens are opaque or cannot be verified locally. The broker POSTs the token
//! to the discovery document's `introspection_endpoint` with its own client authentication
//! (RFC 7662 §2.1) and reads the answer (§2.2): `active` must be `true`; `iss`, when present,
//! must be the configured issuer byte for byte; `sub` and `exp` are required (the broker keeps
//! nothing longer than `exp`).

use super::{IdpClient, IdpError};
use crate::metrics::IdpRequest;

/// Largest introspection answer read.
const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;

/// What the IdP said about a token. `Inactive` covers every refusal (RFC 7662 §2.2: the
/// server says no more than `active: false`).
pub enum Introspected {
    Active(serde_json::Map<String, serde_json::Value>),
    Inactive,
}

impl IdpClient {
    /// Introspects `token`. Transport failures, a missing endpoint and answers that are not
    /// an introspection response are errors (the caller fails closed).
    pub async fn introspect(&self, token: &str) -> Result<Introspected, IdpError> {
        let ep = self.endpoints().await?;
        let Some(url) = ep.introspection.clone() else {
            return Err(IdpError::Discovery(
                "the discovery document names no introspection_endpoint".into(),
            ));
        };
        let form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let raw = self
            .post_form_raw(url, form, IdpRequest::Introspection)
            .await?;
        if raw.body.len() > MAX_INTROSPECTION_BYTES || raw.status != 200 {
            return Err(IdpError::Protocol {
                status: Some(raw.status),
                detail:
                    "the introspection endpoint did not answer 200 with an introspection response"
                        .into(),
            });
        }
        let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw.body)
            .map_err(|_| IdpError::Protocol {
                status: Some(raw.status),
                detail: "the introspection answer is not a JSON object".into(),
            })?;
        match doc.get("active").and_then(serde_json::Value::as_bool) {
            Some(true) => Ok(Introspected::Active(doc)),
            Some(false) => Ok(Introspected::Inactive),
            None => Err(IdpError::Protocol {
                status: Some(raw.status),
                detail: "the introspection answer has no boolean `active`".into(),
            }),
        }
    }
}
