//! The validated configuration: every field typed, defaulted and checked.
//!
//! Nothing here parses text; `config::load` turns a YAML document into these types and is the
//! only constructor used outside tests. Everything downstream may rely on the invariants
//! documented on each field (e.g. a target name matches `^[a-z0-9][a-z0-9-]*$`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// RFC 8693 §3 token type URNs the broker can request from Keycloak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `urn:ietf:params:oauth:token-type:access_token`
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:id_token`
    IdToken,
}

impl TokenType {
    pub const ACCESS_TOKEN_URN: &'static str = crate::protocol::TOKEN_TYPE_ACCESS_TOKEN;
    pub const ID_TOKEN_URN: &'static str = crate::protocol::TOKEN_TYPE_ID_TOKEN;

    pub fn urn(self) -> &'static str {
        match self {
            TokenType::AccessToken => Self::ACCESS_TOKEN_URN,
            TokenType::IdToken => Self::ID_TOKEN_URN,
        }
    }

    pub fn from_urn(s: &str) -> Option<Self> {
        match s {
            Self::ACCESS_TOKEN_URN => Some(TokenType::AccessToken),
            Self::ID_TOKEN_URN => Some(TokenType::IdToken),
            _ => None,
        }
    }
}

/// How the broker authenticates itself at Keycloak's token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with form-urlencoded id and secret (RFC 6749 §2.3.1). Default.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// `keycloak.profile`: which IdP dialect the broker speaks (docs/configuration.md "IdP profile").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpProfile {
    /// Keycloak (default): its `typ: Bearer` claim on access tokens, its error hints and tester
    /// checklist, its V1 impersonation; a warning when the issuer has no realm path.
    Keycloak,
    /// Any RFC 8693 authorization server: RFC 9068 token typing, no Keycloak-only texts or
    /// features.
    Generic,
}

/// `userToken.tokenTypeCheck`: how a user's JWT shows it is an access token (not an ID or
/// refresh token), checked before anything is sent to the IdP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenTypeCheck {
    #[default]
    /// `keycloak` (default of the keycloak profile): Keycloak's private claim `typ` equals
    /// `Bearer` (case-insensitive, as Keycloak compares it).
    KeycloakClaim,
    /// `at+jwt`: the JOSE header `typ` is `at+jwt` or `application/at+jwt` (RFC 9068 §2.1, §4).
    AtJwt,
    /// `jwt` (default of the generic profile): the header `typ` is `at+jwt`,
    /// `application/at+jwt`, `JWT` or absent, and a `typ` claim, if present, is `Bearer` (so a
    /// Keycloak ID or refresh token is still refused).
    Jwt,
}

/// `targets.<name>.issuedTokenAudience`: what `aud` a token the IdP issues for the target needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IssuedAudience {
    /// `required` (default): `aud` contains the target's audience.
    #[default]
    Required,
    /// `may_be_absent`: the IdP omits `aud`; a token without it is accepted (a token *with* an
    /// `aud` must still contain the audience, and a user's token must still carry the user's
    /// `sub`). Logged as a warning at start.
    MayBeAbsent,
}

/// `targets.<name>.issuedTokenFormat`: what a token the IdP issues for the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IssuedFormat {
    /// `jwt` (default): a JWT signed by a key of the issuer's JWKS, all checks applied.
    #[default]
    Jwt,
    /// `opaque`: not decoded, so its signature, `aud` and `sub` are not checked; its lifetime
    /// is the answer's `expires_in` (required), capped like any other. Logged at start.
    Opaque,
}

/// `userToken.verify`: how the broker verifies a user's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserTokenVerify {
    /// `jwks` (default): locally, against the issuer's JWKS.
    #[default]
    Jwks,
    /// `introspection`: RFC 7662 token introspection at the IdP's `introspection_endpoint`
    /// (from discovery), for opaque or foreign user tokens; a positive answer is remembered no
    /// longer than the token's `exp`.
    Introspection,
}

/// What a target does when no user token can be exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// Serve the broker's own client-credentials token for the target.
    ServiceAccount,
    /// Refuse: 401 without a user credential, 502 when the exchange fails.
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub keycloak: KeycloakConfig,
    pub user_token: UserTokenConfig,
    /// `backend.auth.externalAccess` entries, then one `legacy` entry per `backend.auth.keys`
    /// item (subject `external:backstage-plugin`), in Backstage's order (docs/reference/backstage-tokens.md §3.4).
    pub external_access: Vec<ExternalAccessEntry>,
    /// `backstage`, `backend.baseUrl` and `discovery`: which Backstage the broker trusts.
    pub backstage: BackstageConfig,
    /// `assertion`: the broker's RFC 7523 assertion signer; required when a target uses
    /// `userMapping: jwt_authorization_grant`.
    pub assertion: Option<AssertionConfig>,
    pub cache: CacheConfig,
    /// Keyed by target name (`^[a-z0-9][a-z0-9-]*$`, at most 64 characters).
    pub targets: BTreeMap<String, TargetConfig>,
    pub logging: LoggingConfig,
    pub proxy: ProxyConfig,
    /// `telemetry`: trace export (OpenTelemetry over OTLP/HTTP); off unless an endpoint is set
    /// here or in the environment.
    pub telemetry: TelemetryConfig,
}

/// YAML `server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.listen`, default `0.0.0.0:7070`.
    pub listen: SocketAddr,
    /// `server.workers`, default: number of CPUs (at least 1).
    pub workers: Option<usize>,
    /// `server.maxBodyBytes`, default 65536; request bodies above it get 413.
    pub max_body_bytes: usize,
    /// `server.maxHeaderBytes`, default 65536 (a 32 KiB user token fits): a request to the public listener whose headers
    /// (names + values) are larger gets 431 before any credential is looked at.
    pub max_header_bytes: usize,
    /// `server.drainDelay`, default 0s: on SIGTERM/Ctrl-C, `/readyz` turns 503 this long
    /// before the listeners stop accepting (time for a load balancer to notice).
    pub drain_delay: Duration,
    /// `server.shutdownTimeout`, default 30s: how long in-flight requests and open streams may
    /// run after the listeners stopped accepting.
    pub shutdown_timeout: Duration,
    /// `server.bodyReadTimeout`, default 10s: the whole body of a `/v1/token` or
    /// `/admin/exchange` request, and the read-ahead of a proxied body, must arrive within this
    /// time once the broker starts reading it (after the headers were authenticated); otherwise
    /// 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// `server.clientDisconnectTimeout`, default 1s (0 = off): after an answer sent before the
    /// request body was read, how long the connection may linger so the client can read the
    /// answer before it is closed.
    pub client_disconnect_timeout: Duration,
    /// `server.maxConnections`, default 1024: connections open at once on each listener,
    /// split evenly over the workers (rounded up); beyond it new connections wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
}

/// YAML `admin`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `admin.listen`, default `127.0.0.1:7071`; `admin.enabled: false` gives `None`.
    pub listen: Option<SocketAddr>,
    /// `admin.token` (secret): Bearer credential for the tester and admin API; none = those are off.
    pub token: Option<SecretString>,
}

/// YAML `keycloak`.
#[derive(Debug, Clone)]
pub struct KeycloakConfig {
    /// `keycloak.issuer` (required), parsed: the IdP's issuer, e.g.
    /// `https://kc.example.com/realms/rhdh` or `https://idp.example.com/`.
    pub issuer: Url,
    /// `keycloak.issuer` exactly as written (a trailing `/` kept, none added): what the
    /// discovery document's `issuer` and every token's `iss` must equal byte for byte.
    pub issuer_id: String,
    /// `keycloak.profile`, default `keycloak`: the IdP dialect ([`IdpProfile`]).
    pub profile: IdpProfile,
    /// `keycloak.clientId` (required): the broker's confidential client.
    pub client_id: String,
    /// `keycloak.clientSecret` (required, secret).
    pub client_secret: SecretString,
    /// `keycloak.clientAuthMethod`, default `client_secret_basic`.
    pub client_auth_method: ClientAuthMethod,
    /// `keycloak.connectTimeout`, default 2s.
    pub connect_timeout: Duration,
    /// `keycloak.timeout`, default 10s: total time of one call to discovery, JWKS or token endpoint.
    pub timeout: Duration,
    /// `keycloak.jwksMinRefreshInterval`, default 10s: an unknown `kid` refetches the JWKS at
    /// most this often.
    pub jwks_min_refresh_interval: Duration,
    /// `keycloak.maxConcurrentRequests`, default 64: token-endpoint calls in flight at once;
    /// a miss beyond it fails fast (503 `temporarily_unavailable` or the target's fallback).
    pub max_concurrent_requests: usize,
    /// `keycloak.retries`, default 2 (at most 5): extra attempts after a connection failure
    /// (never after an answer or a timeout), with jittered exponential backoff capped at 1 s.
    pub retries: u32,
}

