//! The state every server worker and the [`crate::DevIdpHandle`] share: the realm (name,
//! default lifespan, keys, the mutable [`RealmState`]), the token endpoint's request record and
//! the identity providers' key sets. Plain data and locks; no actix types, no HTTP.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use crate::idp_jwks::IdpJwks;
use crate::keys::{KeyRing, RealmKeys};
use crate::logout::BackchannelDelivery;
use crate::realm::{DevIdpConfig, RealmState};

/// One request received by the token endpoint, with the answer it got.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// First `grant_type` form value.
    pub grant_type: Option<String>,
    /// Form pairs as received (decoded), in order, duplicates kept.
    pub form: Vec<(String, String)>,
    /// Client id from an HTTP Basic `Authorization` header (RFC 6749 §2.3.1 decoded).
    pub basic_auth_client_id: Option<String>,
    pub status: u16,
    /// Response body (`Value::Null` when the response had none).
    pub body: serde_json::Value,
}

/// State shared by every worker and by the handle.
#[derive(Debug)]
pub struct Shared {
    pub realm: String,
    pub realm_lifespan: Duration,
    pub keys: KeyRing,
    state: Mutex<RealmState>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Back-channel logouts sent, in order.
    deliveries: Mutex<Vec<BackchannelDelivery>>,
    /// Identity providers' key sets by JWKS URL (§6 JWT authorization grant).
    pub idp_jwks: IdpJwks,
}

impl Shared {
    pub fn new(config: &DevIdpConfig, keys: RealmKeys) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            realm: config.realm.clone(),
            realm_lifespan: config.access_token_lifespan,
            keys: KeyRing::new(keys),
            state: Mutex::new(RealmState::new(config)),
            requests: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            idp_jwks: IdpJwks::new()?,
        }))
    }

    /// Locks the realm state. A poisoned lock only means another thread panicked mid-update;
    /// the data is still the best we have for a dev IdP.
    pub fn state(&self) -> MutexGuard<'_, RealmState> {
        self.state.lock()
    }

    pub fn record_delivery(&self, d: BackchannelDelivery) {
        self.deliveries.lock().push(d);
    }

    pub fn deliveries(&self) -> Vec<BackchannelDelivery> {
        self.deliveries.lock().clone()
    }

    pub fn requests(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock()
    }
}
