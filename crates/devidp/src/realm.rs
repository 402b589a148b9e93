//! The realm model of the dev IdP: users (with federated identity links), clients (with the
//! Keycloak client attributes that the token-exchange, JWT authorization grant and V1
//! impersonation paths depend on), identity providers, user sessions, service-account users, the
//! runtime switches, and the fixed development contract (`DevIdpConfig::contract()`, see
//! `docs/dev-idp.md` "The contract set-up").
//!
//! Everything here is plain data behind one `Mutex` (in `state.rs`); no actix types.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Keycloak's realm default access token lifespan (docs/reference/keycloak-token-exchange.md §3.6:
/// "realm
/// default 300 s").
pub const DEFAULT_ACCESS_TOKEN_LIFESPAN: Duration = Duration::from_secs(300);

/// Keycloak's default SSO session idle timeout, reported as `refresh_expires_in` for
/// password-grant responses.
pub const SESSION_IDLE_SECS: u64 = 1800;

/// Client scopes every client has as *default* scopes in a fresh Keycloak realm and that appear
/// in the `scope` claim (`basic`, `acr`, `roles`, `web-origins` are default too but do not
/// appear in `scope`).
pub const DEFAULT_SCOPES: [&str; 2] = ["profile", "email"];

/// Client scopes a fresh Keycloak realm gives every client as *optional* scopes and that the
/// dev IdP accepts in `scope` for every client: they join the `scope` claim and add no
/// audience (their claims are not emulated, `docs/dev-idp.md`). `offline_access`, the fifth
/// built-in optional scope, needs offline sessions and is not emulated (refused as
/// `invalid_scope`).
pub const BUILTIN_OPTIONAL_SCOPES: [&str; 4] =
    ["address", "phone", "microprofile-jwt", "organization"];

/// The audience and client roles every realm user and service account gets from the realm's
/// default roles (`default-roles-<realm>` composes `account`'s `manage-account`, its composite
/// `manage-account-links`, and `view-profile`): Keycloak's audience-resolve mapper puts
/// `account` in `aud` of every token whose subject has them, and `resource_access` lists them.
pub const DEFAULT_ROLES_CLIENT: &str = "account";

/// The `account` client roles of the realm's default roles, as `resource_access.account.roles`.
pub const DEFAULT_ACCOUNT_ROLES: [&str; 3] =
    ["manage-account", "manage-account-links", "view-profile"];

/// Configuration of an embedded dev IdP realm.
#[derive(Clone, Debug)]
pub struct DevIdpConfig {
    /// Realm name, the `{realm}` of `/realms/{realm}` ("dev" in the contract).
    pub realm: String,
    /// Realm access token lifespan (Keycloak default 300 s).
    pub access_token_lifespan: Duration,
    /// `false` emulates a Keycloak with every token-exchange feature off: the grant answers
    /// 400 `unsupported_grant_type` and the URN is absent from `grant_types_supported`
    /// (docs/reference/keycloak-token-exchange.md §1, §2 step 3).
    pub token_exchange_enabled: bool,
    /// Preview feature `jwt-authorization-grant` (docs/reference/keycloak-token-exchange.md §6):
    /// `false`
    /// answers the jwt-bearer grant with 400 `unsupported_grant_type` and leaves it out of
    /// `grant_types_supported` (§1). On in `contract()`.
    pub jwt_authorization_grant_enabled: bool,
    /// Legacy token exchange V1 (`--features=token-exchange,admin-fine-grained-authz:v1`, §5):
    /// handles the exchange requests that standard V2 declines (§3.3), of which the dev IdP
    /// emulates naked impersonation (`requested_subject` without `subject_token`). Off by
    /// default, as in Keycloak.
    pub token_exchange_v1_enabled: bool,
    /// Realm users.
    pub users: Vec<DevUser>,
    /// Realm clients.
    pub clients: Vec<DevClient>,
    /// Identity providers trusted for the JWT authorization grant (§6).
    pub identity_providers: Vec<DevIdentityProvider>,
}

