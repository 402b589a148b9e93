//! DEVELOPMENT ONLY (cargo feature `dev`): the exchange tester's dev users — the users of the
//! development IdP (`token-broker dev`) the tester page offers instead of a pasted token, and
//! their login with the password grant. Offered only while `keycloak.issuer` can be the dev IdP
//! (plain http on loopback), and still behind the admin credential. The production build
//! (`--no-default-features`) has none of this.

use secrecy::SecretString;
use serde_json::Value;

use crate::config::Config;
use crate::idp::IdpClient;

/// Dev users the tester may log in at the dev IdP: (id, username, login client, note).
pub const DEV_USERS: [(&str, &str, &str, &str); 3] = [
    ("alice", "alice", "dev-frontend", "alice via dev-frontend"),
    ("bob", "bob", "dev-frontend", "bob via dev-frontend"),
    (
        "alice-no-aud",
        "alice",
        DEV_NO_AUDIENCE_CLIENT,
        "alice via dev-frontend-no-audience (aud lacks the broker: fails)",
    ),
];

/// A public dev IdP client whose tokens lack the broker in `aud` (no Audience mapper), so
/// the tester can show Keycloak's "Client is not within the token audience".
pub const DEV_NO_AUDIENCE_CLIENT: &str = "dev-frontend-no-audience";

/// True when the configured issuer can be the dev IdP: plain http on a loopback host. Dev
/// logins are offered only then (and still need the admin credential).
pub fn available(config: &Config) -> bool {
    let i = &config.keycloak.issuer;
    i.scheme() == "http"
        && match i.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
}

/// What `/admin/info` lists as `dev_users` (`id` and `label`): every dev user while
/// [`available`], none otherwise.
pub fn offered(config: &Config) -> Vec<Value> {
    if !available(config) {
        return Vec::new();
    }
    DEV_USERS
        .iter()
        .map(|(id, _, _, label)| serde_json::json!({"id": id, "label": label}))
        .collect()
}

/// Logs a dev user in at the dev IdP with the password grant (DEVELOPMENT ONLY; the dev
/// users' passwords are their names, docs/dev-contract.md).
pub async fn login(config: &Config, idp: &IdpClient, id: &str) -> Result<SecretString, String> {
    if !available(config) {
        return Err(
            "dev users are offered only when keycloak.issuer is the dev IdP on loopback".into(),
        );
    }
    let (_, user, client, _) = DEV_USERS
        .iter()
        .find(|u| u.0 == id)
        .ok_or_else(|| "unknown dev user".to_owned())?;
    let ep = idp.endpoints().await.map_err(|e| e.to_string())?;
    let resp = idp
        .http()
        .post(ep.token.clone())
        .form(&[
            ("grant_type", "password"),
            ("client_id", *client),
            ("username", *user),
            ("password", *user),
        ])
        .send()
        .await
        .map_err(|e| format!("dev login failed: {}", crate::idp::describe_reqwest(&e)))?;
    let status = resp.status().as_u16();
    let body = crate::idp::read_limited(resp, 64 * 1024).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match v.get("access_token").and_then(Value::as_str) {
        Some(t) if status == 200 => Ok(SecretString::from(t.to_owned())),
        _ => Err(format!(
            "dev login of '{user}' at client '{client}' failed: HTTP {status} {}",
            v.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("")
        )),
    }
}
