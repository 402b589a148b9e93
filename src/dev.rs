//! `token-broker dev`: the development set-up of docs/dev-contract.md in one process, on loopback
//! only — the dev IdP at `127.0.0.1:7080/realms/dev`, the dev echo upstream at
//! `127.0.0.1:7090` (both targets' `upstream`) and the broker at `127.0.0.1:7070` (admin
//! `127.0.0.1:7071`) configured by the embedded `config/dev.yaml`.
//!
//! Everything it prints says it is for development only: the IdP's users, passwords and
//! client secret are public values.
//!
//! The dev IdP trusts the broker's own RFC 7523 assertions
//! (docs/reference/keycloak-token-exchange.md §6, the
//! Keycloak set-up of docs/backstage-integration.md done for you): the broker's `assertion.issuer`
//! with the broker's `/.well-known/jwks.json` is an identity provider allowed for the broker's
//! client, and `alice`/`bob` are linked to it as their `userMapping.subject` (e.g.
//! `user:default/alice`). It is harmless without Backstage callers, so it is always done.

use std::net::SocketAddr;
use std::path::PathBuf;

use token_broker_devidp::{self as devidp, DevIdentityProvider, DevIdpConfig, DevIdpHandle};

use crate::app::wait_for_shutdown;
use crate::config::{self, ProcessEnv, UserMappingKind};
use crate::devupstream::{self, DEV_UPSTREAM_ADDR};

/// `config/dev.yaml`, embedded so `token-broker dev` works from any directory.
pub const DEV_CONFIG_YAML: &str = include_str!("../config/dev.yaml");

/// The dev IdP's address (docs/dev-contract.md).
pub const DEV_IDP_ADDR: &str = "127.0.0.1:7080";

/// Alias of the identity provider standing for the broker's assertion issuer at the dev IdP.
pub const BROKER_IDP_ALIAS: &str = "token-broker-assertions";

/// The dev users linked to the broker's identity provider.
const DEV_USERS: [&str; 2] = ["alice", "bob"];

/// What the dev IdP needs to trust the broker's assertions (§6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionTrust {
    /// `assertion.issuer`.
    pub issuer: String,
    /// `{broker}/.well-known/jwks.json`.
    pub jwks_url: String,
    /// The broker's client at the IdP (`keycloak.clientId`).
    pub client_id: String,
    /// `userMapping.subject` of the first `jwt_authorization_grant` target (`{ref}` if none).
    pub subject_template: String,
}

impl AssertionTrust {
    /// From the broker configuration; `None` without an `assertion` section.
    pub fn from_config(cfg: &config::Config, broker_url: &str) -> Option<Self> {
        let assertion = cfg.assertion.as_ref()?;
        let subject_template = cfg
            .targets
            .values()
            .filter_map(|t| t.user_mapping.as_ref())
            .find(|m| m.kind == UserMappingKind::JwtAuthorizationGrant)
            .map(|m| m.subject.clone())
            .unwrap_or_else(|| "{ref}".to_owned());
        Some(Self {
            issuer: assertion.issuer.clone(),
            jwks_url: format!("{}/.well-known/jwks.json", broker_url.trim_end_matches('/')),
            client_id: cfg.keycloak.client_id.clone(),
            subject_template,
        })
    }
}

/// Configures the dev IdP like the Keycloak steps 2–4 of docs/backstage-integration.md
/// (`jwt_authorization_grant`): the identity provider, the client's allowed-IdP list, and the
/// links of alice and bob (`user:default/<name>` through the subject template).
pub fn trust_broker_assertions(idp: &DevIdpHandle, trust: &AssertionTrust) {
    idp.add_identity_provider(DevIdentityProvider::new(
        BROKER_IDP_ALIAS,
        &trust.issuer,
        &trust.jwks_url,
    ));
    idp.update_client(&trust.client_id, |c| {
        c.jwt_authorization_grant_enabled = true;
        if !c
            .jwt_authorization_grant_idps
            .iter()
            .any(|a| a == BROKER_IDP_ALIAS)
        {
            c.jwt_authorization_grant_idps
                .push(BROKER_IDP_ALIAS.to_owned());
        }
    });
    for user in DEV_USERS {
        let subject = crate::inbound::expand_template(
            &trust.subject_template,
            &format!("user:default/{user}"),
        );
        idp.link_user(user, BROKER_IDP_ALIAS, &subject);
    }
}

pub struct DevOptions {
    pub config: Option<PathBuf>,
    /// `--backstage URL`: trust the Backstage backend at URL (docs/dev-contract.md).
    pub backstage: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("the development IdP could not start on {addr}: {source}")]
    Idp {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid development configuration:\n{0}")]
    Config(config::ConfigErrors),
    #[error("the development echo upstream could not start on {addr}: {source}")]
    Upstream {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error("--backstage must be an http or https URL, e.g. http://127.0.0.1:7007 (got '{0}')")]
    Backstage(String),
}

/// The dev configuration: the given file, or the embedded `config/dev.yaml`.
pub fn dev_config(path: Option<&std::path::Path>) -> Result<config::Config, config::ConfigErrors> {
    match path {
        Some(p) => config::load_file(p),
        None => {
            let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            config::load_str(DEV_CONFIG_YAML, &ProcessEnv, &here)
        }
    }
}

