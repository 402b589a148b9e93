//! `token-broker check-config --config FILE --online`: after the static checks, contacts the
//! IdP and reports each probe of [`crate::idp::probe`] as `ok`, `failed` (with the fix) or
//! `unknown`: discovery (the issuer matches), the JWKS, the broker's client authentication,
//! and for each target whether the IdP knows its audience. Nothing is issued or changed at the
//! IdP. Exit status 0 when nothing failed, 2 when a probe failed.

use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::idp::IdpClient;
use crate::idp::jwks::JwksCache;
use crate::idp::probe::{Probe, Verdict};
use crate::outbound::{Outbound, OutboundConfig};

/// Runs every probe against the configured IdP and prints one line per probe to stdout.
pub async fn run(cfg: &Config) -> ExitCode {
    let probes = probes(cfg).await;
    // The configured issuer is not echoed (no configured value is printed: substitution can
    // put a secret into any key); the probes name what the IdP published.
    println!("online check of the IdP at keycloak.issuer:");
    for p in &probes {
        println!("{}", line(p));
    }
    if probes.iter().any(|p| p.verdict == Verdict::Failed) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// The probes, in order; a failed discovery leaves the rest unknown rather than failed.
pub async fn probes(cfg: &Config) -> Vec<Probe> {
    let kc = &cfg.keycloak;
    let outbound = match Outbound::new(OutboundConfig::from(kc), crate::metrics::Metrics::new()) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            return vec![Probe {
                name: "http client".into(),
                verdict: Verdict::Failed,
                detail: e.to_string(),
                fix: "check the TLS set-up of this host".into(),
            }];
        }
    };
    let jwks = Arc::new(JwksCache::new(
        outbound.clone(),
        kc.jwks_min_refresh_interval,
    ));
    let idp = IdpClient::new(kc, outbound, jwks);
    let mut out = vec![idp.probe_discovery().await, idp.probe_jwks().await];
    if !idp.is_discovered() {
        return out;
    }
    out.push(idp.probe_client_auth().await);
    for (name, t) in &cfg.targets {
        out.push(idp.probe_audience(name, &t.audience).await);
    }
    out
}

/// `  ok       name: detail` (+ `— fix: …` unless ok).
pub fn line(p: &Probe) -> String {
    let mut s = format!("  {:<8} {}: {}", p.verdict.as_str(), p.name, p.detail);
    if p.verdict != Verdict::Ok && !p.fix.is_empty() {
        s.push_str(" — fix: ");
        s.push_str(&p.fix);
    }
    s
}
