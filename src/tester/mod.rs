//! The exchange tester: one RFC 8693 token exchange at Keycloak **without the cache**, through
//! the broker's own [`IdpClient`], explained for a Keycloak admin — the exact form sent (secrets
//! redacted), Keycloak's literal status and body (tokens redacted), the decoded header and
//! claims of the subject token and of the result, and a checklist of the usual prerequisites
//! with the fix for each (from `/work/shared/docs/keycloak-token-exchange.md` §3.3–§3.8).
//!
//! Shared by the admin API (`POST /admin/exchange`, `http/admin.rs`), the web page
//! (`GET /tester`) and the command `token-broker exchange` (`cli.rs`): no duplicated logic.
//! No actix types here.

pub mod cli;
#[cfg(feature = "dev")]
pub mod dev_login;

use base64::Engine;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, TargetConfig};
use crate::digest::fingerprint;
use crate::idp::exchange::{ExchangeRequest, exchange_form};
use crate::idp::hints::keycloak_hint;
use crate::idp::{IdpClient, IdpError, parse_token_answer};
use crate::inbound::oidc::OidcVerifier;

/// Keycloak's answer body is shown up to this many bytes.
const MAX_SHOWN_BODY: usize = 16 * 1024;

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

/// One checklist item. `ok` is `true` (pass), `false` (fail) or `null` (could not be
/// determined from this attempt, or not applicable); `status` says which.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: Option<bool>,
    pub status: &'static str,
    pub detail: String,
    pub fix: String,
}

/// The tester's answer (the dev-contract JSON plus a summary).
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub audience: String,
    pub issuer: String,
    /// `success`, `keycloak_error` or `idp_unreachable`.
    pub outcome: &'static str,
    pub summary: String,
    pub request: Option<RequestView>,
    pub response: Option<ResponseView>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub hint: Option<String>,
    pub subject_claims: Option<Decoded>,
    pub result_claims: Option<Decoded>,
    pub checks: Vec<Check>,
}

/// Why the tester could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TesterError {
    #[error("unknown target '{0}'")]
    UnknownTarget(String),
    #[error("the subject token is empty or larger than 16 KiB")]
    BadToken,
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

/// `<redacted …>` text for a secret: its fingerprint and length, never the value.
pub fn redacted(what: &str, secret: &str) -> String {
    format!(
        "<redacted {what}: sha256 fingerprint {}, {} bytes>",
        fingerprint(secret),
        secret.len()
    )
}

fn aud_has(claims: &Value, client: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(s)) => s == client,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client)),
        _ => false,
    }
}

/// Where in Keycloak's V2 pipeline an answer stopped (keycloak-token-exchange.md §2, §3.3,
/// §3.4, in check order); `SUCCESS` = it went through, 0 = not recognised.
fn stage(status: u16, error: &str, description: &str) -> u8 {
    match (error, description) {
        ("unsupported_grant_type", _) => 1,
        (_, "Invalid client or Invalid client credentials") => 2,
        (_, "Standard token exchange is not enabled for the requested client") => 3,
        (_, d) if d.starts_with("Parameter '") => 3,
        (_, "Invalid token") => 4,
        (_, "requested_token_type unsupported") => 5,
        (_, "Audience not found") => 6,
        (_, "Public client is not allowed to exchange token") | (_, "Client disabled") => 7,
        (_, "Client is not within the token audience") => 8,
        ("invalid_scope", _) => 9,
        (_, d) if d.starts_with("Requested audience not available") => 10,
        _ if status == 401 => 2,
        _ => 0,
    }
}
const SUCCESS: u8 = 100;

fn check(name: &'static str, ok: Option<bool>, detail: String, fix: String) -> Check {
    Check {
        name,
        ok,
        status: match ok {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "unknown",
        },
        detail,
        fix,
    }
}

/// Verdict of a pipeline stage: fails at it, passes beyond it, unknown before it.
fn stage_verdict(reached: u8, at: &[u8]) -> Option<bool> {
    let max = at.iter().copied().max().unwrap_or(0);
    if at.contains(&reached) {
        Some(false)
    } else if reached > max {
        Some(true)
    } else {
        None
    }
}

/// What the tester needs from the running broker (or the CLI's own instances).
pub struct Tester<'a> {
    pub config: &'a Config,
    pub idp: &'a IdpClient,
    pub verifier: &'a OidcVerifier,
    /// Unix seconds.
    pub now: u64,
}

