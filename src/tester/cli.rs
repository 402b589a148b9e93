//! `token-broker exchange --config FILE --target T --subject-token-file F [--explain]`: the
//! exchange tester in the terminal. It builds its own IdP client from the configuration and
//! runs [`Tester::run`] — the same logic as `POST /admin/exchange`. Prints the decoded result
//! (never the token itself) or Keycloak's error and the hint; `--explain` adds the request as
//! sent (secrets redacted), Keycloak's literal answer and the checklist.
//!
//! Exit status: 0 = Keycloak issued a token, 1 = bad configuration or input, 2 = Keycloak
//! refused or could not be reached.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Report, Tester};
use crate::clock::{Clock, SystemClock};
use crate::idp::IdpClient;
use crate::idp::jwks::JwksCache;
use crate::inbound::oidc::OidcVerifier;
use crate::outbound::{Outbound, OutboundConfig};

/// Runs the command; everything it prints goes to stdout, problems to stderr.
pub async fn run(config: &Path, target: &str, token_file: &Path, explain: bool) -> ExitCode {
    let cfg = match crate::config::load_file(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {} error(s)", config.display(), errors.issues.len());
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let token = match std::fs::read_to_string(token_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "token-broker exchange: cannot read {}: {}",
                token_file.display(),
                e.kind()
            );
            return ExitCode::from(1);
        }
    };
    let kc = &cfg.keycloak;
    let outbound = match Outbound::new(OutboundConfig::from(kc), crate::metrics::Metrics::new()) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("token-broker exchange: {e}");
            return ExitCode::from(1);
        }
    };
    let jwks = Arc::new(JwksCache::new(
        outbound.clone(),
        kc.jwks_min_refresh_interval,
    ));
    let idp = IdpClient::new(kc, outbound, jwks.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier = OidcVerifier::new(idp.issuer().to_owned(), jwks, clock.clone()).with_rules(
        crate::inbound::oidc::UserClaimRules {
            token_type_check: cfg.user_token.token_type_check,
            ..Default::default()
        },
    );
    if let Err(e) = idp.discover().await {
        eprintln!("token-broker exchange: {e}");
    }
    let tester = Tester {
        config: &cfg,
        idp: &idp,
        verifier: &verifier,
        now: clock.now_unix(),
    };
    match tester.run(target, &token).await {
        Ok(report) => {
            print!("{}", render(&report, explain));
            if report.outcome == "success" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("token-broker exchange: {e}");
            ExitCode::from(1)
        }
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The text the command prints.
pub fn render(r: &Report, explain: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.summary);
    if let Some(h) = &r.hint {
        let _ = writeln!(out, "hint: {h}");
    }
    if let Some(d) = &r.result_claims {
        let _ = writeln!(out, "\nresult header:\n{}", pretty(&d.header));
        let _ = writeln!(out, "result claims:\n{}", pretty(&d.claims));
    }
    if explain {
        if let Some(req) = &r.request {
            let _ = writeln!(out, "\nrequest sent:\n{} {}", req.method, req.url);
            for [k, v] in &req.headers {
                let _ = writeln!(out, "  {k}: {v}");
            }
            for [k, v] in &req.form {
                let _ = writeln!(out, "  {k}={v}");
            }
        }
        if let Some(resp) = &r.response {
            let _ = writeln!(
                out,
                "\nKeycloak answered HTTP {}:\n{}",
                resp.status,
                pretty(&resp.body)
            );
        }
        if let Some(d) = &r.subject_claims {
            let _ = writeln!(out, "\nsubject header:\n{}", pretty(&d.header));
            let _ = writeln!(out, "subject claims:\n{}", pretty(&d.claims));
        }
        let _ = writeln!(out, "\nchecklist:");
        for c in &r.checks {
            let mark = match c.ok {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None if c.status == "n/a" => "N/A ",
                None => " ?  ",
            };
            let _ = writeln!(out, "  [{mark}] {}: {}", c.name, c.detail);
            if c.ok == Some(false) {
                let _ = writeln!(out, "         fix: {}", c.fix);
            }
        }
    }
    out
}
