//! token-broker's **development** identity provider (crate `token-broker-devidp`), a
//! Keycloak look-alike: one realm with discovery, JWKS, and a token endpoint implementing the
//! password, client_credentials, standard token exchange V2, JWT authorization grant (RFC 7523)
//! and legacy V1 naked impersonation grants with Keycloak's wire behaviour
//! (docs/reference/keycloak-token-exchange.md §1–§6, §8, §10), and logout (the logout endpoint's
//! non-browser form and the admin API's user logout, with OIDC back-channel logout tokens to the
//! session's clients, `logout.rs`); `docs/dev-idp.md` describes what is emulated.
//!
//! The crate root owns the public API (`start`, `DevIdpHandle`, `RecordedRequest`), the shared
//! state and the actix-web server. It is for development and tests only — `token-broker dev`
//! (the broker's cargo feature `dev`) and the test suites: no TLS, no UI, no persistence, keys
//! regenerated at every start. It does not depend on the broker, which talks to it only over
//! HTTP, as to Keycloak.

mod claims;
mod discovery;
mod idp_jwks;
mod keys;
mod logout;
mod protocol;
mod realm;
mod state;
mod token_endpoint;

#[cfg(test)]
mod logout_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
use tests as tests_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};

pub use logout::{BACKCHANNEL_LOGOUT_EVENT, BackchannelDelivery};
pub use realm::{
    DevClient, DevIdentityProvider, DevIdpConfig, DevUser, ExchangeFault, FederatedIdentity,
    GenericMode,
};
pub use state::RecordedRequest;

use keys::RealmKeys;
use state::Shared;

/// Handle to a running dev IdP. Cloning shares the same server.
#[derive(Clone)]
pub struct DevIdpHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for DevIdpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdpHandle")
            .field("addr", &self.addr)
            .field("realm", &self.shared.realm)
            .finish_non_exhaustive()
    }
}

/// Generates the realm keys, binds `listen` (port 0 allowed) and serves the realm in the
/// background. Returns once the socket is bound. Works inside an actix `System` (the broker's
/// `dev` command) and in `#[actix_web::test]`: the server future is driven by `tokio::spawn` on
/// the caller's runtime and actix-server runs its workers on their own threads.
pub async fn start(config: DevIdpConfig, listen: SocketAddr) -> std::io::Result<DevIdpHandle> {
    // RSA key generation is CPU-bound; keep it off the caller's (possibly single-threaded)
    // runtime.
    let keys = tokio::task::spawn_blocking(RealmKeys::generate)
        .await
        .map_err(std::io::Error::other)??;
    let shared = Shared::new(&config, keys)?;
    let data = web::Data::from(Arc::clone(&shared));
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .workers(2)
        // The embedding process (the broker) owns signal handling.
        .disable_signals()
        .shutdown_timeout(1)
        .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("dev IdP bound no address"))?;
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "dev IdP server stopped with an error");
        }
    });
    tracing::warn!(
        issuer = %format!("http://{addr}/realms/{}", config.realm),
        "dev IdP (Keycloak-compatible) started: FOR DEVELOPMENT ONLY, not a real identity provider"
    );
    Ok(DevIdpHandle {
        shared,
        addr,
        server: handle,
    })
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/realms/{realm}")
            .route(
                "/.well-known/openid-configuration",
                web::get().to(discovery::openid_configuration),
            )
            .route(
                "/protocol/openid-connect/certs",
                web::get().to(discovery::certs),
            )
            .route(
                "/protocol/openid-connect/token",
                web::post().to(token_endpoint::token),
            )
            .route(
                "/protocol/openid-connect/logout",
                web::post().to(logout::logout_endpoint),
            )
            .route(
                "/protocol/openid-connect/token/introspect",
                web::route().to(token_endpoint::introspect),
            )
            .default_service(web::to(discovery::not_found)),
    )
    .route(
        "/admin/realms/{realm}/users/{id}/logout",
        web::post().to(logout::admin_user_logout),
    )
    .default_service(web::to(discovery::outside_realm));
}