/// YAML `userToken`.
#[derive(Debug, Clone)]
pub struct UserTokenConfig {
    /// `userToken.header`, default `X-Forwarded-Access-Token`; a valid HTTP header name.
    pub header: String,
    /// `userToken.matchClaim`, default `preferred_username`: the Keycloak token claim that must
    /// name the same person as a Backstage user principal.
    pub match_claim: String,
    /// `userToken.matchValue`, default `{name}`: template over the Backstage entity ref
    /// (`{ref}`, `{kind}`, `{namespace}`, `{name}`) the claim must equal. Entity-ref parts the
    /// template does not name must have their defaults (kind `user`, namespace `default`), and
    /// two placeholders are always separated by a character no entity-ref part can contain, so
    /// the expanded value names exactly one entity.
    pub match_value: String,
    /// `userToken.allowedClients`, default empty: the Keycloak clients (`azp`) whose users'
    /// tokens the broker accepts. Empty = no Keycloak user token is accepted (fail closed).
    /// Never contains `keycloak.clientId`: the broker's own tokens are never user tokens.
    pub allowed_clients: Vec<String>,
    /// `userToken.allowWithoutCaller`, default false: a request with a user token but no
    /// caller credential is the user calling through a trusted proxy (oauth2-proxy), principal
    /// `oidc:<sub>`. Off = such a request is 401. On requires `allowed_clients` non-empty.
    pub allow_without_caller: bool,
    /// `userToken.tokenTypeCheck`, default `keycloak` under the keycloak profile, `jwt` under
    /// the generic one ([`TokenTypeCheck`]).
    pub token_type_check: TokenTypeCheck,
    /// `userToken.verify`, default `jwks` ([`UserTokenVerify`]).
    pub verify: UserTokenVerify,
}

