//! Memory per entry of the verified-credential cache (issue 9 §5), measured, not estimated.
//!
//! Starts the dev IdP in process, logs alice in once to get a realistic Keycloak access token
//! (about 1 KB), then signs `N` copies of its claims that differ only in `jti` (so each is a
//! distinct cache key), verifies each once through `OidcVerifier::verify` (which fills the
//! cache), and reports the growth of the process's resident set size divided by `N`. The
//! tokens themselves are held in a list before the first reading, so the figure is what the
//! cache keeps per entry (entry, key, moka's bookkeeping, allocator overhead).
//!
//! Run: `cargo run --example verified_cache_bytes [N]` (default N = 20000; Linux only, it
//! reads `/proc/self/statm`). docs/benchmarks.md records the results.

// A measuring tool, not product code: it indexes its own samples and reads the wall clock.
#![allow(
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_types
)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use token_broker::clock::SystemClock;
use token_broker::idp::jwks::JwksCache;
use token_broker::inbound::oidc::OidcVerifier;
use token_broker::outbound::{Outbound, OutboundConfig};
use token_broker_devidp::{self as devidp, DevIdpConfig};

/// Resident set size in bytes (Linux `/proc/self/statm`, second field, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident field");
    pages * 4096
}

#[actix_web::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let idp = devidp::start(DevIdpConfig::contract(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(idp.token_endpoint())
        .form(&[
            ("grant_type", "password"),
            ("client_id", "dev-frontend"),
            ("username", "alice"),
            ("password", "alice"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sample = login["access_token"].as_str().unwrap().to_owned();
    let payload = sample.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();

    let outbound = Outbound::new(
        OutboundConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_concurrent_requests: 8,
            retries: 0,
        },
        token_broker::metrics::Metrics::default(),
    )
    .unwrap();
    let jwks = Arc::new(JwksCache::new(Arc::new(outbound), Duration::from_secs(10)));
    jwks.set_url(
        format!("{}/protocol/openid-connect/certs", idp.issuer())
            .parse()
            .unwrap(),
    );
    jwks.refresh().await.unwrap();
    let verifier = OidcVerifier::new(idp.issuer(), jwks, Arc::new(SystemClock));

    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let mut c = claims.clone();
            c["jti"] = serde_json::json!(format!("onrtro:measure-{i:08}"));
            idp.sign_jwt(&c)
        })
        .collect();
    // Warm-up outside the measurement: first-use allocations of moka, the JWKS, tracing.
    verifier.verify(&sample).await.unwrap();
    let before = rss_bytes();
    for t in &tokens {
        verifier.verify(t).await.unwrap();
    }
    let entries = verifier.verified_entries();
    let after = rss_bytes();
    let per_entry = after.saturating_sub(before) as f64 / n as f64;
    println!("token_bytes={}", sample.len());
    println!("entries={entries}");
    println!("rss_growth_bytes={}", after.saturating_sub(before));
    println!("bytes_per_entry={per_entry:.0}");
    println!(
        "at_100000_entries_mib={:.1}",
        per_entry * 100_000.0 / (1024.0 * 1024.0)
    );
    drop(tokens);
    idp.stop().await;
}