pub async fn run(opts: DevOptions) -> Result<(), DevError> {
    let mut cfg = dev_config(opts.config.as_deref()).map_err(DevError::Config)?;
    if let Some(url) = &opts.backstage {
        // Plugins at URL/api/{pluginId}, the auth backend at URL/api/auth (HostDiscovery's
        // default layout, docs/reference/backstage-tokens.md §2.2).
        let parsed = url::Url::parse(url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| DevError::Backstage(url.clone()))?;
        cfg.backstage.base_url = Some(parsed);
        eprintln!("token-broker dev: trusting the Backstage backend at {url} (DEVELOPMENT ONLY)");
    }
    // Held to the end of `run`: dropping it flushes the audit log and the queued spans.
    let _telemetry = crate::telemetry::init(cfg.logging.format, &cfg.logging.level, &cfg.telemetry);
    let idp_addr: SocketAddr = DEV_IDP_ADDR.parse().map_err(|_| DevError::Idp {
        addr: DEV_IDP_ADDR.into(),
        source: std::io::Error::other("bad address"),
    })?;
    let mut idp_config = DevIdpConfig::contract();
    // For the exchange tester's failing example: tokens without the broker in aud.
    let mut no_aud = devidp::DevClient::public(crate::tester::dev_login::DEV_NO_AUDIENCE_CLIENT);
    no_aud.direct_access_grants = true;
    idp_config.clients.push(no_aud);
    let idp = devidp::start(idp_config, idp_addr)
        .await
        .map_err(|source| DevError::Idp {
            addr: DEV_IDP_ADDR.into(),
            source,
        })?;
    let up_addr: SocketAddr = DEV_UPSTREAM_ADDR.parse().map_err(|_| DevError::Upstream {
        addr: DEV_UPSTREAM_ADDR.into(),
        source: std::io::Error::other("bad address"),
    })?;
    let upstream = devupstream::start(up_addr)
        .await
        .map_err(|source| DevError::Upstream {
            addr: DEV_UPSTREAM_ADDR.into(),
            source,
        })?;
    let cfg_for_trust = cfg.clone();
    let broker = crate::app::start(cfg).await?;
    // As an admin sets the login clients' "Backchannel logout URL" in Keycloak
    // (docs/keycloak-setup.md step 3): the dev IdP's logouts then evict the broker's cache.
    let backchannel = format!(
        "{}/v1/backchannel-logout",
        broker.public_url().trim_end_matches('/')
    );
    for client in &cfg_for_trust.user_token.allowed_clients {
        idp.update_client(client, |c| {
            c.backchannel_logout_url = Some(backchannel.clone());
        });
    }
    if let Some(trust) = AssertionTrust::from_config(&cfg_for_trust, &broker.public_url()) {
        trust_broker_assertions(&idp, &trust);
        eprintln!(
            "token-broker dev: the dev IdP trusts the broker's assertions (issuer {}, keys {}) for client {}; alice and bob are linked as e.g. {} (DEVELOPMENT ONLY)",
            trust.issuer,
            trust.jwks_url,
            trust.client_id,
            crate::inbound::expand_template(&trust.subject_template, "user:default/alice")
        );
    }
    print_banner(&idp.issuer(), &broker.public_url(), broker.admin_addr);
    println!(
        " dev echo upstream {} (DEVELOPMENT ONLY): upstream of both targets\n",
        upstream.url()
    );
    wait_for_shutdown().await;
    eprintln!("token-broker dev: shutting down");
    broker.shutdown().await;
    upstream.stop().await;
    idp.stop().await;
    Ok(())
}

fn print_banner(issuer: &str, broker: &str, admin: Option<SocketAddr>) {
    let admin = admin
        .map(|a| format!("http://{a}"))
        .unwrap_or_else(|| "(off)".into());
    println!(
        r#"
=====================================================================
 token-broker dev — DEVELOPMENT ONLY. Do not use in production.
 Users, passwords and secrets below are public development values.
=====================================================================
 broker (public)  {broker}      POST /v1/token, /v1/proxy/{{target}}/...
 broker (admin)   {admin}      /healthz /readyz /metrics
                  {admin}/tester  exchange tester (admin credential dev-admin-token)
 dev IdP (Keycloak-compatible, DEVELOPMENT ONLY)
                  {issuer}
 users            alice/alice, bob/bob (client dev-frontend, password grant)
 caller token     dev-static-token (subject dev-caller)
 targets          kagenti (audience kagenti-api, fallback service_account)
                  sonataflow (audience sonataflow, fallback deny)

 Try it:
   USER_TOKEN=$(curl -s -d grant_type=password -d client_id=dev-frontend \
     -d username=alice -d password=alice \
     {issuer}/protocol/openid-connect/token \
     | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
   curl -si {broker}/v1/token -H 'Authorization: Bearer dev-static-token' \
     -H "X-Forwarded-Access-Token: $USER_TOKEN" \
     -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange -d audience=kagenti
=====================================================================
"#
    );
}
