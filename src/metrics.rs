//! The broker's metrics: one [`Metrics`] registry (`prometheus-client`) with typed label sets,
//! rendered on the admin listener's `/metrics` in the OpenMetrics text format.
//!
//! There is no global instance: `app` builds one [`Metrics`] per broker and hands clones to
//! the layers that record (the HTTP edge, the outbound layer, the token caches' eviction
//! listener). Every label value comes from a fixed set: the enums below, the `&'static str`
//! kinds of the code's error enums, or a target name that exists in the validated
//! configuration (a fixed, operator-defined set). User ids, caller names and token material
//! never become labels.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`Metrics::encode`]'s text (OpenMetrics 1.0, which Prometheus scrapes
/// natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Defines a label-value enum: its variants, their fixed label text ([`as_str`]) and the
/// `EncodeLabelValue` impl writing that text. (The crate's derive writes the Rust variant name
/// verbatim, `IssuedUser`; the documented values are snake_case.)
macro_rules! label_values {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values!(
    /// The outbound calls whose latency is measured (label `request`).
    IdpRequest {
        TokenExchange => "token_exchange",
        ClientCredentials => "client_credentials",
        OtherGrant => "other_grant",
        Jwks => "jwks",
        Discovery => "discovery",
        Introspection => "introspection",
        Probe => "probe",
    }
);

impl IdpRequest {
    const ALL: [IdpRequest; 7] = [
        IdpRequest::TokenExchange,
        IdpRequest::ClientCredentials,
        IdpRequest::OtherGrant,
        IdpRequest::Jwks,
        IdpRequest::Discovery,
        IdpRequest::Introspection,
        IdpRequest::Probe,
    ];

    /// The label for a token-endpoint form with this `grant_type`.
    pub fn for_grant(grant_type: Option<&str>) -> Self {
        match grant_type {
            Some(crate::protocol::GRANT_TYPE_TOKEN_EXCHANGE) => IdpRequest::TokenExchange,
            Some(crate::protocol::GRANT_TYPE_CLIENT_CREDENTIALS) => IdpRequest::ClientCredentials,
            _ => IdpRequest::OtherGrant,
        }
    }
}

label_values!(
    /// The result class of one outbound call (label `result`).
    IdpResult {
        Ok => "ok",
        Rejected => "rejected",
        ServerError => "server_error",
        Timeout => "timeout",
        Network => "network",
        Protocol => "protocol",
        Busy => "busy",
        Error => "error",
    }
);

label_values!(
    /// The result of the token service for one request (label `outcome`).
    TokenOutcome {
        IssuedUser => "issued_user",
        IssuedService => "issued_service",
        UnknownTarget => "unknown_target",
        PolicyDenied => "policy_denied",
        UserTokenRequired => "user_token_required",
        IdpUnavailable => "idp_unavailable",
        KeycloakRejected => "keycloak_rejected",
        ServiceAccountFailed => "service_account_failed",
        InvalidIdpAnswer => "invalid_idp_answer",
    }
);

label_values!(
    /// Which cache answered (label `cache`).
    CacheKind {
        User => "user",
        Service => "service",
        Negative => "negative",
    }
);

label_values!(
    /// How the cache answered (label `result`).
    CacheResult {
        Hit => "hit",
        Miss => "miss",
        Coalesced => "coalesced",
        Shared => "shared",
    }
);

label_values!(
    /// Why an entry left a cache (label `cause`).
    EvictionCause {
        Size => "size",
        Expired => "expired",
    }
);

label_values!(
    /// Why a service-account token replaced an exchanged one (label `reason`).
    FallbackReason {
        NoUserToken => "no_user_token",
        IdpUnavailable => "idp_unavailable",
        ExchangeUnsupported => "exchange_unsupported",
    }
);

label_values!(
    /// Which credential was refused (label `kind`).
    AuthKind {
        Caller => "caller",
        None => "none",
        UserToken => "user_token",
        AdminToken => "admin_token",
    }
);

label_values!(
    /// The result of a key-set fetch (label `result`).
    FetchResult {
        Ok => "ok",
        Error => "error",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenRequestLabels {
    target: String,
    outcome: TokenOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    cache: CacheKind,
    result: CacheResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EvictionLabels {
    cause: EvictionCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    reason: FallbackReason,
}

/// `reason` is the `kind()` of one of the code's error enums: a fixed set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    kind: AuthKind,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FetchLabels {
    result: FetchResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdpLabels {
    request: IdpRequest,
    result: IdpResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IdpRequestLabel {
    request: IdpRequest,
}

/// `outcome` is a tester report's fixed outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TesterLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheEntriesLabel {
    cache: CacheKind,
}

/// The exchange tester's report outcomes (`tester::Report::outcome`).
const TESTER_OUTCOMES: [&str; 3] = ["success", "keycloak_error", "idp_unreachable"];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The values read at scrape time rather than recorded as they happen.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// Entries in the user-token cache (approximate).
    pub user_cache_entries: u64,
    /// Discovery document and JWKS loaded.
    pub ready: bool,
    /// Configured targets.
    pub targets: usize,
}

/// One broker's metrics (cheap to clone; clones share the registry and its series).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    /// Tells this registry's counter handles from another's in [`HANDLES`].
    id: u64,
    registry: Registry,
    cache_entries: Family<CacheEntriesLabel, Gauge<i64, AtomicI64>>,
    ready: Gauge<i64, AtomicI64>,
    targets: Gauge<i64, AtomicI64>,
    client_auth_ok: Gauge<i64, AtomicI64>,
    token_requests: Family<TokenRequestLabels, Counter>,
    cache_requests: Family<CacheLabels, Counter>,
    cache_evictions: Family<EvictionLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    jwks_refreshes: Family<FetchLabels, Counter>,
    idp_results: Family<IdpLabels, Counter>,
    tester_runs: Family<TesterLabels, Counter>,
    idp_latency: Family<IdpRequestLabel, Histogram, fn() -> Histogram>,
    shared: SharedCacheMetrics,
}

type AtomicI64 = std::sync::atomic::AtomicI64;

/// Ids of [`Inner`] (several brokers share a process in tests).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The request counters' handles, per thread (issue 16): the two counters every request
/// increments are found in the thread's short list instead of through their family, whose
/// lookup allocated the label, hashed it and took the family's lock, an atomic write on a
/// line both workers share. A handle shares its value with the family's series; the lists
/// are bounded by the label sets, themselves bounded (configured targets × outcomes).
#[derive(Default)]
struct Handles {
    owner: u64,
    token: Vec<((Box<str>, TokenOutcome), Counter)>,
    cache: Vec<((CacheKind, CacheResult), Counter)>,
}

impl Handles {
    /// The handles of registry `id` (a thread that served another registry starts over).
    fn of(&mut self, id: u64) -> &mut Self {
        if self.owner != id {
            *self = Handles {
                owner: id,
                ..Handles::default()
            };
        }
        self
    }
}

/// Increments the handle in `list` that `is` picks, first taking it from its family
/// (`create`) when the thread has not used it yet.
fn inc_handle<K>(
    list: &mut Vec<(K, Counter)>,
    is: impl Fn(&K) -> bool,
    create: impl FnOnce() -> (K, Counter),
) {
    if let Some((_, c)) = list.iter().find(|(k, _)| is(k)) {
        c.inc();
        return;
    }
    let (k, c) = create();
    c.inc();
    list.push((k, c));
}

thread_local! {
    static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::new(Handles::default());
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered (in the order of the exposition).
    pub fn new() -> Self {
        // Help texts without a final period: the encoder appends one.
        let mut registry = Registry::default();
        let build_info = Family::<VersionLabel, Gauge<i64, AtomicI64>>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("token_broker_build_info", "Build information", build_info);
        let cache_entries = Family::default();
        registry.register(
            "token_broker_cache_entries",
            "Entries in the token caches (approximate)",
            cache_entries.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "token_broker_ready",
            "1 when the IdP discovery document and JWKS are loaded",
            ready.clone(),
        );
        let targets = Gauge::default();
        registry.register(
            "token_broker_targets",
            "Configured targets",
            targets.clone(),
        );
        // -1 until `serve`'s start-up probe has decided (never probed under other entry points).
        let client_auth_ok = Gauge::default();
        client_auth_ok.set(-1);
        registry.register(
            "token_broker_idp_client_auth_ok",
            "1 when the IdP accepted the broker's client authentication at start, 0 when it refused it, -1 when not determined",
            client_auth_ok.clone(),
        );
        // Counters: registered without `_total`; the exposition appends it to every series
        // (OpenMetrics: the family is `x`, its samples `x_total`).
        let token_requests = Family::default();
        registry.register(
            "token_broker_token_requests",
            "Token requests that reached the token service, by target and outcome",
            token_requests.clone(),
        );
        let cache_requests = Family::default();
        registry.register(
            "token_broker_cache_requests",
            "Cache lookups by cache and result (hit, miss, coalesced = joined an in-flight exchange)",
            cache_requests.clone(),
        );
        let cache_evictions = Family::default();
        registry.register(
            "token_broker_cache_evictions",
            "Cache entries removed by the size bound (size) or their lifetime (expired)",
            cache_evictions.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            "token_broker_fallbacks",
            "Service-account tokens served instead of an exchanged one, by reason",
            fallbacks.clone(),
        );
        let auth_failures = Family::default();
        registry.register(
            "token_broker_caller_auth_failures",
            "Refused caller credentials by kind",
            auth_failures.clone(),
        );
        let jwks_refreshes = Family::default();
        registry.register(
            "token_broker_jwks_refreshes",
            "JWKS fetches by result",
            jwks_refreshes.clone(),
        );
        let idp_results = Family::default();
        registry.register(
            "token_broker_idp_requests",
            "Requests to the IdP by request and result",
            idp_results.clone(),
        );
        let tester_runs = Family::default();
        registry.register(
            "token_broker_tester_runs",
            "Exchange tester runs (admin API, web page) by outcome",
            tester_runs.clone(),
        );
        let idp_latency: Family<IdpRequestLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        // Every request kind is exposed from the start, observed or not.
        for request in IdpRequest::ALL {
            let _ = idp_latency.get_or_create(&IdpRequestLabel { request });
        }
        registry.register(
            "token_broker_idp_request_duration_seconds",
            "Latency of requests to the IdP (token endpoint, JWKS, discovery)",
            idp_latency.clone(),
        );
        // The series of fixed label sets start at zero, so every family is exposed (and
        // `rate()` sees the first increase) before anything happened.
        for (cache, result) in [
            (CacheKind::User, CacheResult::Hit),
            (CacheKind::User, CacheResult::Miss),
            (CacheKind::User, CacheResult::Coalesced),
            (CacheKind::User, CacheResult::Shared),
            (CacheKind::Service, CacheResult::Hit),
            (CacheKind::Service, CacheResult::Miss),
            (CacheKind::Service, CacheResult::Coalesced),
            (CacheKind::Service, CacheResult::Shared),
            (CacheKind::Negative, CacheResult::Hit),
        ] {
            let _ = cache_requests.get_or_create(&CacheLabels { cache, result });
        }
        for cause in [EvictionCause::Size, EvictionCause::Expired] {
            let _ = cache_evictions.get_or_create(&EvictionLabels { cause });
        }
        for reason in [
            FallbackReason::NoUserToken,
            FallbackReason::IdpUnavailable,
            FallbackReason::ExchangeUnsupported,
        ] {
            let _ = fallbacks.get_or_create(&FallbackLabels { reason });
        }
        for result in [FetchResult::Ok, FetchResult::Error] {
            let _ = jwks_refreshes.get_or_create(&FetchLabels { result });
        }
        for outcome in TESTER_OUTCOMES {
            let _ = tester_runs.get_or_create(&TesterLabels { outcome });
        }
        let shared = SharedCacheMetrics::register(&mut registry);
        Metrics(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            shared,
            registry,
            cache_entries,
            ready,
            targets,
            client_auth_ok,
            token_requests,
            cache_requests,
            cache_evictions,
            fallbacks,
            auth_failures,
            jwks_refreshes,
            idp_results,
            tester_runs,
            idp_latency,
        }))
    }

    /// The start-up client-authentication probe's verdict (`None`: not determined).
    pub fn idp_client_auth(&self, ok: Option<bool>) {
        self.0.client_auth_ok.set(match ok {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        });
    }

    /// One request that reached the token service (`/v1/token`, or a proxied call): `target`
    /// must be a configured target name (or `"_unknown"`).
    pub fn token_request(&self, target: &str, outcome: TokenOutcome) {
        let id = self.0.id;
        HANDLES.with_borrow_mut(|h| {
            inc_handle(
                &mut h.of(id).token,
                |(t, o)| *o == outcome && &**t == target,
                || {
                    let labels = TokenRequestLabels {
                        target: target.to_owned(),
                        outcome,
                    };
                    let c = self.0.token_requests.get_or_create(&labels).clone();
                    ((target.into(), outcome), c)
                },
            );
        });
    }

    /// A cache lookup that served a token, or a negative-cache hit.
    pub fn cache_request(&self, cache: CacheKind, result: CacheResult) {
        let id = self.0.id;
        HANDLES.with_borrow_mut(|h| {
            inc_handle(
                &mut h.of(id).cache,
                |k| *k == (cache, result),
                || {
                    let labels = CacheLabels { cache, result };
                    (
                        (cache, result),
                        self.0.cache_requests.get_or_create(&labels).clone(),
                    )
                },
            );
        });
    }

    /// A token-endpoint call refused locally because `keycloak.maxConcurrentRequests` calls
    /// were in flight (no latency observed: nothing was sent).
    pub fn idp_busy(&self, request: IdpRequest) {
        self.0
            .idp_results
            .get_or_create(&IdpLabels {
                request,
                result: IdpResult::Busy,
            })
            .inc();
    }

    /// An entry left a cache.
    pub fn cache_eviction(&self, cause: EvictionCause) {
        self.0
            .cache_evictions
            .get_or_create(&EvictionLabels { cause })
            .inc();
    }

    pub fn fallback(&self, reason: FallbackReason) {
        self.0
            .fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }

    /// A refused credential of `kind` with a fixed `reason` (e.g. `invalid`, `expired`).
    pub fn auth_failure(&self, kind: AuthKind, reason: &'static str) {
        self.0
            .auth_failures
            .get_or_create(&AuthLabels { kind, reason })
            .inc();
    }

    pub fn jwks_refresh(&self, ok: bool) {
        let result = if ok {
            FetchResult::Ok
        } else {
            FetchResult::Error
        };
        self.0
            .jwks_refreshes
            .get_or_create(&FetchLabels { result })
            .inc();
    }

    /// One outbound call to the IdP: its latency and result class.
    pub fn idp_request(&self, request: IdpRequest, took: Duration, result: IdpResult) {
        self.0
            .idp_latency
            .get_or_create(&IdpRequestLabel { request })
            .observe(took.as_secs_f64());
        self.0
            .idp_results
            .get_or_create(&IdpLabels { request, result })
            .inc();
    }

    /// One exchange-tester run with its report's fixed `outcome`.
    pub fn tester_run(&self, outcome: &'static str) {
        self.0
            .tester_runs
            .get_or_create(&TesterLabels { outcome })
            .inc();
    }

    /// The exposition text (OpenMetrics, [`CONTENT_TYPE`]), with the scrape-time values of
    /// `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let m = &self.0;
        m.cache_entries
            .get_or_create(&CacheEntriesLabel {
                cache: CacheKind::User,
            })
            .set(i64::try_from(now.user_cache_entries).unwrap_or(i64::MAX));
        m.ready.set(i64::from(now.ready));
        m.targets
            .set(i64::try_from(now.targets).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail; an encoder error would leave a partial text,
        // which the scraper rejects (no `# EOF`).
        let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        out
    }
}

