//! The shared second-level cache (`cache.shared`, issue 15): several replicas, one cache, one
//! exchange per key across the cluster.
//!
//! Owns what the broker keeps in Redis and how: the lookup after a first-level (moka) miss,
//! the write of what the IdP issued, the cluster-wide single-flight lock, the shared failures
//! and the eviction broadcast ([`EvictionChannel`]). The first-level hit path never comes
//! here: the broker calls [`through`] only inside the first-level cache's fetch.
//!
//! Flow of a first-level miss (already coalesced per replica by moka):
//! 1. look up the key in Redis (one `MGET` of its names under every configured key): a token
//!    is served (`X-Token-Broker-Cache: shared`);
//! 2. otherwise take the key's lock (`SET NX PX lockTtl` with a random owner token): the owner
//!    asks the IdP, writes the result (token or failure), then releases the lock with a
//!    compare-and-delete script, so only the owner ever deletes it;
//! 3. a replica that finds the lock held polls (5 ms, growing to 100 ms) for the result; when
//!    the lock is gone without a result (the owner died and the lock expired, or it failed
//!    without a shareable result) one waiter takes the lock over; after `lockWait` a waiter
//!    asks the IdP itself (correctness over the bound).
//!
//! Redis trouble never fails a request: every command is bounded by `cache.shared.timeout`, a
//! failure counts in `token_broker_shared_cache_requests_total{result="error"}`, logs a
//! warning at most every 30 s, and skips Redis for one second (the request goes on with the
//! first level and the IdP as without a shared cache); the next command after that connects
//! again. Readiness does not depend on Redis.
//!
//! Nothing readable is stored ([`seal`]): key names are HMACs of the broker's cache key
//! (itself a digest of the credential and the request inputs), values are AES-256-GCM sealed.

mod evict;
mod resp;
mod seal;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

pub use evict::EvictionChannel;

/// Name spaces of the revocation markers (a logout's session, a user).
pub const REVOKED_SESSION: &str = "rs";
pub const REVOKED_SUBJECT: &str = "ru";
/// How long a revocation marker stays: longer than any entry the shared cache keeps (an entry
/// lives at most as long as the token issued for it; Keycloak's access tokens live minutes).
const REVOCATION_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Attempts at writing a revocation marker.
const REVOKE_ATTEMPTS: u32 = 3;
use resp::{Client, RedisError, Reply};
use seal::{FailedRecord, Keyring, Record, TokenRecord};

use super::{FetchError, IssuedToken};
use crate::clock::Clock;
use crate::config::{SharedCacheConfig, TokenType};
use crate::digest::{KeyDigest, fingerprint};
use crate::idp::IdpError;
use crate::metrics::{LockEvent, Metrics, SharedResult};
use crate::outbound::TransportKind;

/// Releases a lock only when it still holds our owner token (never another replica's lock
/// taken after ours expired).
const UNLOCK_SCRIPT: &[u8] =
    b"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/// How long Redis is skipped after a failure.
const BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this interval while Redis is failing.
const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// First and longest pause between two polls of a waiter.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);
/// The shortest life of a shared failure (with `cache.negativeTtl: 0` it is only read by the
/// requests waiting on the lock, and must outlive their next poll).
const MIN_FAILURE_TTL: Duration = Duration::from_secs(1);

/// The shared cache of one broker.
pub struct SharedCache {
    client: Arc<Client>,
    ring: Arc<Keyring>,
    prefix: String,
    lock_ttl: Duration,
    lock_wait: Duration,
    negative_ttl: Duration,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
}

/// What a lookup found.
enum Found {
    Token(Arc<IssuedToken>),
    Failure(IdpError),
    Miss,
    Unavailable,
}

enum Lock {
    Acquired,
    Held,
    Unavailable,
}

/// Redis reachability: a failure skips Redis for [`BACKOFF`] and warns at most every
/// [`WARN_INTERVAL`].
struct Health {
    epoch: Instant,
    down_until_ms: AtomicU64,
    last_warn_ms: AtomicU64,
    down: AtomicBool,
    metrics: Metrics,
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn available(&self) -> bool {
        self.now_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    fn failed(&self, op: &'static str, e: &RedisError) {
        self.metrics.shared_cache(if op == "write" {
            SharedResult::WriteError
        } else {
            SharedResult::Error
        });
        let now = self.now_ms();
        self.down_until_ms.store(
            now.saturating_add(u64::try_from(BACKOFF.as_millis()).unwrap_or(1000)),
            Ordering::Relaxed,
        );
        self.down.store(true, Ordering::Relaxed);
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(30_000);
        if (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_warn_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // The error's kind and Redis's own text: never a key name or a value.
            tracing::warn!(
                operation = op,
                kind = e.kind(),
                error = %e,
                "shared cache (Redis) unavailable: serving from this replica's cache and the IdP (warned at most every 30 s)"
            );
        }
    }

    fn ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("shared cache (Redis) reachable again");
        }
    }
}