impl Tester<'_> {
    /// Runs one exchange for `target` with `subject_token`, bypassing the cache.
    pub async fn run(&self, target: &str, subject_token: &str) -> Result<Report, TesterError> {
        let tcfg = self
            .config
            .targets
            .get(target)
            .ok_or_else(|| TesterError::UnknownTarget(target.chars().take(64).collect()))?;
        let subject_token = subject_token.trim();
        if subject_token.is_empty() || subject_token.len() > 16 * 1024 {
            return Err(TesterError::BadToken);
        }
        let client_id = self.idp.client_id().to_owned();
        let subject = decode_jwt(subject_token);
        let local = self.verifier.verify(subject_token).await.err();

        let secret = SecretString::from(subject_token.to_owned());
        let form = exchange_form(&ExchangeRequest {
            subject_token: &secret,
            audience: &tcfg.audience,
            scopes: &tcfg.scopes,
            requested_token_type: tcfg.requested_token_type,
        });
        let (auth_headers, auth_form) = self.idp.client_auth_display();
        let mut shown_form: Vec<[String; 2]> = form
            .iter()
            .map(|(k, v)| {
                let v = if *k == "subject_token" {
                    redacted("subject token", v)
                } else {
                    v.clone()
                };
                [(*k).to_owned(), v]
            })
            .collect();
        shown_form.extend(auth_form.into_iter().map(|(k, v)| [k, v]));
        let mut headers = vec![
            [
                "content-type".to_owned(),
                "application/x-www-form-urlencoded".to_owned(),
            ],
            ["accept".to_owned(), "application/json".to_owned()],
        ];
        headers.extend(auth_headers.into_iter().map(|(k, v)| [k, v]));

        let mut report = Report {
            target: target.to_owned(),
            audience: tcfg.audience.clone(),
            issuer: self.idp.issuer().to_owned(),
            outcome: "idp_unreachable",
            summary: String::new(),
            request: None,
            response: None,
            error: None,
            error_description: None,
            hint: None,
            subject_claims: subject,
            result_claims: None,
            checks: Vec::new(),
        };
        let endpoints = match self.idp.endpoints().await {
            Ok(ep) => ep,
            Err(e) => {
                report.summary = format!("Keycloak could not be reached: {e}");
                report.checks = self.checks(tcfg, &report, 0, None, local.as_ref());
                return Ok(report);
            }
        };
        let token_url = endpoints.token.to_string();
        report.request = Some(RequestView {
            method: "POST",
            url: token_url.clone(),
            headers,
            form: shown_form,
        });
        let raw = match self.idp.post_token_form_raw(form).await {
            Ok(r) => r,
            Err(e) => {
                report.summary = format!("Keycloak could not be reached: {e}");
                report.checks = self.checks(tcfg, &report, 0, Some(&token_url), local.as_ref());
                return Ok(report);
            }
        };
        report.response = Some(ResponseView {
            status: raw.status,
            body: shown_body(&raw.body),
        });
        let reached = match parse_token_answer(raw.status, &raw.body) {
            Ok(answer) => {
                report.outcome = "success";
                report.result_claims = decode_jwt(&answer.access_token);
                report.summary = format!(
                    "Keycloak issued a token for target '{target}' (audience '{}')",
                    tcfg.audience
                );
                SUCCESS
            }
            Err(IdpError::Rejected {
                status,
                error,
                description,
            }) => {
                report.outcome = "keycloak_error";
                let d = description.clone().unwrap_or_default();
                report.hint = keycloak_hint(&error, description.as_deref(), &client_id);
                report.summary = format!(
                    "Keycloak refused the exchange: HTTP {} {error}: {d}",
                    status.unwrap_or(raw.status)
                );
                let s = stage(raw.status, &error, &d);
                report.error = Some(error);
                report.error_description = description;
                s
            }
            Err(e) => {
                report.outcome = "keycloak_error";
                report.summary = format!("Keycloak answered unexpectedly: {e}");
                0
            }
        };
        report.checks = self.checks(tcfg, &report, reached, Some(&token_url), local.as_ref());
        Ok(report)
    }

    fn checks(
        &self,
        tcfg: &TargetConfig,
        report: &Report,
        reached: u8,
        token_url: Option<&str>,
        local: Option<&crate::inbound::oidc::OidcError>,
    ) -> Vec<Check> {
        let client = self.idp.client_id();
        let issuer = self.idp.issuer();
        let claims = report.subject_claims.as_ref().map(|d| &d.claims);
        let azp = claims
            .and_then(|c| c.get("azp"))
            .and_then(Value::as_str)
            .unwrap_or("(none)")
            .to_owned();
        let mut out = Vec::new();

        out.push(check(
            "Broker client credentials accepted",
            stage_verdict(reached, &[2]),
            format!("client '{client}' authenticates at the token endpoint"),
            "check keycloak.clientId, keycloak.clientSecret and keycloak.clientAuthMethod against the client's Credentials tab; the client must be enabled and confidential".into(),
        ));

        out.push(check(
            "Standard token exchange enabled",
            stage_verdict(reached, &[1, 3]),
            match reached {
                1 => "Keycloak answered unsupported_grant_type: the token-exchange feature is off".into(),
                3 => format!("the 'Standard token exchange' switch is off on client '{client}'"),
                r if r > 3 => "Keycloak got past this step (inferred from its answer)".into(),
                _ => "not reached: inferred from Keycloak's error text when it gets that far".into(),
            },
            format!(
                "in the admin console open client '{client}' → Settings → Capability config and turn on 'Standard token exchange' (attribute standard.token.exchange.enabled); on Keycloak < 26.2 upgrade, or check the server feature token-exchange-standard:v2 is not disabled"
            ),
        ));

        let in_aud = claims
            .map(|c| aud_has(c, client) || c.get("azp").and_then(Value::as_str) == Some(client));
        let aud_ok = match reached {
            8 => Some(false),
            r if r > 8 => Some(true),
            _ => in_aud,
        };
        out.push(check(
            "Requester client in the subject token's aud or azp",
            aud_ok,
            match claims {
                Some(c) => format!(
                    "aud = {}, azp = {azp}; the broker's client is '{client}'",
                    c.get("aud").map(Value::to_string).unwrap_or_else(|| "(none)".into())
                ),
                None => "the subject token is not a decodable JWT".into(),
            },
            format!(
                "add an Audience mapper with Included Client Audience '{client}' to the client the user logs in with ('{azp}'): Clients → {azp} → Client scopes → {azp}-dedicated → Add mapper → By configuration → Audience (token claim on)"
            ),
        ));

        let subject_iss = claims.and_then(|c| c.get("iss")).and_then(Value::as_str);
        let endpoint_ok = token_url.map(|u| u.starts_with(issuer));
        let iss_ok = match (subject_iss, endpoint_ok) {
            (Some(i), Some(e)) => Some(i == issuer && e),
            (Some(i), None) => Some(i == issuer),
            (None, _) => None,
        };
        out.push(check(
            "Issuer URL the same as the one Keycloak is reached by",
            iss_ok,
            format!(
                "subject iss = {}, keycloak.issuer = {issuer}, token endpoint = {}",
                subject_iss.unwrap_or("(none)"),
                token_url.unwrap_or("(not discovered)")
            ),
            "Keycloak checks iss against the URL the request came in by and answers only 'Invalid token': set keycloak.issuer to exactly the iss of users' tokens and let the broker reach Keycloak by that URL, or pin Keycloak's hostname (--hostname) so every route yields the same issuer".into(),
        ));

        let exp = claims.and_then(|c| c.get("exp")).and_then(Value::as_u64);
        out.push(check(
            "Subject token not expired",
            exp.map(|e| e > self.now),
            match exp {
                Some(e) if e > self.now => format!("expires in {} s", e - self.now),
                Some(e) => format!("expired {} s ago", self.now.saturating_sub(e)),
                None => "no exp claim".into(),
            },
            "get a fresh access token (log in again): Keycloak answers an expired subject token only with 'Invalid token'".into(),
        ));

        out.push(check(
            "Subject token verifies locally (signature, iss, typ)",
            Some(local.is_none()),
            match local {
                None => "signature by a realm key, iss, exp/nbf and typ Bearer check out".into(),
                Some(e) => format!("rejected: {e}"),
            },
            "the subject must be a Keycloak access token of the configured realm (not an ID or refresh token), signed by a key in the realm's JWKS".into(),
        ));

        let result_aud = report
            .result_claims
            .as_ref()
            .map(|d| aud_has(&d.claims, &tcfg.audience));
        let audience_ok = match reached {
            6 | 10 => Some(false),
            SUCCESS => result_aud.or(Some(true)),
            _ => None,
        };
        out.push(check(
            "Audience available to the requester",
            audience_ok,
            format!("target audience '{}'", tcfg.audience),
            format!(
                "'{}' must be a client of the realm, and client '{client}' must map it into its tokens: add an Audience mapper for '{}' to client '{client}' (dedicated scope), or a client scope mapping a client role of '{}' that the user has",
                tcfg.audience, tcfg.audience, tcfg.audience
            ),
        ));

        out.push(Check {
            name: "User mapping set up for the target",
            ok: None,
            status: "n/a",
            detail: "informational: the user's Keycloak token is exchanged directly; mapping Backstage users (JWT authorization grant) applies once Backstage callers are supported".into(),
            fix: "for the JWT authorization grant route see docs/keycloak-setup.md".into(),
        });
        out
    }
}

/// Keycloak's body for display: every token redacted in the *whole* answer first, then cut to
/// [`MAX_SHOWN_BODY`]. (Cutting first would break a long JSON answer, which would then be
/// shown as text with its tokens in clear.)
fn shown_body(bytes: &[u8]) -> Value {
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
    fn stages_follow_keycloak_order() {
        assert_eq!(
            stage(400, "unsupported_grant_type", "Unsupported grant_type"),
            1
        );
        assert_eq!(
            stage(
                403,
                "access_denied",
                "Client is not within the token audience"
            ),
            8
        );
        assert_eq!(
            stage(
                400,
                "invalid_request",
                "Requested audience not available: x"
            ),
            10
        );
        assert_eq!(stage_verdict(8, &[8]), Some(false));
        assert_eq!(stage_verdict(10, &[1, 3]), Some(true));
        assert_eq!(stage_verdict(2, &[1, 3]), None);
    }

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

    #[test]
    fn decodes_unverified_jwt() {
        let d = decode_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.").unwrap();
        assert_eq!(d.header["alg"], "none");
        assert_eq!(d.claims["sub"], "x");
    }
}
