//! `token-broker-devidp` (DEVELOPMENT AND TESTS ONLY): serves the dev IdP's contract realm
//! (`DevIdpConfig::contract()` plus the public `dev-frontend-no-audience` client, as
//! `token-broker dev` and config/keycloak/dev-realm.json have it) on its own, with the switches
//! a second Keycloak server would need. `scripts/conformance` runs it next to `token-broker dev`
//! the way it runs two Keycloak servers: one with legacy token exchange V1 on (V1 changes V2's
//! answers, so the main dev IdP keeps it off), and one whose tokens live one second (to present
//! an expired subject token).
//!
//!   token-broker-devidp --listen 127.0.0.1:7380 [--v1] [--access-token-lifespan SECS]
//!
//! It prints `listening http://ADDR/realms/dev` once bound and runs until interrupted.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use token_broker_devidp::{DevClient, DevIdpConfig};

const USAGE: &str =
    "usage: token-broker-devidp --listen ADDR [--v1] [--access-token-lifespan SECS]";

struct Args {
    listen: SocketAddr,
    v1: bool,
    lifespan: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut v1 = false;
    let mut lifespan = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs an address")?;
                listen = Some(
                    v.parse()
                        .map_err(|_| format!("bad --listen address '{v}'"))?,
                );
            }
            "--v1" => v1 = true,
            "--access-token-lifespan" => {
                let v = it.next().ok_or("--access-token-lifespan needs seconds")?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad --access-token-lifespan '{v}'"))?;
                lifespan = Some(Duration::from_secs(secs));
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        v1,
        lifespan,
    })
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("token-broker-devidp: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = DevIdpConfig::contract();
    config.token_exchange_v1_enabled = args.v1;
    if let Some(l) = args.lifespan {
        config.access_token_lifespan = l;
    }
    let mut no_aud = DevClient::public("dev-frontend-no-audience");
    no_aud.direct_access_grants = true;
    config.clients.push(no_aud);
    let idp = match token_broker_devidp::start(config, args.listen).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("token-broker-devidp: cannot serve on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening {} (DEVELOPMENT ONLY: public users, passwords and secrets)",
        idp.issuer()
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("token-broker-devidp: cannot wait for a signal: {e}");
    }
    idp.stop().await;
    ExitCode::SUCCESS
}