label_values!(
    /// Results of shared-cache (Redis) operations (label `result`).
    SharedResult {
        Hit => "hit",
        Miss => "miss",
        Error => "error",
        Undecryptable => "undecryptable",
        WriteError => "write_error",
    }
);

label_values!(
    /// Cluster-wide single-flight events (label `event`).
    LockEvent {
        Acquired => "acquired",
        Waited => "waited",
        Takeover => "takeover",
        WaitTimeout => "wait_timeout",
        SharedError => "shared_error",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SharedLabels {
    result: SharedResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LockLabels {
    event: LockEvent,
}

/// The shared cache's series (`cache.shared`, issue 15); registered always, zero without it.
struct SharedCacheMetrics {
    requests: Family<SharedLabels, Counter>,
    latency: Histogram,
    locks: Family<LockLabels, Counter>,
}

impl SharedCacheMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<SharedLabels, Counter>::default();
        for result in [
            SharedResult::Hit,
            SharedResult::Miss,
            SharedResult::Error,
            SharedResult::Undecryptable,
            SharedResult::WriteError,
        ] {
            let _ = requests.get_or_create(&SharedLabels { result });
        }
        registry.register(
            "token_broker_shared_cache_requests",
            "Shared-cache (Redis) lookups and writes by result (error = Redis failed or timed out; undecryptable = a value that did not authenticate)",
            requests.clone(),
        );
        let latency = latency_histogram();
        registry.register(
            "token_broker_shared_cache_duration_seconds",
            "Latency of shared-cache lookups (Redis round trip and decryption)",
            latency.clone(),
        );
        let locks = Family::<LockLabels, Counter>::default();
        for event in [
            LockEvent::Acquired,
            LockEvent::Waited,
            LockEvent::Takeover,
            LockEvent::WaitTimeout,
            LockEvent::SharedError,
        ] {
            let _ = locks.get_or_create(&LockLabels { event });
        }
        registry.register(
            "token_broker_shared_lock",
            "Cluster-wide single-flight: locks acquired, waits served by another replica, takeovers of an expired lock, waits that gave up, shared errors",
            locks.clone(),
        );
        SharedCacheMetrics {
            requests,
            latency,
            locks,
        }
    }
}

impl Metrics {
    /// One shared-cache operation's result.
    pub fn shared_cache(&self, result: SharedResult) {
        self.0
            .shared
            .requests
            .get_or_create(&SharedLabels { result })
            .inc();
    }

    /// The latency of one shared-cache lookup.
    pub fn shared_cache_latency(&self, took: Duration) {
        self.0.shared.latency.observe(took.as_secs_f64());
    }

    /// One single-flight event.
    pub fn shared_lock(&self, event: LockEvent) {
        self.0
            .shared
            .locks
            .get_or_create(&LockLabels { event })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread counter handles never mix two registries served by one thread, and
    /// every increment lands in its own registry's series.
    #[test]
    fn counter_handles_stay_with_their_registry() {
        let snap = || Snapshot {
            user_cache_entries: 0,
            ready: true,
            targets: 1,
        };
        let (a, b) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            a.token_request("kagenti", TokenOutcome::IssuedUser);
            b.token_request("kagenti", TokenOutcome::IssuedUser);
            a.cache_request(CacheKind::User, CacheResult::Hit);
        }
        a.token_request("kagenti", TokenOutcome::PolicyDenied);
        b.token_request("sonataflow", TokenOutcome::IssuedUser);
        let (ta, tb) = (a.encode(snap()), b.encode(snap()));
        for (text, line) in [
            (&ta, "{target=\"kagenti\",outcome=\"issued_user\"} 3"),
            (&ta, "{target=\"kagenti\",outcome=\"policy_denied\"} 1"),
            (&tb, "{target=\"kagenti\",outcome=\"issued_user\"} 3"),
            (&tb, "{target=\"sonataflow\",outcome=\"issued_user\"} 1"),
        ] {
            assert!(
                text.contains(&format!("token_broker_token_requests_total{line}")),
                "{line}: {text}"
            );
        }
        assert!(ta.contains("token_broker_cache_requests_total{cache=\"user\",result=\"hit\"} 3"));
        assert!(!tb.contains("result=\"hit\"} 3"), "{tb}");
        assert!(!ta.contains("sonataflow"), "{ta}");
    }

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.token_request("kagenti", TokenOutcome::IssuedUser);
        m.token_request("kagenti", TokenOutcome::IssuedUser);
        m.idp_request(
            IdpRequest::TokenExchange,
            Duration::from_millis(30),
            IdpResult::Ok,
        );
        m.auth_failure(AuthKind::UserToken, "expired");
        let text = m.encode(Snapshot {
            user_cache_entries: 3,
            ready: true,
            targets: 2,
        });
        assert!(text.contains(
            "token_broker_token_requests_total{target=\"kagenti\",outcome=\"issued_user\"} 2"
        ));
        assert!(text.contains(
            "token_broker_idp_request_duration_seconds_bucket{le=\"0.05\",request=\"token_exchange\"} 1"
        ) || text.contains(
            "token_broker_idp_request_duration_seconds_bucket{request=\"token_exchange\",le=\"0.05\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "token_broker_idp_request_duration_seconds_bucket{request=\"token_exchange\",le=\"0.025\"} 0"
            ) || text.contains(
                "token_broker_idp_request_duration_seconds_bucket{le=\"0.025\",request=\"token_exchange\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains(
            "token_broker_caller_auth_failures_total{kind=\"user_token\",reason=\"expired\"} 1"
        ));
        assert!(text.contains("token_broker_cache_entries{cache=\"user\"} 3"));
        assert!(text.contains("token_broker_ready 1\n"));
        assert!(text.contains("token_broker_build_info{version=\""));
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("token_broker_"), "{line}");
        }
    }
}