impl DevIdpHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}/realms/{realm}`: the issuer of tokens minted through the bound address.
    /// (The IdP derives the issuer from each request's `Host`, like Keycloak.)
    pub fn issuer(&self) -> String {
        format!("http://{}/realms/{}", self.addr, self.shared.realm)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// Every token-endpoint request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests().clear();
    }

    /// Number of recorded token requests with that `grant_type`.
    pub fn count_grant(&self, grant_type: &str) -> usize {
        self.shared
            .requests()
            .iter()
            .filter(|r| r.grant_type.as_deref() == Some(grant_type))
            .count()
    }

    /// Switches the token-exchange feature (docs/reference/keycloak-token-exchange.md §1, §2 step
    /// 3).
    pub fn set_token_exchange_enabled(&self, on: bool) {
        self.shared.state().token_exchange_enabled = on;
    }

    /// Switches the preview feature `jwt-authorization-grant`
    /// (docs/reference/keycloak-token-exchange.md §6).
    pub fn set_jwt_authorization_grant_enabled(&self, on: bool) {
        self.shared.state().jwt_authorization_grant_enabled = on;
    }

    /// Switches legacy token exchange V1 (`token-exchange` + `admin-fine-grained-authz:v1`,
    /// docs/reference/keycloak-token-exchange.md §5). Off by default.
    pub fn set_token_exchange_v1_enabled(&self, on: bool) {
        self.shared.state().token_exchange_v1_enabled = on;
    }

    /// Adds an identity provider, replacing one with the same alias (§6). Its cached keys are
    /// dropped, so a changed JWKS URL or key set is fetched afresh.
    pub fn add_identity_provider(&self, idp: DevIdentityProvider) {
        self.shared.idp_jwks.forget(&idp.jwks_url);
        self.shared.state().upsert_identity_provider(idp);
    }

    /// Links user `username` to identity provider `alias` as `idp_user_id` there (a federated
    /// identity, §6), replacing the user's earlier link to that IdP. Returns `false` when there
    /// is no such user.
    pub fn link_user(&self, username: &str, alias: &str, idp_user_id: &str) -> bool {
        let mut st = self.shared.state();
        match st.users.iter_mut().find(|u| u.username == username) {
            Some(u) => {
                u.link(alias, idp_user_id);
                true
            }
            None => false,
        }
    }

    /// Removes user `username`'s link to identity provider `alias`.
    pub fn unlink_user(&self, username: &str, alias: &str) {
        let mut st = self.shared.state();
        if let Some(u) = st.users.iter_mut().find(|u| u.username == username) {
            u.federated_identities.retain(|f| f.alias != alias);
        }
    }

    /// Changes an existing client in place (e.g. to allow an identity provider for the JWT
    /// authorization grant). Returns `false` when there is no such client.
    pub fn update_client(&self, client_id: &str, change: impl FnOnce(&mut DevClient)) -> bool {
        let mut st = self.shared.state();
        match st.clients.iter_mut().find(|c| c.client_id == client_id) {
            Some(c) => {
                change(c);
                true
            }
            None => false,
        }
    }

    /// Delay before the token endpoint answers (to test timeouts and in-flight coalescing).
    pub fn set_token_endpoint_delay(&self, d: Duration) {
        self.shared.state().token_endpoint_delay = d;
    }

    /// Enables or disables a user; a disabled user's tokens fail exchange with `Invalid token`.
    pub fn set_user_enabled(&self, username: &str, on: bool) {
        let mut st = self.shared.state();
        if let Some(u) = st.users.iter_mut().find(|u| u.username == username) {
            u.enabled = on;
        }
    }

    /// Adds a user, replacing one with the same username.
    pub fn add_user(&self, user: DevUser) {
        self.shared.state().upsert_user(user);
    }

    /// Adds a client, replacing one with the same client id.
    pub fn add_client(&self, client: DevClient) {
        self.shared.state().upsert_client(client);
    }

    /// Back-channel logouts sent so far (logout endpoint, admin user logout,
    /// [`DevIdpHandle::logout_user_notify`]), in order.
    pub fn backchannel_deliveries(&self) -> Vec<BackchannelDelivery> {
        self.shared.deliveries()
    }

    /// Like the admin API's user logout: ends every session of that user and sends the
    /// back-channel logout tokens before returning. Returns the number of sessions ended.
    pub async fn logout_user_notify(&self, username: &str) -> usize {
        let Some(id) = self.user_id(username) else {
            return 0;
        };
        logout::logout_user_id(&self.shared, &id).await
    }

    /// Ends every session of that user without telling any client (as if every back-channel
    /// delivery failed): tokens carrying one of those `sid`s then fail exchange with
    /// `Invalid token` (§3.4 step 2).
    pub fn logout_user(&self, username: &str) {
        let mut st = self.shared.state();
        let Some(id) = st.user_by_name(username).map(|u| u.id.clone()) else {
            return;
        };
        st.sessions.retain(|_, s| s.user_id != id);
    }

    /// Test hook: corrupt every successful token-exchange answer in the given way (`None`
    /// restores normal answers). Not Keycloak behaviour.
    pub fn set_exchange_fault(&self, fault: Option<ExchangeFault>) {
        self.shared.state().exchange_fault = fault;
    }

    /// Test mode: act as a generic RFC 8693 server ([`GenericMode`]: any issuer form, no
    /// Keycloak `typ` claim, RFC 9068 header typing); `None` restores Keycloak's behaviour.
    /// Not Keycloak behaviour.
    pub fn set_generic(&self, mode: Option<GenericMode>) {
        self.shared.state().generic = mode;
    }

    /// The realm's current issuer: the generic mode's, else [`Self::issuer`].
    pub fn current_issuer(&self) -> String {
        match &self.shared.state().generic {
            Some(g) => g.issuer.clone(),
            None => self.issuer(),
        }
    }

    /// Signs arbitrary claims with the realm's current signing key (RS256, its `kid`).
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        self.shared.keys.sign(claims)
    }

    /// Replaces the realm keys with freshly generated ones (Keycloak: a new key provider, the
    /// old one deleted): the JWKS then lists only the new keys and tokens signed with the old
    /// key fail verification here. Returns the new signing `kid`.
    pub async fn rotate_keys(&self) -> std::io::Result<String> {
        let keys = tokio::task::spawn_blocking(RealmKeys::generate)
            .await
            .map_err(std::io::Error::other)??;
        self.shared.keys.rotate(keys);
        Ok(self.shared.keys.sig_kid())
    }

    /// `kid` of the current signing key.
    pub fn signing_kid(&self) -> String {
        self.shared.keys.sig_kid()
    }

    /// Id of a user, including `service-account-<clientId>` users.
    pub fn user_id(&self, username: &str) -> Option<String> {
        self.shared.state().user_id(username)
    }

    /// Stops the server gracefully.
    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}