impl SharedCache {
    /// Builds the shared cache from `cache.shared`; connects on first use.
    pub fn new(
        cfg: &SharedCacheConfig,
        negative_ttl: Duration,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
    ) -> Result<Self, String> {
        Ok(SharedCache {
            client: Arc::new(Client::new(cfg)?),
            ring: Arc::new(Keyring::new(&cfg.encryption_keys)?),
            prefix: cfg.key_prefix.clone(),
            lock_ttl: cfg.lock_ttl,
            lock_wait: cfg.lock_wait,
            negative_ttl,
            health: Arc::new(Health {
                epoch: Instant::now(),
                down_until_ms: AtomicU64::new(0),
                last_warn_ms: AtomicU64::new(0),
                down: AtomicBool::new(false),
                metrics: metrics.clone(),
            }),
            metrics,
            clock,
        })
    }

    /// The eviction broadcast over this cache's Redis (channel `<keyPrefix>evict`, messages
    /// sealed like values): `on_evict` runs on every replica for every published selector.
    pub fn eviction_channel(
        &self,
        on_evict: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Arc<EvictionChannel> {
        EvictionChannel::start(
            self.client.clone(),
            self.ring.clone(),
            format!("{}evict", self.prefix),
            on_evict,
        )
    }

    async fn cmd(&self, op: &'static str, args: &[&[u8]]) -> Option<Reply> {
        if !self.health.available() {
            return None;
        }
        match self.client.cmd(args).await {
            Ok(r) => {
                self.health.ok();
                Some(r)
            }
            Err(e) => {
                self.health.failed(op, &e);
                None
            }
        }
    }

    /// Looks `key` up: a token under any configured key's name, or (when `failures`) a shared
    /// failure.
    async fn lookup(&self, key: &KeyDigest, failures: bool) -> Found {
        let started = Instant::now();
        let mut names = self.ring.names(&self.prefix, "t", key);
        let failure_name = self.ring.newest_name(&self.prefix, "e", key);
        if failures {
            names.push(failure_name.clone());
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
        args.push(b"MGET");
        args.extend(names.iter().map(|n| n.as_bytes()));
        let reply = self.cmd("read", &args).await;
        self.metrics.shared_cache_latency(started.elapsed());
        let Some(Reply::Array(Some(values))) = reply else {
            return Found::Unavailable;
        };
        let now = self.clock.now_unix();
        for (name, value) in names.iter().zip(values) {
            let Reply::Bulk(Some(bytes)) = value else {
                continue;
            };
            match self.ring.open(name, &bytes) {
                Some(Record::Token(t)) if t.cache_until > now => {
                    if self.revoked(&t).await {
                        // Logged out (or revoked) after it was cached: a miss, the IdP decides.
                        continue;
                    }
                    if let Some(t) = to_issued(t) {
                        self.metrics.shared_cache(SharedResult::Hit);
                        return Found::Token(t);
                    }
                    self.metrics.shared_cache(SharedResult::Undecryptable);
                }
                // Expired by our clock (Redis's PX is the backstop): a miss.
                Some(Record::Token(_)) => {}
                Some(Record::Failed(f)) if failures && *name == failure_name => {
                    return Found::Failure(from_failed(f));
                }
                Some(_) => self.metrics.shared_cache(SharedResult::Undecryptable),
                None => self.metrics.shared_cache(SharedResult::Undecryptable),
            }
        }
        self.metrics.shared_cache(SharedResult::Miss);
        Found::Miss
    }

    /// Records that every entry of the session or user `digest` (a [`crate::broker::cache`]
    /// index digest) cached up to now is revoked: [`Self::lookup`] treats such an entry as a
    /// miss on every replica, also one that missed the eviction broadcast. The marker's name is
    /// an HMAC like every other name; its value is only the time (Unix seconds).
    ///
    /// Unlike cache writes, a revocation is not skipped while Redis is marked unavailable and is
    /// tried [`REVOKE_ATTEMPTS`] times: losing it would let other replicas serve a logged-out
    /// session's entry from Redis. Returns whether every marker was written (a failure is
    /// logged as an error).
    pub(crate) async fn revoke(&self, ns: &'static str, digest: &KeyDigest) -> bool {
        let at = self.clock.now_unix().to_string();
        let px = REVOCATION_MEMORY.as_millis().to_string();
        let mut all = true;
        for name in self.ring.names(&self.prefix, ns, digest) {
            let args: [&[u8]; 5] = [b"SET", name.as_bytes(), at.as_bytes(), b"PX", px.as_bytes()];
            let mut written = false;
            for attempt in 1..=REVOKE_ATTEMPTS {
                match self.client.cmd(&args).await {
                    Ok(_) => {
                        self.health.ok();
                        written = true;
                        break;
                    }
                    Err(e) if attempt == REVOKE_ATTEMPTS => self.health.failed("write", &e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            all &= written;
        }
        if !all {
            tracing::error!(
                "could not record a logout/revocation in the shared cache (Redis): other replicas may serve that session's cached entries from Redis until they expire"
            );
        }
        all
    }

    /// Whether a logout or `/admin/revoke` since `t` was cached names its session or user.
    /// Fails closed: when Redis cannot tell, the entry is not served (the IdP decides).
    async fn revoked(&self, t: &TokenRecord) -> bool {
        let mut names = Vec::new();
        if let Some(d) = &t.index_sid {
            names.extend(self.ring.names(&self.prefix, REVOKED_SESSION, d));
        }
        if let Some(d) = &t.index_sub {
            names.extend(self.ring.names(&self.prefix, REVOKED_SUBJECT, d));
        }
        if names.is_empty() {
            return false;
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
        args.push(b"MGET");
        args.extend(names.iter().map(|n| n.as_bytes()));
        let Some(Reply::Array(Some(values))) = self.cmd("read", &args).await else {
            return true;
        };
        values.iter().any(|v| match v {
            Reply::Bulk(None) => false,
            Reply::Bulk(Some(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_none_or(|at| t.created_at <= at),
            _ => true,
        })
    }

    /// Writes a token under the newest key's name, expiring at its `cache_until`.
    async fn put(&self, key: &KeyDigest, token: &IssuedToken) {
        let left = token.cache_until.saturating_sub(self.clock.now_unix());
        if left == 0 {
            return;
        }
        let issued_token_type = token.issued_token_type.urn().to_owned();
        let record = Record::Token(TokenRecord {
            access_token: token.access_token.expose_secret().to_owned(),
            token_type: token.token_type.to_string(),
            issued_token_type,
            scope: token.scope.as_deref().map(str::to_owned),
            expires_at: token.expires_at,
            cache_until: token.cache_until,
            subject_kid: token.subject_kid.as_deref().map(str::to_owned),
            created_at: token.created_at,
            index_sub: token.index.sub,
            index_sid: token.index.sid,
        });
        let name = self.ring.newest_name(&self.prefix, "t", key);
        self.set(&name, &record, Duration::from_secs(left)).await;
    }

    async fn put_failure(&self, key: &KeyDigest, e: &IdpError) {
        let Some(f) = to_failed(e) else { return };
        let name = self.ring.newest_name(&self.prefix, "e", key);
        let ttl = self.negative_ttl.max(MIN_FAILURE_TTL);
        self.set(&name, &Record::Failed(f), ttl).await;
    }

    async fn set(&self, name: &str, record: &Record, ttl: Duration) {
        let Some(value) = self.ring.seal(name, record) else {
            return;
        };
        let px = ttl.as_millis().max(1).to_string();
        self.cmd(
            "write",
            &[b"SET", name.as_bytes(), &value, b"PX", px.as_bytes()],
        )
        .await;
    }

    /// Drops `key`'s token from Redis (every name): the broker dropped it from its own cache
    /// because the target refused it, or wants a longer-lived one.
    pub(super) async fn remove(&self, key: &KeyDigest) {
        let names = self.ring.names(&self.prefix, "t", key);
        let mut args: Vec<&[u8]> = vec![b"DEL"];
        args.extend(names.iter().map(|n| n.as_bytes()));
        self.cmd("write", &args).await;
    }

    async fn try_lock(&self, name: &str, owner: &str) -> Lock {
        let px = self.lock_ttl.as_millis().max(1).to_string();
        match self
            .cmd(
                "lock",
                &[
                    b"SET",
                    name.as_bytes(),
                    owner.as_bytes(),
                    b"NX",
                    b"PX",
                    px.as_bytes(),
                ],
            )
            .await
        {
            Some(Reply::Simple(s)) if s == "OK" => Lock::Acquired,
            Some(Reply::Bulk(None)) => Lock::Held,
            _ => Lock::Unavailable,
        }
    }

    /// A first-level miss: Redis, then the lock, then `fetch` (see the module doc).
    async fn fetch<Fut>(
        &self,
        key: KeyDigest,
        from_shared: &AtomicBool,
        fetch: Fut,
    ) -> Result<Arc<IssuedToken>, FetchError>
    where
        Fut: Future<Output = Result<Arc<IssuedToken>, FetchError>>,
    {
        match self.lookup(&key, !self.negative_ttl.is_zero()).await {
            Found::Token(t) => {
                from_shared.store(true, Ordering::Relaxed);
                return Ok(t);
            }
            Found::Failure(e) => return Err(FetchError::Idp(e)),
            Found::Unavailable => return self.fetch_alone(&key, fetch).await,
            Found::Miss => {}
        }
        let lock = self.ring.newest_name(&self.prefix, "l", &key);
        let owner = owner_token();
        match self.try_lock(&lock, &owner).await {
            Lock::Acquired => {
                self.metrics.shared_lock(LockEvent::Acquired);
                return self
                    .fetch_as_owner(&key, from_shared, lock, owner, fetch)
                    .await;
            }
            Lock::Unavailable => return self.fetch_alone(&key, fetch).await,
            Lock::Held => {}
        }
        let deadline = Instant::now() + self.lock_wait;
        let mut pause = POLL_FIRST;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.metrics.shared_lock(LockEvent::WaitTimeout);
                tracing::debug!(
                    wait_ms = self.lock_wait.as_millis() as u64,
                    "another replica's exchange took longer than cache.shared.lockWait: exchanging here"
                );
                return self.fetch_alone(&key, fetch).await;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 3 / 2).min(POLL_MAX);
            match self.lookup(&key, true).await {
                Found::Token(t) => {
                    self.metrics.shared_lock(LockEvent::Waited);
                    from_shared.store(true, Ordering::Relaxed);
                    return Ok(t);
                }
                Found::Failure(e) => {
                    self.metrics.shared_lock(LockEvent::SharedError);
                    return Err(FetchError::Idp(e));
                }
                Found::Unavailable => return self.fetch_alone(&key, fetch).await,
                Found::Miss => {}
            }
            match self.try_lock(&lock, &owner).await {
                Lock::Acquired => {
                    self.metrics.shared_lock(LockEvent::Takeover);
                    return self
                        .fetch_as_owner(&key, from_shared, lock, owner, fetch)
                        .await;
                }
                Lock::Unavailable => return self.fetch_alone(&key, fetch).await,
                Lock::Held => {}
            }
        }
    }

    /// Without the lock (Redis unavailable, or the wait bound passed): ask the IdP, then share
    /// the token if Redis takes it.
    async fn fetch_alone<Fut>(
        &self,
        key: &KeyDigest,
        fetch: Fut,
    ) -> Result<Arc<IssuedToken>, FetchError>
    where
        Fut: Future<Output = Result<Arc<IssuedToken>, FetchError>>,
    {
        let result = fetch.await;
        if let Ok(t) = &result {
            self.put(key, t).await;
        }
        result
    }

    /// Holding the lock: ask the IdP, write the result, release the lock (also when this
    /// request is dropped half-way: the guard releases it).
    async fn fetch_as_owner<Fut>(
        &self,
        key: &KeyDigest,
        from_shared: &AtomicBool,
        lock: String,
        owner: String,
        fetch: Fut,
    ) -> Result<Arc<IssuedToken>, FetchError>
    where
        Fut: Future<Output = Result<Arc<IssuedToken>, FetchError>>,
    {
        let mut guard = UnlockGuard {
            client: self.client.clone(),
            lock: Some((lock, owner)),
        };
        // Look again under the lock: the previous holder may have written the token and
        // released the lock between this request's first lookup and its `SET NX`.
        let result = match self.lookup(key, false).await {
            Found::Token(t) => {
                from_shared.store(true, Ordering::Relaxed);
                Ok(t)
            }
            _ => {
                let result = fetch.await;
                match &result {
                    Ok(t) => self.put(key, t).await,
                    Err(FetchError::Idp(e)) => self.put_failure(key, e).await,
                    // An answer that failed the broker's checks is not shared: a waiter takes
                    // over.
                    Err(FetchError::Invalid(_)) => {}
                }
                result
            }
        };
        if let Some((lock, owner)) = guard.lock.take() {
            self.cmd(
                "unlock",
                &[
                    b"EVAL",
                    UNLOCK_SCRIPT,
                    b"1",
                    lock.as_bytes(),
                    owner.as_bytes(),
                ],
            )
            .await;
        }
        result
    }
}

/// Releases a lock whose owner's request was dropped before it could (client gone): without
/// it the waiters would wait for the lock to expire.
struct UnlockGuard {
    client: Arc<Client>,
    lock: Option<(String, String)>,
}

impl Drop for UnlockGuard {
    fn drop(&mut self) {
        let Some((lock, owner)) = self.lock.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            rt.spawn(async move {
                let _ = client
                    .cmd(&[
                        b"EVAL",
                        UNLOCK_SCRIPT,
                        b"1",
                        lock.as_bytes(),
                        owner.as_bytes(),
                    ])
                    .await;
            });
        }
    }
}

/// The L2 step inside the first-level fetch: `fetch` as is without a shared cache.
/// `from_shared` is set when the token came from Redis (the `shared` cache status).
pub(super) async fn through<Fut>(
    shared: Option<&SharedCache>,
    key: KeyDigest,
    from_shared: &AtomicBool,
    fetch: Fut,
) -> Result<Arc<IssuedToken>, FetchError>
where
    Fut: Future<Output = Result<Arc<IssuedToken>, FetchError>>,
{
    match shared {
        None => fetch.await,
        // Boxed: the IdP fetch is moved through several awaits here, and unboxed its state
        // would be copied into each of them (deep futures overflow a worker's stack).
        Some(s) => Box::pin(s.fetch(key, from_shared, Box::pin(fetch))).await,
    }
}

/// 128 random bits, hex: whose lock it is.
fn owner_token() -> String {
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // No randomness: a token that is unique in this process still protects against
        // releasing another replica's lock only probabilistically; use time and a counter.
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        b[..8].copy_from_slice(&n.to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn to_issued(t: TokenRecord) -> Option<Arc<IssuedToken>> {
    let issued_token_type = TokenType::from_urn(&t.issued_token_type)?;
    Some(Arc::new(IssuedToken {
        fingerprint: fingerprint(&t.access_token),
        access_token: SecretString::from(t.access_token),
        token_type: crate::broker::cache::shared_str(&t.token_type),
        issued_token_type,
        scope: t.scope.as_deref().map(crate::broker::cache::shared_str),
        expires_at: t.expires_at,
        cache_until: t.cache_until,
        subject_kid: t
            .subject_kid
            .as_deref()
            .map(crate::broker::cache::shared_str),
        created_at: t.created_at,
        index: crate::broker::cache::SubjectIndex {
            sub: t.index_sub,
            sid: t.index_sid,
        },
    }))
}

fn to_failed(e: &IdpError) -> Option<FailedRecord> {
    Some(match e {
        IdpError::Transport { kind } => FailedRecord::Transport(
            match kind {
                TransportKind::Timeout => "timeout",
                TransportKind::Connect => "connect",
                TransportKind::Body => "body",
                TransportKind::Other => "other",
            }
            .to_owned(),
        ),
        IdpError::Rejected {
            status,
            error,
            description,
        } => FailedRecord::Rejected {
            status: *status,
            error: error.clone(),
            description: description.clone(),
        },
        IdpError::Protocol { status, detail } => FailedRecord::Protocol {
            status: *status,
            detail: detail.clone(),
        },
        IdpError::Discovery(d) => FailedRecord::Discovery(d.clone()),
        // A local refusal says nothing about the request: never shared (nor remembered).
        IdpError::Busy => return None,
    })
}

fn from_failed(f: FailedRecord) -> IdpError {
    match f {
        FailedRecord::Transport(k) => IdpError::Transport {
            kind: match k.as_str() {
                "timeout" => TransportKind::Timeout,
                "connect" => TransportKind::Connect,
                "body" => TransportKind::Body,
                _ => TransportKind::Other,
            },
        },
        FailedRecord::Rejected {
            status,
            error,
            description,
        } => IdpError::Rejected {
            status,
            error,
            description,
        },
        FailedRecord::Protocol { status, detail } => IdpError::Protocol { status, detail },
        FailedRecord::Discovery(d) => IdpError::Discovery(d),
    }
}