/// One entry of YAML `backend.auth.externalAccess` (Backstage's shape).
#[derive(Debug, Clone)]
pub struct ExternalAccessEntry {
    pub kind: ExternalAccessKind,
    /// `accessRestrictions`; `None` when absent or empty (= unrestricted).
    pub access_restrictions: Option<Vec<AccessRestriction>>,
}

#[derive(Debug, Clone)]
pub enum ExternalAccessKind {
    /// `type: static`: `options.token` (secret, `^\S+$`, at least 8 characters) and
    /// `options.subject` (`^\S+$`).
    Static {
        token: SecretString,
        subject: String,
    },
    /// `type: jwks`: tokens of an external IdP, verified with the keys at `options.url`.
    Jwks {
        /// `options.url` (`^\S+$`, http or https).
        url: Url,
        /// `options.algorithm`, `options.issuer`, `options.audience`: split on spaces and
        /// commas; empty = not checked (Backstage helpers.ts).
        algorithms: Vec<String>,
        issuers: Vec<String>,
        audiences: Vec<String>,
        /// `options.subjectPrefix`: subject is `external:<prefix>:<sub>` or `external:<sub>`.
        subject_prefix: Option<String>,
    },
    /// `type: legacy` (and each `backend.auth.keys` item): HS256 with a shared secret.
    Legacy {
        /// `options.secret` (`^\S+$`), as written; decoded leniently as base64url when used.
        secret: SecretString,
        /// `options.subject`; `external:backstage-plugin` for `backend.auth.keys`.
        subject: String,
    },
}

