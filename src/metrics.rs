//! Process-wide metrics, rendered in the Prometheus text exposition format (version 0.0.4) on
//! the admin listener's `/metrics`.
//!
//! Hand-rolled on atomics and small maps to keep dependencies lean. Every label value comes
//! from a fixed set: `&'static str` enums of the code, or a target name that exists in the
//! validated configuration (a fixed, operator-defined set). User ids, caller names and token
//! material never become labels.
//!
//! The counters are process-global (one broker per process in production); in-process tests
//! that start several brokers see the sum, which is why tests assert on increases only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter family keyed by its rendered label set (`a="x",b="y"`).
#[derive(Default)]
struct Family(Mutex<BTreeMap<String, u64>>);

impl Family {
    fn inc(&self, labels: String) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(labels).or_insert(0) += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, v) in m.iter() {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// One histogram series: cumulative bucket counts, count, sum in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, le) in BUCKETS.iter().enumerate() {
            let v = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {v}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The outbound calls whose latency is measured (label `request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpRequest {
    TokenExchange,
    ClientCredentials,
    OtherGrant,
    Jwks,
    Discovery,
}

impl IdpRequest {
    const ALL: [IdpRequest; 5] = [
        IdpRequest::TokenExchange,
        IdpRequest::ClientCredentials,
        IdpRequest::OtherGrant,
        IdpRequest::Jwks,
        IdpRequest::Discovery,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdpRequest::TokenExchange => "token_exchange",
            IdpRequest::ClientCredentials => "client_credentials",
            IdpRequest::OtherGrant => "other_grant",
            IdpRequest::Jwks => "jwks",
            IdpRequest::Discovery => "discovery",
        }
    }

    /// The label for a token-endpoint form with this `grant_type`.
    pub fn for_grant(grant_type: Option<&str>) -> Self {
        match grant_type {
            Some(crate::protocol::GRANT_TYPE_TOKEN_EXCHANGE) => IdpRequest::TokenExchange,
            Some(crate::protocol::GRANT_TYPE_CLIENT_CREDENTIALS) => IdpRequest::ClientCredentials,
            _ => IdpRequest::OtherGrant,
        }
    }
}

/// A handle on one set of metrics (cheap to clone; clones share the counters).
#[derive(Default, Clone)]
pub struct Metrics(std::sync::Arc<Inner>);

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The counters behind a [`Metrics`] handle.
#[derive(Default)]
pub struct Inner {
    token_requests: Family,
    cache_requests: Family,
    cache_evictions: Family,
    fallbacks: Family,
    auth_failures: Family,
    jwks_refreshes: Family,
    idp_results: Family,
    tester_runs: Family,
    idp_latency: [Histogram; 5],
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Inner {
    /// One token request that reached the token service: `target` must be a configured
    /// target name (or `"_unknown"`), `outcome` a fixed value.
    pub fn token_request(&self, target: &str, outcome: &'static str) {
        self.token_requests
            .inc(format!("target=\"{target}\",outcome=\"{outcome}\""));
    }

    /// A cache lookup: `cache` is `user` or `service`, `result` hit / miss / coalesced.
    pub fn cache_request(&self, cache: &'static str, result: &'static str) {
        self.cache_requests
            .inc(format!("cache=\"{cache}\",result=\"{result}\""));
    }

    /// A request answered from the negative cache (a recent IdP failure for the same key).
    pub fn negative_cache_hit(&self) {
        self.cache_requests
            .inc("cache=\"negative\",result=\"hit\"".to_owned());
    }

    /// A token-endpoint call refused locally because `keycloak.maxConcurrentRequests` calls
    /// were in flight (no latency observed: nothing was sent).
    pub fn idp_busy(&self, req: IdpRequest) {
        self.idp_results
            .inc(format!("request=\"{}\",result=\"busy\"", req.as_str()));
    }

    /// An entry left a cache for `cause` (`size`: evicted by the bound; `expired`).
    pub fn cache_eviction(&self, cause: &'static str) {
        self.cache_evictions.inc(format!("cause=\"{cause}\""));
    }

    pub fn fallback(&self, reason: &'static str) {
        self.fallbacks.inc(format!("reason=\"{reason}\""));
    }

    /// A refused caller credential of a fixed `kind` (`caller`, `user_token`, `none`,
    /// `admin_token`) with a fixed `reason` (e.g. `unknown`, `expired`, `bad_signature`).
    pub fn auth_failure(&self, kind: &'static str, reason: &'static str) {
        self.auth_failures
            .inc(format!("kind=\"{kind}\",reason=\"{reason}\""));
    }

    pub fn jwks_refresh(&self, ok: bool) {
        self.jwks_refreshes
            .inc(format!("result=\"{}\"", if ok { "ok" } else { "error" }));
    }

    /// One outbound call to the IdP: its latency and a fixed result class (`ok`, `rejected`,
    /// `timeout`, `network`, `protocol`, `discovery`, `error`).
    pub fn idp_request(&self, req: IdpRequest, took: Duration, result: &'static str) {
        if let Some(i) = IdpRequest::ALL.iter().position(|r| *r == req) {
            self.idp_latency[i].observe(took);
        }
        self.idp_results
            .inc(format!("request=\"{}\",result=\"{result}\"", req.as_str()));
    }

    pub fn tester_run(&self, outcome: &'static str) {
        self.tester_runs.inc(format!("outcome=\"{outcome}\""));
    }

    /// The exposition text. `gauges` are point-in-time values read by the caller (cache sizes,
    /// readiness), already with their label sets.
    pub fn render(&self, gauges: &[(&str, &str, &str, u64)]) -> String {
        let mut out = String::with_capacity(8192);
        let _ = writeln!(
            out,
            "# HELP token_broker_build_info Build information.\n# TYPE token_broker_build_info gauge\ntoken_broker_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let mut last = "";
        for (name, help, labels, v) in gauges {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        self.token_requests.render(
            &mut out,
            "token_broker_token_requests_total",
            "Token requests that reached the token service, by target and outcome.",
        );
        self.cache_requests.render(
            &mut out,
            "token_broker_cache_requests_total",
            "Cache lookups by cache and result (hit, miss, coalesced = joined an in-flight exchange).",
        );
        self.cache_evictions.render(
            &mut out,
            "token_broker_cache_evictions_total",
            "Cache entries removed by the size bound (size) or their lifetime (expired).",
        );
        self.fallbacks.render(
            &mut out,
            "token_broker_fallbacks_total",
            "Service-account tokens served instead of an exchanged one, by reason.",
        );
        self.auth_failures.render(
            &mut out,
            "token_broker_caller_auth_failures_total",
            "Refused caller credentials by kind.",
        );
        self.jwks_refreshes.render(
            &mut out,
            "token_broker_jwks_refreshes_total",
            "JWKS fetches by result.",
        );
        self.idp_results.render(
            &mut out,
            "token_broker_idp_requests_total",
            "Requests to the IdP by request and result.",
        );
        self.tester_runs.render(
            &mut out,
            "token_broker_tester_runs_total",
            "Exchange tester runs (admin API, web page) by outcome.",
        );
        let name = "token_broker_idp_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of requests to the IdP (token endpoint, JWKS, discovery).\n# TYPE {name} histogram"
        );
        for (i, r) in IdpRequest::ALL.iter().enumerate() {
            self.idp_latency[i].render(&mut out, name, &format!("request=\"{}\"", r.as_str()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.token_request("kagenti", "issued_user");
        m.token_request("kagenti", "issued_user");
        m.idp_request(IdpRequest::TokenExchange, Duration::from_millis(30), "ok");
        let text = m.render(&[(
            "token_broker_cache_entries",
            "Entries.",
            "cache=\"user\"",
            3,
        )]);
        assert!(text.contains(
            "token_broker_token_requests_total{target=\"kagenti\",outcome=\"issued_user\"} 2"
        ));
        assert!(text.contains(
            "token_broker_idp_request_duration_seconds_bucket{request=\"token_exchange\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "token_broker_idp_request_duration_seconds_bucket{request=\"token_exchange\",le=\"0.025\"} 0"
        ));
        assert!(text.contains("token_broker_cache_entries{cache=\"user\"} 3"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("token_broker_"), "{line}");
        }
    }
}