/// A realm identity provider as the JWT authorization grant uses it
/// (docs/reference/keycloak-token-exchange.md
/// §6): the "JWT Authorization Grant" (or OIDC) provider type with an issuer and a JWKS URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevIdentityProvider {
    /// The IdP alias: what federated identity links and the client's allowed-IdP list name.
    pub alias: String,
    /// Assertions must carry exactly this `iss`.
    pub issuer: String,
    /// Where the IdP's signing keys are fetched (a JWKS document, RFC 7517).
    pub jwks_url: String,
    /// The IdP's "JWT Authorization Grant" switch.
    pub jwt_authorization_grant_enabled: bool,
}

impl DevIdentityProvider {
    /// An identity provider with the "JWT Authorization Grant" switch on.
    pub fn new(alias: &str, issuer: &str, jwks_url: &str) -> Self {
        Self {
            alias: alias.to_owned(),
            issuer: issuer.to_owned(),
            jwks_url: jwks_url.to_owned(),
            jwt_authorization_grant_enabled: true,
        }
    }
}

/// A federated identity link: the user is known as `user_id` at the identity provider `alias`
/// (Keycloak's `FederatedIdentityModel`; docs/reference/keycloak-token-exchange.md §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedIdentity {
    pub alias: String,
    pub user_id: String,
}

/// A realm user.
#[derive(Clone)]
pub struct DevUser {
    pub username: String,
    pub password: String,
    /// User id (a UUID), the `sub` of its tokens.
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub enabled: bool,
    /// Links to identity providers (§6: the assertion's `sub` is the user id at the IdP).
    pub federated_identities: Vec<FederatedIdentity>,
}

impl std::fmt::Debug for DevUser {
    // The password is a dev value, but keep it out of logs anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevUser")
            .field("username", &self.username)
            .field("id", &self.id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl DevUser {
    /// An enabled user with a deterministic id (derived from the username, so ids are stable
    /// across restarts of `token-broker dev`), email `username@example.com`, first name = the
    /// capitalised username and last name `Example` (as in
    /// docs/reference/keycloak-token-exchange.md §4).
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            id: stable_uuid("user", username),
            email: format!("{username}@example.com"),
            first_name: capitalise(username),
            last_name: "Example".to_owned(),
            enabled: true,
            federated_identities: Vec::new(),
        }
    }

    /// Links the user to identity provider `alias` as `user_id` there (replacing an earlier
    /// link to the same IdP: Keycloak keeps one link per IdP and user).
    pub fn link(&mut self, alias: &str, user_id: &str) {
        self.federated_identities.retain(|f| f.alias != alias);
        self.federated_identities.push(FederatedIdentity {
            alias: alias.to_owned(),
            user_id: user_id.to_owned(),
        });
    }

    /// `name` claim: Keycloak's full-name mapper joins first and last name.
    pub fn full_name(&self) -> String {
        match (self.first_name.is_empty(), self.last_name.is_empty()) {
            (false, false) => format!("{} {}", self.first_name, self.last_name),
            (false, true) => self.first_name.clone(),
            (true, false) => self.last_name.clone(),
            (true, true) => String::new(),
        }
    }
}