/// One `accessRestrictions` item: `{plugin, permission?, permissionAttribute?: {action?}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRestriction {
    pub plugin: String,
    /// `permission`: string or list, split on spaces and commas; `None` = no name restriction.
    pub permission_names: Option<Vec<String>>,
    /// `permissionAttribute.action`: subset of create/read/update/delete; `None` = unrestricted.
    pub actions: Option<Vec<String>>,
}

/// YAML `cache`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `cache.maxEntries`, default 10000 (at least 1).
    pub max_entries: u64,
    /// `cache.safetyMargin`, default 30s: a token is served from cache only while it has more
    /// than this left; one with less left on arrival is not cached.
    pub safety_margin: Duration,
    /// `cache.negativeTtl`, default 5s (0 = off): a failed exchange is remembered this long
    /// per subject credential digest, so repeats fail fast without calling Keycloak.
    pub negative_ttl: Duration,
    /// `cache.key`, default `token`: what identifies a user's exchange in the cache.
    pub key: CacheKeyMode,
    /// `cache.refreshAhead`, default off: the last part of an entry's life (percent, 1–50) in
    /// which a read renews it once in the background.
    pub refresh_ahead_percent: Option<u8>,
    /// `cache.shared`: the second-level cache in Redis shared by every replica; `None` = each
    /// replica caches on its own.
    pub shared: Option<SharedCacheConfig>,
}

/// `cache.key` (issue 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKeyMode {
    /// The subject token's digest: every token is its own entry (a refreshed token misses).
    Token,
    /// The verified `iss`, `sub`, `sid` and `azp`: every token of one Keycloak session shares
    /// the entry; a token without `sid` falls back to `Token`.
    Session,
}

/// YAML `cache.shared`: Redis (or Valkey) as a second-level cache and cluster-wide
/// single-flight (docs/operations.md "Several replicas").
#[derive(Clone)]
pub struct SharedCacheConfig {
    /// `cache.shared.url` (required): `redis://host[:port][/db]` or `rediss://` (TLS); no user
    /// name or password in it (they are `username` / `password`).
    pub url: Url,
    /// `cache.shared.username`: the Redis ACL user (`AUTH username password`).
    pub username: Option<String>,
    /// `cache.shared.password` (secret).
    pub password: Option<SecretString>,
    /// `cache.shared.keyPrefix`, default `token-broker:`.
    pub key_prefix: String,
    /// `cache.shared.encryptionKeys` (at least one): newest first; entries are sealed with the
    /// first, every one still opens entries.
    pub encryption_keys: Vec<SharedCacheKey>,
    /// `cache.shared.timeout`, default 250ms: one Redis command, connecting included; past it
    /// the command counts as failed and the request goes on without Redis.
    pub timeout: Duration,
    /// `cache.shared.lockTtl`, default 15s: the single-flight lock's lifetime, after which a
    /// waiter takes over from a holder that died.
    pub lock_ttl: Duration,
    /// `cache.shared.lockWait`, default 15s: the longest a request waits for another
    /// replica's exchange before it exchanges itself.
    pub lock_wait: Duration,
}

impl std::fmt::Debug for SharedCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheConfig")
            .field("url", &self.url.as_str())
            .field("username", &self.username)
            .field("key_prefix", &self.key_prefix)
            .field("encryption_keys", &self.encryption_keys)
            .finish_non_exhaustive()
    }
}

/// One `cache.shared.encryptionKeys` item.
#[derive(Clone)]
pub struct SharedCacheKey {
    /// `id`: 1-32 characters of `[A-Za-z0-9._-]`, unique; stored beside each value.
    pub id: String,
    /// `key` (secret): 32 bytes, base64 in the configuration.
    pub key: std::sync::Arc<secrecy::SecretBox<[u8; 32]>>,
}

