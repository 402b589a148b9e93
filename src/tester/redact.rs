//! Redaction for display: a secret becomes its fingerprint and length, every token in
//! Keycloak's answer is redacted over the *whole* answer (at any depth, and JWT-shaped runs in
//! text that is not JSON), and only then is the answer cut to [`MAX_SHOWN_BODY`].

use serde_json::Value;

use crate::digest::fingerprint;

/// Keycloak's answer body is shown up to this many bytes.
pub const MAX_SHOWN_BODY: usize = 16 * 1024;

/// `<redacted …>` text for a secret: its fingerprint and length, never the value.
pub fn redacted(what: &str, secret: &str) -> String {
    format!(
        "<redacted {what}: sha256 fingerprint {}, {} bytes>",
        fingerprint(secret),
        secret.len()
    )
}

/// Keycloak's body for display: every token redacted in the *whole* answer first, then cut to
/// [`MAX_SHOWN_BODY`]. (Cutting first would break a long JSON answer, which would then be
/// shown as text with its tokens in clear.)
pub(super) fn shown_body(bytes: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            redact_tokens(&mut v);
            let text = v.to_string();
            if text.len() <= MAX_SHOWN_BODY {
                v
            } else {
                Value::String(truncated(&text))
            }
        }
        Err(_) => Value::String(truncated(&redact_jwts(&String::from_utf8_lossy(bytes)))),
    }
}

/// Replaces, at any depth, every string under a key ending in `token` (`access_token`,
/// `refresh_token`, `id_token`, …) and every string shaped like a JWT by [`redacted`].
fn redact_tokens(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            for (key, val) in obj.iter_mut() {
                match val {
                    Value::String(t)
                        if key.to_ascii_lowercase().ends_with("token") || looks_like_jwt(t) =>
                    {
                        *val = Value::String(redacted(key, t));
                    }
                    other => redact_tokens(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_tokens),
        Value::String(t) if looks_like_jwt(t) => *v = Value::String(redacted("token", t)),
        _ => {}
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A compact JWS/JWE: a JSON header (`eyJ`, base64url of `{"`) and at least two dots between
/// base64url runs.
fn looks_like_jwt(s: &str) -> bool {
    let s = s.trim();
    s.starts_with("eyJ")
        && s.bytes().filter(|b| *b == b'.').count() >= 2
        && s.bytes().all(|b| is_b64url(b) || b == b'.')
}

/// Replaces every JWT-shaped run in free text (an HTML page or a broken JSON body).
fn redact_jwts(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(pos) = text.get(i..).and_then(|rest| rest.find("eyJ")) {
        let start = i + pos;
        let mut end = start;
        while bytes.get(end).is_some_and(|b| is_b64url(*b) || *b == b'.') {
            end += 1;
        }
        // Both bounds sit on ASCII bytes, so the slices are on char boundaries.
        let run = text.get(start..end).unwrap_or("");
        if looks_like_jwt(run) {
            out.push_str(text.get(copied..start).unwrap_or(""));
            out.push_str(&redacted("token", run));
            copied = end;
        }
        i = end.max(start + 3);
    }
    out.push_str(text.get(copied..).unwrap_or(""));
    out
}

/// `text` cut to at most [`MAX_SHOWN_BODY`] bytes (on a character boundary), with a note.
fn truncated(text: &str) -> String {
    if text.len() <= MAX_SHOWN_BODY {
        return text.to_owned();
    }
    let mut cut = MAX_SHOWN_BODY;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… (shown up to {MAX_SHOWN_BODY} bytes of {})",
        text.get(..cut).unwrap_or(""),
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_tokens_are_redacted() {
        let v = shown_body(br#"{"access_token":"secret-token-value","token_type":"Bearer"}"#);
        let s = v.to_string();
        assert!(!s.contains("secret-token-value"));
        assert!(s.contains("redacted access_token"));
    }

    #[test]
    fn long_bodies_are_redacted_before_they_are_cut() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        let pad = "x".repeat(MAX_SHOWN_BODY * 2);
        let body = format!(
            r#"{{"access_token":"{jwt}","nested":{{"refresh_token":"r-secret","list":["{jwt}"]}},"pad":"{pad}"}}"#
        );
        let s = shown_body(body.as_bytes()).to_string();
        assert!(!s.contains(jwt) && !s.contains("r-secret"), "{}", &s[..200]);
        assert!(s.contains("redacted access_token"));
        assert!(s.len() < MAX_SHOWN_BODY + 200);
        // Not JSON (an HTML page, or JSON cut by a proxy): JWT-shaped runs are redacted.
        let html = format!("<html>{pad}<p>token={jwt}</p>{pad}</html>");
        let s = redact_jwts(&html);
        assert!(!s.contains(jwt));
        assert!(s.contains("redacted token"));
        let broken = format!(r#"{{"access_token":"{jwt}","pad":"{pad}"#);
        let s = shown_body(broken.as_bytes()).to_string();
        assert!(!s.contains(jwt));
        assert_eq!(redact_jwts("eyJ only eyJa.b eyJ"), "eyJ only eyJa.b eyJ");
        assert!(truncated("é".repeat(MAX_SHOWN_BODY).as_str()).len() <= MAX_SHOWN_BODY + 64);
    }
}
