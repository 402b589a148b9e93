//! `token-broker dev`: the development set-up of dev-contract.md in one process, on loopback
//! only — the dev IdP at `127.0.0.1:7080/realms/dev`, the dev echo upstream at
//! `127.0.0.1:7090` (both targets' `upstream`) and the broker at `127.0.0.1:7070` (admin
//! `127.0.0.1:7071`) configured by the embedded `config/dev.yaml`.
//!
//! Everything it prints says it is for development only: the IdP's users, passwords and
//! client secret are public values.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{self, ProcessEnv};
use crate::devidp::{self, DevIdpConfig};
use crate::devupstream::{self, DEV_UPSTREAM_ADDR};

/// `config/dev.yaml`, embedded so `token-broker dev` works from any directory.
pub const DEV_CONFIG_YAML: &str = include_str!("../config/dev.yaml");

/// The dev IdP's address (dev-contract.md).
pub const DEV_IDP_ADDR: &str = "127.0.0.1:7080";

pub struct DevOptions {
    pub config: Option<PathBuf>,
    /// `--backstage URL`: trust the Backstage backend at URL (dev-contract.md).
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
        // default layout, backstage-tokens.md §2.2).
        let parsed = url::Url::parse(url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| DevError::Backstage(url.clone()))?;
        cfg.backstage.base_url = Some(parsed);
        eprintln!("token-broker dev: trusting the Backstage backend at {url} (DEVELOPMENT ONLY)");
    }
    crate::telemetry::init(cfg.logging.format, &cfg.logging.level);
    let idp_addr: SocketAddr = DEV_IDP_ADDR.parse().map_err(|_| DevError::Idp {
        addr: DEV_IDP_ADDR.into(),
        source: std::io::Error::other("bad address"),
    })?;
    let mut idp_config = DevIdpConfig::contract();
    // For the exchange tester's failing example: tokens without the broker in aud.
    let mut no_aud = devidp::DevClient::public(crate::tester::DEV_NO_AUDIENCE_CLIENT);
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
    let broker = crate::app::start(cfg).await?;
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
     {issuer}/protocol/openid-connect/token | jq -r .access_token)
   curl -si {broker}/v1/token -H 'Authorization: Bearer dev-static-token' \
     -H "X-Forwarded-Access-Token: $USER_TOKEN" \
     -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange -d audience=kagenti
=====================================================================
"#
    );
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