impl std::fmt::Debug for SharedCacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One entry of YAML `targets`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// `targets.<name>.audience` (required): Keycloak client id the token is for.
    pub audience: String,
    /// `targets.<name>.scopes`, default empty: scopes requested when the caller names none.
    pub scopes: Vec<String>,
    /// `targets.<name>.allowedScopes`, default empty: extra scopes a caller may ask for.
    pub allowed_scopes: Vec<String>,
    /// `targets.<name>.requestedTokenType`, default access token URN.
    pub requested_token_type: TokenType,
    /// `targets.<name>.fallback`, default `deny`: what a *user* request gets when the user's
    /// token cannot be exchanged (none sent, no user mapping, IdP unreachable or without
    /// token exchange).
    pub fallback: FallbackPolicy,
    /// `targets.<name>.servicePrincipals`, default: the value of `fallback`. What a *service*
    /// caller acting as itself (a static token, a plugin token without `obo`, an external
    /// token) gets without a user token: `service_account` = the broker's client-credentials
    /// token, `deny` = 401. A scheduled job on a strict target needs `service_account` here.
    pub service_principals: FallbackPolicy,
    /// `targets.<name>.allowedCallers`: glob patterns (`*` wildcard) over principal names;
    /// `None` = any authenticated caller.
    pub allowed_callers: Option<Vec<String>>,
    /// `targets.<name>.upstream` (+ `tokenHeader`, `streaming`): proxy mode; `None` = the
    /// target is not reachable through `/v1/proxy` (404).
    pub upstream: Option<UpstreamConfig>,
    /// `targets.<name>.userMapping`: how a Backstage user without a Keycloak token is mapped to
    /// a Keycloak user; `None` = the target's fallback policy applies.
    pub user_mapping: Option<UserMapping>,
    /// `targets.<name>.issuedTokenAudience`, default `required`.
    pub issued_token_audience: IssuedAudience,
    /// `targets.<name>.issuedTokenFormat`, default `jwt`. `opaque` is refused with a
    /// `userMapping` (whose answer must be shown to be the user's) and with an ID token.
    pub issued_token_format: IssuedFormat,
}

/// Proxy mode of one target: where `/v1/proxy/<name>/...` forwards to and how the token goes.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `targets.<name>.upstream`: absolute http(s) base URL without user info, query or
    /// fragment; stored with its path ending in `/`. Request paths are appended below it.
    pub base: Url,
    /// `targets.<name>.tokenHeader`, default `Authorization`.
    pub token_header: TokenHeader,
    /// `targets.<name>.streaming`, default false: every call needs a token with at least
    /// `proxy.minStreamTokenLifetime` left.
    pub streaming: bool,
    /// `targets.<name>.forwardHeaders`, default empty: request headers forwarded in addition
    /// to the built-in allow-list (`proxy::headers::DEFAULT_FORWARDED`), lower-cased; an entry
    /// ending in `*` is a prefix. Headers the proxy never forwards cannot be listed.
    pub forward_headers: Vec<String>,
    /// `targets.<name>.allowMatrixParams`, default false: whether a path segment may carry
    /// `;` (RFC 3986 §3.3 matrix parameters, raw or `%3B`). `.`/`..` before a `;` is refused
    /// either way.
    pub allow_matrix_params: bool,
}

/// The header that carries the downstream token to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    Authorization,
    /// Any other header (lower-cased name): carries the bare token, no `Bearer ` prefix.
    Custom(String),
}