/// A realm client with the attributes the emulated grants look at.
#[derive(Clone)]
pub struct DevClient {
    pub client_id: String,
    /// `None` = public client.
    pub secret: Option<String>,
    pub enabled: bool,
    pub bearer_only: bool,
    /// "Direct access grants" (password grant).
    pub direct_access_grants: bool,
    /// "Service accounts roles" (client_credentials grant).
    pub service_accounts_enabled: bool,
    /// Client attribute `standard.token.exchange.enabled`
    /// (docs/reference/keycloak-token-exchange.md §3.1).
    pub standard_token_exchange_enabled: bool,
    /// Client ids put in `aud` of tokens issued TO this client: a default client scope with an
    /// Audience mapper per entry.
    pub audience_mappers: Vec<String>,
    /// Optional client scope name -> audiences it adds when requested with `scope`.
    pub optional_scopes: BTreeMap<String, Vec<String>>,
    /// Client attribute `access.token.lifespan`; `None` = realm default.
    pub access_token_lifespan: Option<Duration>,
    /// Client attribute `oauth2.jwt.authorization.grant.enabled`: the "JWT Authorization Grant"
    /// capability (docs/reference/keycloak-token-exchange.md §6).
    pub jwt_authorization_grant_enabled: bool,
    /// Client attribute `oauth2.jwt.authorization.grant.idp`: aliases of the identity providers
    /// whose assertions this client may redeem (§6).
    pub jwt_authorization_grant_idps: Vec<String>,
    /// FGAP v1 Users → "impersonate" permission includes this client: it may do naked V1
    /// impersonation (§5).
    pub v1_impersonation_allowed: bool,
    /// FGAP v1 "token-exchange" permission of this client as a *target*: the requester client
    /// ids allowed to exchange to it with V1 (§5, internal→internal).
    pub v1_token_exchange_clients: Vec<String>,
    /// "Backchannel logout URL" (OIDC Back-Channel Logout 1.0 §2.2): when a user session this
    /// client takes part in ends, a logout token is POSTed here. `None` = no back-channel
    /// logout (Keycloak's default).
    pub backchannel_logout_url: Option<String>,
    /// "Backchannel logout session required" (Keycloak's default: on): the logout token
    /// carries the session's `sid`.
    pub backchannel_logout_session_required: bool,
    /// The client's service account holds `realm-management` `manage-users`: its access
    /// token may call the admin API's user logout.
    pub manage_users: bool,
}

impl std::fmt::Debug for DevClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevClient")
            .field("client_id", &self.client_id)
            .field("public", &self.secret.is_none())
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl DevClient {
    /// A confidential, enabled client with every capability off.
    pub fn confidential(id: &str, secret: &str) -> Self {
        Self {
            secret: Some(secret.to_owned()),
            ..Self::public(id)
        }
    }

    /// A public, enabled client with every capability off.
    pub fn public(id: &str) -> Self {
        Self {
            client_id: id.to_owned(),
            secret: None,
            enabled: true,
            bearer_only: false,
            direct_access_grants: false,
            service_accounts_enabled: false,
            standard_token_exchange_enabled: false,
            audience_mappers: Vec::new(),
            optional_scopes: BTreeMap::new(),
            access_token_lifespan: None,
            jwt_authorization_grant_enabled: false,
            jwt_authorization_grant_idps: Vec::new(),
            v1_impersonation_allowed: false,
            v1_token_exchange_clients: Vec::new(),
            backchannel_logout_url: None,
            backchannel_logout_session_required: true,
            manage_users: false,
        }
    }

    pub fn is_public(&self) -> bool {
        self.secret.is_none()
    }

    /// Username of the client's service-account user (docs/reference/keycloak-token-exchange.md
    /// §4).
    pub fn service_account_username(&self) -> String {
        format!("service-account-{}", self.client_id)
    }

    /// Stable id of the client's service-account user.
    pub fn service_account_id(&self) -> String {
        stable_uuid("service-account", &self.client_id)
    }
}

