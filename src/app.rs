//! Assembly: builds the shared state from a validated [`Config`], loads the IdP's discovery
//! document and keys, and runs the public and admin listeners.
//!
//! Shared state is built once, outside the per-worker `HttpServer` factory, so all workers
//! share one cache and one in-flight table (actix runs the `HttpServer::new` closure once per
//! worker, so shared state is built outside it).

use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

use crate::broker::TokenService;
use crate::broker::assertion::AssertionSigner;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{AppState, admin_routes, public_routes};
use crate::idp::IdpClient;
use crate::idp::jwks::JwksCache;
use crate::inbound::Authenticator;
use crate::inbound::backstage::BackstageVerifier;
use crate::inbound::oidc::{OidcVerifier, UserClaimRules};
use crate::outbound::{Outbound, OutboundConfig};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Http(String),
    #[error(transparent)]
    Assertion(#[from] crate::broker::assertion::AssertionError),
    /// `cache.shared` could not be set up (TLS configuration); never a connection failure:
    /// Redis is connected on first use and its absence never stops the broker.
    #[error("shared cache: {0}")]
    SharedCache(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running broker.
pub struct RunningBroker {
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: web::Data<AppState>,
    handles: Vec<ServerHandle>,
    tasks: Vec<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningBroker {
    pub fn public_url(&self) -> String {
        format!("http://{}", self.public_addr)
    }

    /// `serve`'s start-up check (issue 12): asks the IdP once whether it accepts the broker's
    /// client authentication (a side-effect-free probe, `idp::probe`). A refusal is an error
    /// log and `token_broker_idp_client_auth_ok 0`, not a silent ready state in which every
    /// request would fail; 1 when accepted; -1 when it could not be determined.
    pub async fn probe_client_auth(&self) -> crate::idp::probe::Probe {
        use crate::idp::probe::Verdict;
        let p = self.state.idp.probe_client_auth().await;
        match p.verdict {
            Verdict::Ok => {
                self.state.metrics.idp_client_auth(Some(true));
                tracing::info!(detail = %p.detail, "IdP accepted the broker's client authentication");
            }
            Verdict::Failed => {
                self.state.metrics.idp_client_auth(Some(false));
                tracing::error!(detail = %p.detail, fix = %p.fix, "IdP REFUSED the broker's client authentication: every exchange will fail");
            }
            Verdict::Unknown => {
                self.state.metrics.idp_client_auth(None);
                tracing::warn!(detail = %p.detail, fix = %p.fix, "IdP client authentication could not be checked at start");
            }
        }
        p
    }

    /// Stops both listeners, letting in-flight requests finish.
    pub async fn stop(&self) {
        for h in &self.handles {
            h.stop(true).await;
        }
    }

    /// Applies the run-time-reloadable parts of a new configuration (SIGHUP): the external
    /// access entries (static caller tokens), the client secret and the assertion signing key
    /// (re-read from `assertion.keyFile`). Everything else needs a restart and is ignored
    /// here. Nothing secret is logged: only what changed.
    pub fn reload(&self, new: &Config) {
        let s = &self.state;
        let entries = s.auth.backstage().reload_external(&new.external_access);
        let secret = s.idp.set_client_secret(&new.keycloak.client_secret);
        let key = match (&s.assertion, &new.assertion) {
            (Some(signer), Some(cfg)) => match signer.reload(cfg) {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::warn!(error = %e, "assertion key not reloaded; keeping the current key");
                    false
                }
            },
            _ => false,
        };
        tracing::info!(
            external_access_entries = entries,
            client_secret_changed = secret,
            assertion_key_changed = key,
            "configuration reloaded (external access, client secret, assertion key; other changes need a restart)"
        );
    }

    /// Graceful shutdown (SIGTERM, Ctrl-C): readiness turns false first, then after
    /// `server.drainDelay` the listeners stop accepting, and in-flight requests and open
    /// streams get up to `server.shutdownTimeout` to finish.
    pub async fn shutdown(&self) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let drain = self.state.config.server.drain_delay;
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: readiness is now false"
        );
        if !drain.is_zero() {
            tokio::time::sleep(drain).await;
        }
        self.stop().await;
        tracing::info!("shutdown complete");
    }

    /// Waits until the servers end (after a signal or [`RunningBroker::stop`]).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Serves signals until SIGTERM or Ctrl-C: SIGHUP re-reads `config_path` (with its `$file`
/// references) and applies it with [`RunningBroker::reload`]; an invalid file is reported (key
/// paths only, never values) and the running configuration kept.
pub async fn serve_signals(broker: &RunningBroker, config_path: &std::path::Path) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
        ) else {
            wait_for_shutdown().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => match crate::config::load_file(config_path) {
                    Ok(cfg) => broker.reload(&cfg),
                    Err(errors) => tracing::warn!(
                        errors = errors.issues.len(),
                        report = %errors,
                        "SIGHUP: the configuration file is invalid; keeping the running configuration"
                    ),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (broker, config_path);
        wait_for_shutdown().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Builds the state, loads discovery (failure is logged and retried on demand), binds and
/// starts the listeners. Must run inside an actix system.
/// The shared second-level cache of `cache.shared`, when configured.
fn shared_cache(
    config: &Config,
    clock: &Arc<dyn Clock>,
    metrics: &Metrics,
) -> Result<Option<Arc<crate::broker::shared::SharedCache>>, StartError> {
    let Some(cfg) = &config.cache.shared else {
        return Ok(None);
    };
    let shared = crate::broker::shared::SharedCache::new(
        cfg,
        config.cache.negative_ttl,
        clock.clone(),
        metrics.clone(),
    )
    .map_err(StartError::SharedCache)?;
    tracing::info!(
        key_ids = ?cfg.encryption_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        "shared cache (Redis) configured; connecting on first use"
    );
    Ok(Some(Arc::new(shared)))
}

pub async fn start(config: Config) -> Result<RunningBroker, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningBroker, StartError> {
    let config = Arc::new(config);
    let kc = &config.keycloak;
    for w in crate::config::warnings(&config) {
        tracing::warn!(warning = %w, "configuration");
    }
    // One registry per broker, handed to every layer that records (no global instance).
    let metrics = Metrics::new();
    let outbound = Arc::new(
        Outbound::new(OutboundConfig::from(kc), metrics.clone()).map_err(StartError::Http)?,
    );
    let jwks = Arc::new(JwksCache::new(
        outbound.clone(),
        kc.jwks_min_refresh_interval,
    ));
    let idp = Arc::new(IdpClient::new(kc, outbound.clone(), jwks.clone()));
    let verifier = OidcVerifier::new(idp.issuer().to_owned(), jwks, clock.clone()).with_rules(
        UserClaimRules {
            client_id: config.keycloak.client_id.clone(),
            match_claim: config.user_token.match_claim.clone(),
            token_type_check: config.user_token.token_type_check,
        },
    );
    let verifier = Arc::new(match config.user_token.verify {
        crate::config::UserTokenVerify::Jwks => verifier,
        crate::config::UserTokenVerify::Introspection => verifier.with_introspection(idp.clone()),
    });
    if let Err(e) = idp.discover().await {
        tracing::warn!(error = %e, "IdP discovery failed at start-up; retrying on demand");
    }
    let assertion = match &config.assertion {
        Some(a) => Some(Arc::new(AssertionSigner::from_config(a)?)),
        None => None,
    };
    let service = TokenService::new(
        config.clone(),
        idp.clone(),
        verifier.realm().clone(),
        clock.clone(),
        metrics.clone(),
    )
    .with_assertion_signer(assertion.clone())
    .with_shared_cache(shared_cache(&config, &clock, &metrics)?)
    .into_shared();
    {
        // Entries exchanged for subject tokens whose key left the JWKS can never be served
        // again (the subject no longer verifies): drop them now rather than at expiry.
        let svc = Arc::downgrade(&service);
        verifier
            .jwks()
            .on_keys_removed(Arc::new(move |kids: &[String]| {
                if let Some(s) = svc.upgrade() {
                    s.user_cache().drop_subject_kids(kids);
                }
            }));
    }
    let backstage = Arc::new(BackstageVerifier::new(
        &config.backstage,
        &config.external_access,
        outbound,
        clock.clone(),
    ));
    let auth = Arc::new(Authenticator::new(
        backstage,
        verifier.clone(),
        config.user_token.clone(),
        config.keycloak.client_id.clone(),
    ));
    let state = web::Data::new(AppState {
        auth,
        assertion,
        config: config.clone(),
        service,
        verifier,
        idp,
        clock,
        metrics,
        draining: std::sync::atomic::AtomicBool::new(false),
    });

    let workers = config
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut handles = Vec::new();
    let mut tasks = Vec::new();

    // Checked here, where a bad setting can stop the start; each worker builds its own
    // (`proxy::forward::Forwarder`: a worker's upstream connections live on its own thread).
    let first_forwarder =
        crate::http::proxy::Forwarder::new(&config.proxy).map_err(StartError::Http)?;
    let proxy_config = config.proxy.clone();
    // `server.maxConnections` is per listener; actix counts per worker.
    let per_worker = config.server.max_connections.div_ceil(workers).max(1);
    let s = state.clone();
    let public = HttpServer::new(move || {
        // The same settings built a client above; should a worker's build fail anyway, it
        // shares that first one (correct, only without the per-thread pool).
        let forwarder = web::Data::new(
            crate::http::proxy::Forwarder::new(&proxy_config)
                .unwrap_or_else(|_| first_forwarder.clone()),
        );
        App::new()
            .app_data(s.clone())
            .app_data(forwarder)
            // Outermost the unread-body rule (it also covers the 431 of the header-size limit,
            // docs/security.md), then the header-size limit and the request span (traces.rs).
            .wrap(actix_web::middleware::from_fn(crate::http::public_edge))
            .configure(public_routes)
    })
    .workers(workers)
    .max_connections(per_worker)
    .client_disconnect_timeout(config.server.client_disconnect_timeout)
    .shutdown_timeout(config.server.shutdown_timeout.as_secs())
    .disable_signals()
    .bind(config.server.listen)
    .map_err(|source| StartError::Bind {
        addr: config.server.listen,
        source,
    })?;
    let public_addr = public
        .addrs()
        .first()
        .copied()
        .unwrap_or(config.server.listen);
    let server = public.run();
    handles.push(server.handle());
    tasks.push(actix_web::rt::spawn(server));

    let mut admin_addr = None;
    if let Some(listen) = config.admin.listen {
        let s = state.clone();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(s.clone())
                .wrap(actix_web::middleware::from_fn(
                    crate::http::body::close_unread_bodies,
                ))
                .configure(admin_routes)
        })
        .workers(1)
        .max_connections(config.server.max_connections)
        .client_disconnect_timeout(config.server.client_disconnect_timeout)
        .shutdown_timeout(config.server.shutdown_timeout.as_secs())
        .disable_signals()
        .bind(listen)
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        admin_addr = admin.addrs().first().copied();
        let server = admin.run();
        handles.push(server.handle());
        tasks.push(actix_web::rt::spawn(server));
    }
    tracing::info!(public = %public_addr, admin = ?admin_addr, "token-broker listening");
    Ok(RunningBroker {
        public_addr,
        admin_addr,
        state,
        handles,
        tasks,
    })
}
