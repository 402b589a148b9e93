//! What the tester shows of one exchange: the request as sent (secrets replaced by
//! fingerprints), Keycloak's literal status and body (tokens redacted, [`super::redact`]), and
//! the decoded — never verified, display only — header and claims of a JWT.

use base64::Engine;
use serde::Serialize;
use serde_json::Value;

/// The request as sent, with secrets replaced by fingerprints.
#[derive(Debug, Serialize)]
pub struct RequestView {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<[String; 2]>,
    pub form: Vec<[String; 2]>,
}

/// Keycloak's literal status and body (tokens in it redacted).
#[derive(Debug, Serialize)]
pub struct ResponseView {
    pub status: u16,
    pub body: Value,
}

/// A decoded (not verified) JWT.
#[derive(Debug, Serialize)]
pub struct Decoded {
    pub header: Value,
    pub claims: Value,
}

/// Decodes a JWT's header and payload without verifying it (display only).
pub fn decode_jwt(token: &str) -> Option<Decoded> {
    let mut parts = token.trim().split('.');
    let (h, p) = (parts.next()?, parts.next()?);
    let dec = |s: &str| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some(Decoded {
        header: dec(h)?,
        claims: dec(p)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unverified_jwt() {
        let d = decode_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").unwrap();
        assert_eq!(d.header["alg"], "none");
        assert_eq!(d.claims["sub"], "x");
    }
}