impl DevIdpConfig {
    /// The fixed development contract (docs/dev-contract.md): realm `dev`, users alice/bob, the
    /// public `dev-frontend`, the broker's confidential `token-broker` and the two targets.
    pub fn contract() -> Self {
        let mut frontend = DevClient::public("dev-frontend");
        frontend.direct_access_grants = true;
        frontend.audience_mappers = vec!["token-broker".to_owned()];

        let mut broker = DevClient::confidential("token-broker", "token-broker-dev-secret");
        broker.service_accounts_enabled = true;
        broker.standard_token_exchange_enabled = true;
        broker.audience_mappers = vec!["kagenti-api".to_owned(), "sonataflow".to_owned()];
        // §6: the capability is on; the allowed IdPs are added with the IdP itself
        // (`token-broker dev` adds the broker's assertion issuer).
        broker.jwt_authorization_grant_enabled = true;
        // §5: ready for V1 impersonation, which stays off until the realm switch is on.
        broker.v1_impersonation_allowed = true;

        // Fixed, public dev secrets (the same as config/keycloak/dev-realm.json), so tests and
        // scripts/conformance can use the targets as clients without the capabilities.
        let mut kagenti = DevClient::confidential("kagenti-api", "kagenti-api-dev-secret");
        kagenti.v1_token_exchange_clients = vec!["token-broker".to_owned()];
        let mut sonataflow = DevClient::confidential("sonataflow", "sonataflow-dev-secret");
        sonataflow.v1_token_exchange_clients = vec!["token-broker".to_owned()];

        Self {
            realm: "dev".to_owned(),
            access_token_lifespan: DEFAULT_ACCESS_TOKEN_LIFESPAN,
            token_exchange_enabled: true,
            jwt_authorization_grant_enabled: true,
            token_exchange_v1_enabled: false,
            users: vec![DevUser::new("alice", "alice"), DevUser::new("bob", "bob")],
            clients: vec![frontend, broker, kagenti, sonataflow],
            identity_providers: Vec::new(),
        }
    }
}

/// A user session (what `sid` names). Token exchange never creates one (§3.5), and its
/// requester does not join one (a transient client session).
#[derive(Clone, Debug)]
pub struct UserSession {
    pub user_id: String,
    /// Unix seconds of the login, the `auth_time` claim.
    pub auth_time: u64,
    /// The issuer the session was created through (Keycloak's client-session `iss` note):
    /// the `iss` of the logout tokens sent when it ends.
    pub issuer: String,
    /// Client ids with a client session in this user session (the login client; the
    /// requester of a V1 impersonation): the clients a back-channel logout is sent to.
    pub clients: Vec<String>,
}

impl UserSession {
    pub fn new(user_id: &str, auth_time: u64, issuer: &str, client_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            auth_time,
            issuer: issuer.to_owned(),
            clients: vec![client_id.to_owned()],
        }
    }
}

/// Who a token is about: a realm user or a client's service account.
#[derive(Clone, Debug)]
pub enum Subject {
    User(DevUser),
    ServiceAccount(DevClient),
}

/// Mutable realm state.
#[derive(Debug)]
pub struct RealmState {
    pub users: Vec<DevUser>,
    pub clients: Vec<DevClient>,
    /// sid -> session.
    pub sessions: HashMap<String, UserSession>,
    pub token_exchange_enabled: bool,
    pub jwt_authorization_grant_enabled: bool,
    pub token_exchange_v1_enabled: bool,
    pub identity_providers: Vec<DevIdentityProvider>,
    /// Redeemed assertion ids (`iss` + `jti`) → the assertion's `exp`: §6 "`jti` is required and
    /// single-use". Entries are dropped once expired (the assertion is refused anyway then).
    pub used_assertions: HashMap<(String, String), u64>,
    pub token_endpoint_delay: Duration,
    /// Test fault: corrupt successful exchange answers (never set by `token-broker dev`).
    pub exchange_fault: Option<ExchangeFault>,
    /// Test mode: behave as a generic (non-Keycloak) RFC 8693 server. `None`: Keycloak.
    pub generic: Option<GenericMode>,
}

/// A generic, standards-only IdP instead of Keycloak's dialect (a test mode, never set by
/// `token-broker dev`): the issuer is `issuer` exactly (any form: trailing `/`, no realm path),
/// with discovery at `{issuer}/.well-known/openid-configuration` (OIDC Discovery §4: a
/// terminating `/` is not doubled) and the endpoints still under `/realms/{realm}`; access
/// tokens carry no Keycloak `typ` claim and the JOSE header `typ` given here (RFC 9068 §2.1:
/// `at+jwt`; `None`: no `typ`); subject tokens need no `typ` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericMode {
    pub issuer: String,
    pub access_token_typ: Option<String>,
}