/// YAML `proxy`: limits of proxy mode (`/v1/proxy`).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `proxy.maxHeaderBytes`, default 16384: the caller's request headers (names + values)
    /// above this get 431; upstream response headers above it give 502.
    pub max_header_bytes: usize,
    /// `proxy.connectTimeout`, default 5s.
    pub connect_timeout: Duration,
    /// `proxy.idleTimeout`, default 60s: longest silence of the upstream (waiting for the
    /// response head while nothing is being sent, or between two body chunks); then 504 or the
    /// stream is cut.
    pub idle_timeout: Duration,
    /// `proxy.replayBufferBytes`, default 65536: request bodies up to this size are kept so a
    /// 401 (or a retryable failure) can be retried; larger bodies stream and are not retried.
    pub replay_buffer_bytes: usize,
    /// `proxy.minStreamTokenLifetime`, default 300s: streaming calls get a token with at least
    /// this much left.
    pub min_stream_token_lifetime: Duration,
    /// `proxy.maxRetries`, default 2 (0 = off): retries of idempotent requests after connection
    /// errors and 502/503/504, with exponential backoff from 100 ms, capped at 2 s.
    pub max_retries: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_header_bytes: 16 * 1024,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            replay_buffer_bytes: 64 * 1024,
            min_stream_token_lifetime: Duration::from_secs(300),
            max_retries: 2,
        }
    }
}

/// How a Backstage user principal becomes a Keycloak user for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMapping {
    pub kind: UserMappingKind,
    /// `subject`: template over the entity ref (`{ref}`, `{kind}`, `{namespace}`, `{name}`);
    /// default `{ref}` for `jwt_authorization_grant`, `{name}` for `impersonation`.
    pub subject: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMappingKind {
    /// RFC 7523 JWT authorization grant with an assertion the broker signs (Keycloak 26.5+).
    JwtAuthorizationGrant,
    /// Legacy token exchange V1 naked impersonation (`requested_subject`).
    Impersonation,
}

/// Which Backstage the broker trusts (docs/reference/backstage-tokens.md §2.2).
#[derive(Debug, Clone)]
pub struct BackstageConfig {
    /// `backstage.pluginId`, default `token-broker`: plugin tokens must carry this `aud`, and
    /// `accessRestrictions` entries for it apply to the broker.
    pub plugin_id: String,
    /// `backend.baseUrl`: the default base URL of plugin `p` is `{baseUrl}/api/{p}`.
    pub base_url: Option<Url>,
    /// `discovery.endpoints`, in order; the first entry listing a plugin (or `*`) wins.
    pub endpoints: Vec<DiscoveryEndpoint>,
    /// `backstage.trustedPlugins`: plugin ids or `*` patterns (the `allowedCallers` syntax,
    /// over bare plugin ids). A plugin token whose `sub` matches none is refused before any
    /// key-set fetch; `None` = every plugin id Backstage's pattern admits may be tried.
    pub trusted_plugins: Option<Vec<String>>,
}

/// One `discovery.endpoints` item (Backstage HostDiscovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEndpoint {
    /// `target` (or `target.internal`), with `{{pluginId}}` / `{{ pluginId }}` placeholders.
    pub target: String,
    /// `plugins`: plugin ids, or `*` for every plugin.
    pub plugins: Vec<String>,
}

/// YAML `assertion`: the RFC 7523 assertions the broker signs.
#[derive(Debug, Clone)]
pub struct AssertionConfig {
    /// `assertion.issuer` (required): the `iss` of assertions; the issuer of the identity
    /// provider configured in Keycloak.
    pub issuer: String,
    /// `assertion.keyFile`: PKCS#8 PEM P-256 private key; absent = generated at start
    /// (development: replicas would not share it).
    pub key_file: Option<std::path::PathBuf>,
    /// `assertion.lifetime`, default 2m, at most 5m (Keycloak's default maximum).
    pub lifetime: Duration,
}

/// YAML `telemetry`. Each key falls back to the standard OpenTelemetry variable when absent.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `telemetry.otlpEndpoint`: the collector's OTLP/HTTP base URL (`/v1/traces` is
    /// appended), else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// none of them set = no traces.
    pub otlp_endpoint: Option<String>,
    /// `telemetry.serviceName`, else `OTEL_SERVICE_NAME`, else `token-broker`.
    pub service_name: Option<String>,
}

/// YAML `logging`.
#[derive(Debug, Clone)]
pub struct LoggingConfig {
    /// `logging.format`, default `plain`.
    pub format: LogFormat,
    /// `logging.level`, default `info`: a tracing filter directive; `RUST_LOG` wins if set.
    pub level: String,
}