/// A deliberate defect in a successful token-exchange answer, so tests can prove the broker
/// never serves a token that fails its checks. Not Keycloak behaviour: a test hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeFault {
    /// The minted token's `aud` names another client.
    WrongAudience,
    /// The minted token's `sub` is another user's.
    WrongSubject,
    /// `issued_token_type` is the refresh-token URN.
    WrongIssuedTokenType,
    /// `token_type` is `mac`.
    WrongTokenType,
    /// The token is signed by a key that is not in the realm's JWKS.
    ForeignSignature,
    /// The minted token has no `aud` (some IdPs omit it).
    OmitAudience,
    /// The access token is opaque: a random string, not a JWT.
    Opaque,
}

impl RealmState {
    pub fn new(config: &DevIdpConfig) -> Self {
        Self {
            users: config.users.clone(),
            clients: config.clients.clone(),
            sessions: HashMap::new(),
            token_exchange_enabled: config.token_exchange_enabled,
            jwt_authorization_grant_enabled: config.jwt_authorization_grant_enabled,
            token_exchange_v1_enabled: config.token_exchange_v1_enabled,
            identity_providers: config.identity_providers.clone(),
            used_assertions: HashMap::new(),
            token_endpoint_delay: Duration::ZERO,
            exchange_fault: None,
            generic: None,
        }
    }

    pub fn client(&self, client_id: &str) -> Option<&DevClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn user_by_name(&self, username: &str) -> Option<&DevUser> {
        self.users.iter().find(|u| u.username == username)
    }

    /// Adds or replaces (same username) a user.
    pub fn upsert_user(&mut self, user: DevUser) {
        self.users.retain(|u| u.username != user.username);
        self.users.push(user);
    }

    /// Adds or replaces (same client id) a client.
    pub fn upsert_client(&mut self, client: DevClient) {
        self.clients.retain(|c| c.client_id != client.client_id);
        self.clients.push(client);
    }

    /// Adds or replaces (same alias) an identity provider.
    pub fn upsert_identity_provider(&mut self, idp: DevIdentityProvider) {
        self.identity_providers.retain(|i| i.alias != idp.alias);
        self.identity_providers.push(idp);
    }

    /// The identity provider whose issuer is exactly `issuer`.
    pub fn identity_provider_by_issuer(&self, issuer: &str) -> Option<&DevIdentityProvider> {
        self.identity_providers.iter().find(|i| i.issuer == issuer)
    }

    /// The user linked to identity provider `alias` as `idp_user_id` (§6).
    pub fn user_by_federated_identity(&self, alias: &str, idp_user_id: &str) -> Option<&DevUser> {
        self.users.iter().find(|u| {
            u.federated_identities
                .iter()
                .any(|f| f.alias == alias && f.user_id == idp_user_id)
        })
    }

    /// Resolves a token's `sub`: a realm user, or the service-account user of a client with
    /// service accounts enabled (Keycloak keeps that user only while the capability is on).
    pub fn subject_by_id(&self, id: &str) -> Option<Subject> {
        if let Some(u) = self.users.iter().find(|u| u.id == id) {
            return Some(Subject::User(u.clone()));
        }
        self.clients
            .iter()
            .find(|c| c.service_accounts_enabled && c.service_account_id() == id)
            .map(|c| Subject::ServiceAccount(c.clone()))
    }

    /// Id of a user by username, including `service-account-<clientId>` users.
    pub fn user_id(&self, username: &str) -> Option<String> {
        if let Some(u) = self.user_by_name(username) {
            return Some(u.id.clone());
        }
        self.clients
            .iter()
            .find(|c| c.service_accounts_enabled && c.service_account_username() == username)
            .map(DevClient::service_account_id)
    }
}

/// A UUID derived from a namespace and a name (SHA-256, with the RFC 4122 version/variant bits
/// of a v4 UUID so it looks like the random ids Keycloak uses).
fn stable_uuid(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("token-broker-devidp:{namespace}:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    for (dst, src) in bytes.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
