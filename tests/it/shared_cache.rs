//! The shared cache (issue 15) against a real Redis: several broker replicas sharing one
//! `redis-server` and one dev IdP. One exchange per key across the cluster, a token cached by
//! one replica served by another (`X-Token-Broker-Cache: shared`), nothing readable in Redis,
//! altered values refused, a dead lock holder taken over, Redis failures never failing a
//! request, key rotation, and the eviction broadcast.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use token_broker::app::RunningBroker;
use token_broker_devidp::{self as devidp, DevIdpHandle, DevUser};

use crate::redis_support::Redis;
use crate::support::*;

/// Two 32-byte keys (bytes 0..31 and 32..63), base64.
const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const LOCK_TTL: Duration = Duration::from_secs(3);

/// `cache.shared` YAML lines (under `cache:`) for `keys` (id, base64), newest first. The
/// command timeout is 2 s, not 250 ms: on a loaded 2-core machine a debug build's task can
/// wait longer than 250 ms for its turn, and a timed-out lock command rightly makes that
/// replica exchange on its own, which the single-flight assertions would count.
fn shared_section(url: &str, keys: &[(&str, &str)]) -> String {
    let mut s = format!(
        "  shared:\n    url: {url}\n    keyPrefix: \"tb-test:\"\n    timeout: 2s\n    lockTtl: {}s\n    lockWait: 10s\n    encryptionKeys:\n",
        LOCK_TTL.as_secs()
    );
    for (id, key) in keys {
        s.push_str(&format!("      - id: {id}\n        key: {key}\n"));
    }
    s
}

struct Cluster {
    /// Extra `cache.shared` lines (indented by 4), e.g. the ACL user.
    extra: String,
    idp: DevIdpHandle,
    redis: Redis,
    opts: Opts,
    brokers: Vec<RunningBroker>,
    urls: Vec<String>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(replicas: usize, opts: Opts) -> Cluster {
        Self::start_on(Redis::start(), String::new(), replicas, opts).await
    }

    async fn start_on(redis: Redis, extra: String, replicas: usize, opts: Opts) -> Cluster {
        let idp = devidp::start(opts.idp.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut c = Cluster {
            extra,
            idp,
            redis,
            opts,
            brokers: Vec::new(),
            urls: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(512)
                // Well under the broker's 5 s keep-alive: on a loaded machine a connection idle
                // near it can be closed by the server as the client reuses it.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        };
        for _ in 0..replicas {
            c.add_replica(&[("k1", K1)]).await;
        }
        c
    }

    fn yaml(&self, keys: &[(&str, &str)]) -> String {
        config_yaml(&self.idp.issuer(), &self.opts)
            .replacen(
                "  negativeTtl: 0s\n",
                &format!(
                    "  negativeTtl: 0s\n{}{}",
                    shared_section(&self.redis.url(), keys),
                    self.extra
                ),
                1,
            )
            .replace(
                "  jwksMinRefreshInterval: 1s\n",
                "  jwksMinRefreshInterval: 1s\n  maxConcurrentRequests: 512\n",
            )
    }

    /// Starts one more replica with `keys`; returns its index.
    async fn add_replica(&mut self, keys: &[(&str, &str)]) -> usize {
        let env = HashMap::from([("BROKER_SECRET".to_owned(), BROKER_SECRET.to_owned())]);
        let cfg = token_broker::config::load_str(&self.yaml(keys), &env, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let b = token_broker::app::start(cfg).await.unwrap();
        self.urls.push(b.public_url());
        self.brokers.push(b);
        self.brokers.len() - 1
    }

    async fn login(&self, user: &str) -> String {
        let r = self
            .http
            .post(self.idp.token_endpoint())
            .form(&[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", user),
                ("password", user),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {user}");
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// An exchange for `target` on replica `i`: status, cache header, body.
    async fn exchange_on(
        &self,
        i: usize,
        user_token: &str,
        target: &str,
    ) -> (u16, String, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}/v1/token", self.urls[i]))
            .bearer_auth(STATIC_TOKEN)
            .header("X-Forwarded-Access-Token", user_token)
            .form(&[("grant_type", TE), ("audience", target)])
            .send()
            .await
            .unwrap();
        let (status, _, cache, body) = parts(r).await;
        (status, cache, body)
    }

    fn exchanges(&self) -> usize {
        self.idp.count_grant(TE)
    }

    async fn stop(self) {
        for b in &self.brokers {
            b.stop().await;
        }
        self.idp.stop().await;
    }
}

#[actix_web::test]
async fn a_cold_burst_over_three_replicas_makes_one_exchange() {
    let c = Cluster::start(3, Opts::default()).await;
    let token = c.login("alice").await;
    // Every replica warm (realm keys loaded, connections open): the burst reaches all three
    // at once.
    let bob = c.login("bob").await;
    for i in 0..3 {
        let (s, _, body) = c.exchange_on(i, &bob, "sonataflow").await;
        assert_eq!(s, 200, "{body}");
    }
    let warm = c.exchanges();
    // Long enough that the whole burst arrives while the one exchange is in flight.
    c.idp.set_token_endpoint_delay(Duration::from_millis(500));
    let cr = &c;
    let tok = token.as_str();
    let results: Vec<(u16, String, serde_json::Value)> = futures_util::stream::iter(0..300usize)
        .map(|i| async move { cr.exchange_on(i % 3, tok, "kagenti").await })
        .buffer_unordered(300)
        .collect()
        .await;
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let mut tokens = std::collections::HashSet::new();
    for (status, cache, body) in &results {
        assert_eq!(*status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
        *statuses.entry(cache.clone()).or_default() += 1;
    }
    eprintln!(
        "cold burst: {statuses:?}; exchanges {} (warm-up {warm})",
        c.exchanges()
    );
    assert_eq!(
        c.exchanges() - warm,
        1,
        "one exchange for 300 requests on 3 replicas"
    );
    assert_eq!(tokens.len(), 1);
    assert_eq!(statuses.get("miss").copied(), Some(1), "{statuses:?}");
    assert!(
        statuses.get("shared").copied().unwrap_or(0) >= 2,
        "{statuses:?}"
    );
    c.stop().await;
}

/// Without an IdP delay the one exchange ends fast: a replica whose first lookup missed can
/// take the lock just after the holder released it. It must look again under the lock rather
/// than exchange a second time.
#[actix_web::test]
async fn a_fast_exchange_is_not_repeated_by_a_replica_that_takes_the_lock_after_it() {
    let c = Cluster::start(3, Opts::default()).await;
    let warm = c.login("bob").await;
    for i in 0..3 {
        assert_eq!(c.exchange_on(i, &warm, "sonataflow").await.0, 200);
    }
    let cr = &c;
    for round in 0..10 {
        let token = c.login("alice").await;
        let before = c.exchanges();
        let tok = token.as_str();
        let results: Vec<(u16, String, serde_json::Value)> =
            futures_util::stream::iter(0..150usize)
                .map(|i| async move { cr.exchange_on(i % 3, tok, "kagenti").await })
                .buffer_unordered(150)
                .collect()
                .await;
        assert!(results.iter().all(|(s, _, _)| *s == 200));
        assert_eq!(c.exchanges() - before, 1, "round {round}");
    }
    c.stop().await;
}

#[actix_web::test]
async fn a_token_cached_by_one_replica_is_served_by_another() {
    let c = Cluster::start(2, Opts::default()).await;
    let token = c.login("alice").await;
    let (s, cache, a) = c.exchange_on(0, &token, "kagenti").await;
    assert_eq!((s, cache.as_str()), (200, "miss"));
    let (s, cache, b) = c.exchange_on(1, &token, "kagenti").await;
    assert_eq!((s, cache.as_str()), (200, "shared"));
    assert_eq!(a["access_token"], b["access_token"]);
    assert_eq!(a["expires_in"], b["expires_in"]);
    // Now in replica B's own cache.
    let (_, cache, _) = c.exchange_on(1, &token, "kagenti").await;
    assert_eq!(cache, "hit");
    assert_eq!(c.exchanges(), 1);
    c.stop().await;
}

#[actix_web::test]
async fn redis_holds_nothing_readable_and_an_altered_value_is_a_miss() {
    let c = Cluster::start(3, Opts::default()).await;
    let mut secrets: Vec<String> = Vec::new();
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        let t = c.login(user).await;
        for target in ["kagenti", "sonataflow"] {
            let (s, cache, body) = c.exchange_on(0, &t, target).await;
            assert_eq!((s, cache.as_str()), (200, "miss"), "{body}");
            let issued = body["access_token"].as_str().unwrap().to_owned();
            let claims = claims(&issued);
            secrets.push(claims["sub"].as_str().unwrap().to_owned());
            secrets.push(claims["preferred_username"].as_str().unwrap().to_owned());
            // Each part of the JWT, and a 12-character fragment of each.
            for part in issued.split('.') {
                secrets.push(part.to_owned());
                secrets.push(part.chars().skip(part.len() / 2).take(12).collect());
            }
            secrets.push(issued);
        }
        for part in t.split('.') {
            secrets.push(part.chars().skip(part.len() / 2).take(12).collect());
        }
        tokens.push(t);
    }
    let keys = c.redis.keys();
    assert!(keys.len() >= 4, "{keys:?}");
    for key in &keys {
        let value = c.redis.cli_bytes(&["GET", key]);
        for s in &secrets {
            assert!(!key.contains(s.as_str()), "key {key} contains {s}");
            assert!(
                !value.windows(s.len()).any(|w| w == s.as_bytes()),
                "value of {key} contains {s}"
            );
        }
        assert!(!key.contains("alice") && !key.contains("kagenti"), "{key}");
    }
    // Alter every stored value (one byte of the ciphertext): replica C must not serve it.
    for key in &keys {
        let out = c.redis.cli(&["SETRANGE", key, "30", "\u{1}"]);
        assert!(out.trim().parse::<u64>().is_ok(), "{out}");
    }
    let before = c.exchanges();
    let (s, cache, body) = c.exchange_on(2, &tokens[0], "kagenti").await;
    assert_eq!((s, cache.as_str()), (200, "miss"), "{body}");
    assert_eq!(c.exchanges(), before + 1, "an altered value is a miss");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["preferred_username"],
        "alice"
    );
    c.stop().await;
}

#[actix_web::test]
async fn key_rotation_keeps_old_entries_served() {
    let mut c = Cluster::start(1, Opts::default()).await;
    let token = c.login("alice").await;
    let (_, cache, a) = c.exchange_on(0, &token, "kagenti").await;
    assert_eq!(cache, "miss");
    // A replica with a new key on top: the entry sealed with k1 is still served.
    let rotated = c.add_replica(&[("k2", K2), ("k1", K1)]).await;
    let (s, cache, b) = c.exchange_on(rotated, &token, "kagenti").await;
    assert_eq!((s, cache.as_str()), (200, "shared"), "{b}");
    assert_eq!(a["access_token"], b["access_token"]);
    // New entries are sealed with k2: a replica that still only has k1 cannot open them.
    let bob = c.login("bob").await;
    let (_, cache, _) = c.exchange_on(rotated, &bob, "kagenti").await;
    assert_eq!(cache, "miss");
    let (_, cache, _) = c.exchange_on(0, &bob, "kagenti").await;
    assert_eq!(cache, "miss", "k1-only replica cannot read a k2 entry");
    // Once k1 is retired, its entries are gone for the replica without it.
    let only_new = c.add_replica(&[("k2", K2)]).await;
    let (_, cache, _) = c.exchange_on(only_new, &token, "kagenti").await;
    assert_eq!(cache, "miss");
    c.stop().await;
}

#[actix_web::test]
async fn redis_stopped_mid_load_fails_no_request_and_sharing_resumes_after_restart() {
    let c = Cluster::start(3, Opts::default()).await;
    let mut tokens = Vec::new();
    for i in 0..30 {
        let name = format!("load{i:02}");
        c.idp.add_user(DevUser::new(&name, &name));
        tokens.push(c.login(&name).await);
    }
    let stop_at = Instant::now() + Duration::from_millis(800);
    let end_at = Instant::now() + Duration::from_millis(2500);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let cr = &c;
        let tokens = &tokens;
        let failures = failures.clone();
        let total = total.clone();
        async move {
            let mut n = 0usize;
            while Instant::now() < end_at {
                let batch: Vec<_> = (0..24)
                    .map(|k| {
                        let i = n + k;
                        let target = if i.is_multiple_of(2) {
                            "kagenti"
                        } else {
                            "sonataflow"
                        };
                        cr.exchange_on(i % 3, &tokens[i % tokens.len()], target)
                    })
                    .collect();
                for (status, _, body) in futures_util::future::join_all(batch).await {
                    total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if status != 200 {
                        failures.lock().unwrap().push(body.to_string());
                    }
                }
                n += 24;
            }
        }
    };
    let killer = async {
        tokio::time::sleep_until(stop_at.into()).await;
        c.redis.stop();
    };
    futures_util::future::join(load, killer).await;
    let failures = failures.lock().unwrap().clone();
    let total = total.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "redis stopped mid-load: {total} requests, {} failed",
        failures.len()
    );
    assert!(total > 100, "{total}");
    assert!(failures.is_empty(), "{failures:?}");

    c.redis.restart();
    // The one-second backoff after the failures, then connecting again by itself.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.idp.add_user(DevUser::new("after", "after"));
    let t = c.login("after").await;
    let (_, cache, _) = c.exchange_on(0, &t, "kagenti").await;
    assert_eq!(cache, "miss");
    let (_, cache, _) = c.exchange_on(1, &t, "kagenti").await;
    assert_eq!(cache, "shared", "shared hits resume after Redis is back");
    c.stop().await;
}

/// A replica as a separate process (so it can be killed mid-exchange): `serve` with the
/// cluster's configuration on a fixed loopback port.
struct Process {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Process {
    async fn start(c: &Cluster) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let yaml = c.yaml(&[("k1", K1)]).replacen(
            "  listen: 127.0.0.1:0\n  workers",
            &format!("  listen: 127.0.0.1:{port}\n  workers"),
            1,
        );
        let dir =
            std::env::temp_dir().join(format!("tb-shared-proc-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yaml");
        std::fs::write(&file, yaml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .env("BROKER_SECRET", BROKER_SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        loop {
            // The public listener answers (404 for `/`): the process is serving. (Readiness is
            // on the admin listener, whose port is not fixed here.)
            if c.http.get(format!("{url}/")).send().await.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "replica process did not start: {}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Process { child, url, dir }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_web::test]
async fn a_lock_holder_killed_mid_exchange_is_taken_over_within_the_lock_ttl() {
    let c = Cluster::start(1, Opts::default()).await;
    let mut holder = Process::start(&c).await;
    let token = c.login("alice").await;
    let delay = Duration::from_millis(1500);
    c.idp.set_token_endpoint_delay(delay);
    // The process takes the lock and calls the IdP (which answers after `delay`)...
    let req = c
        .http
        .post(format!("{}/v1/token", holder.url))
        .bearer_auth(STATIC_TOKEN)
        .header("X-Forwarded-Access-Token", &token)
        .form(&[("grant_type", TE), ("audience", "kagenti")])
        .send();
    let dead = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Counted: exchanges the IdP granted. (`serve` also sends its start-up client-authentication
    // probe, an exchange of a dummy subject token the IdP refuses with 400.)
    let granted = || {
        c.idp
            .requests()
            .iter()
            .filter(|r| r.grant_type.as_deref() == Some(TE) && r.status == 200)
            .count()
    };
    assert_eq!(granted(), 0, "the holder's exchange is still in flight");
    // ...and dies before it could write the result or release the lock.
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    assert!(
        dead.await.unwrap().is_err(),
        "the killed replica's request fails"
    );
    let killed_at = Instant::now();
    let (s, cache, body) = c.exchange_on(0, &token, "kagenti").await;
    let took = killed_at.elapsed();
    eprintln!(
        "takeover after a killed holder: {took:?} (lock TTL {LOCK_TTL:?}, IdP delay {delay:?})"
    );
    assert_eq!((s, cache.as_str()), (200, "miss"), "{body}");
    // It waited for the lock (held until its TTL ran out), then exchanged itself.
    assert!(
        took + Duration::from_millis(400) >= LOCK_TTL - Duration::from_millis(300),
        "{took:?}"
    );
    assert!(
        took <= LOCK_TTL + delay + Duration::from_secs(2),
        "{took:?}"
    );
    c.stop().await;
}

#[actix_web::test]
async fn the_eviction_channel_reaches_every_replica_and_drops_forged_messages() {
    use token_broker::broker::shared::SharedCache;
    let redis = Redis::start();
    let yaml = format!(
        "keycloak:\n  issuer: https://kc.example.com/realms/rhdh\n  clientId: token-broker\n  clientSecret: abc\ntargets:\n  kagenti:\n    audience: kagenti-api\ncache:\n{}",
        shared_section(&redis.url(), &[("k1", K1)])
    );
    let cfg =
        token_broker::config::load_str(&yaml, &HashMap::new(), std::path::Path::new(".")).unwrap();
    let shared_cfg = cfg.cache.shared.clone().unwrap();
    let mut channels = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = got.clone();
        let cache = SharedCache::new(
            &shared_cfg,
            Duration::ZERO,
            Arc::new(token_broker::clock::SystemClock),
            token_broker::metrics::Metrics::new(),
        )
        .unwrap();
        let ch = cache.eviction_channel(Arc::new(move |sel: &str| {
            sink.lock().unwrap().push(sel.to_owned());
        }));
        channels.push((cache, ch));
        seen.push(got);
    }
    let t0 = Instant::now();
    while !channels.iter().all(|(_, ch)| ch.is_subscribed()) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "subscribers did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A forged (unsealed) message on the channel is dropped.
    let n = redis.cli(&["PUBLISH", "tb-test:evict", "user:default/mallory"]);
    assert_eq!(n.trim(), "2");
    let delivered = channels[0].1.publish("user:default/alice").await.unwrap();
    assert_eq!(delivered, 2);
    let t0 = Instant::now();
    while seen.iter().any(|g| g.lock().unwrap().is_empty()) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "eviction not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for g in &seen {
        assert_eq!(*g.lock().unwrap(), vec!["user:default/alice".to_owned()]);
    }
    // After a Redis restart the subscribers come back by themselves.
    redis.stop();
    redis.restart();
    let t0 = Instant::now();
    loop {
        if channels.iter().all(|(_, ch)| ch.is_subscribed())
            && channels[1].1.publish("user:default/bob").await == Ok(2)
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no resubscription");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t0 = Instant::now();
    while seen.iter().any(|g| g.lock().unwrap().len() < 2) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "eviction after restart not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The 1000-user no-leak test (tests/it/no_leak.rs) over three replicas sharing Redis: every
/// token a user receives on any replica carries that user's `sub`, on both targets.
#[actix_web::test]
async fn a_thousand_users_over_three_replicas_each_only_ever_get_their_own_token() {
    const USERS: usize = 1000;
    const PASSES: usize = 2;
    const CONCURRENCY: usize = 48;
    let mut opts = Opts {
        margin: "2s",
        timeout: "30s",
        ..Opts::default()
    };
    for cl in &mut opts.idp.clients {
        if cl.client_id == "token-broker" {
            cl.access_token_lifespan = Some(Duration::from_secs(4));
        }
    }
    let c = Cluster::start(3, opts).await;
    let names: Vec<String> = (0..USERS).map(|i| format!("leak{i:04}")).collect();
    for n in &names {
        c.idp.add_user(DevUser::new(n, "pw"));
    }
    let ids: HashMap<String, String> = names
        .iter()
        .map(|n| (n.clone(), c.idp.user_id(n).unwrap()))
        .collect();
    let cr = &c;
    let tokens: Vec<String> = futures_util::stream::iter(names.iter())
        .map(|n| async move {
            let r = cr
                .http
                .post(cr.idp.token_endpoint())
                .form(&[
                    ("grant_type", "password"),
                    ("client_id", "dev-frontend"),
                    ("username", n.as_str()),
                    ("password", "pw"),
                ])
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let tokens = &tokens;
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for pass in 0..PASSES {
        let mut order: Vec<usize> = (0..USERS).collect();
        order.rotate_left(pass * 337 % USERS);
        let results: Vec<(usize, &str, u16, String, serde_json::Value)> =
            futures_util::stream::iter(order.into_iter().flat_map(|i| {
                let t = if (i + pass) % 2 == 0 {
                    "sonataflow"
                } else {
                    "kagenti"
                };
                // The same request on two different replicas.
                [(i, t, (i + pass) % 3), (i, t, (i + pass + 1) % 3)]
            }))
            .map(|(i, target, replica)| async move {
                let (status, cache, body) = cr.exchange_on(replica, &tokens[i], target).await;
                (i, target, status, cache, body)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (i, target, status, cache, body) in results {
            let name = &names[i];
            assert_eq!(status, 200, "{name} on {target}: {body}");
            *statuses.entry(cache).or_default() += 1;
            let got = claims(body["access_token"].as_str().unwrap());
            assert_eq!(
                got["sub"].as_str(),
                Some(ids[name].as_str()),
                "{name} on {target} received another user's token"
            );
            assert_eq!(got["preferred_username"].as_str(), Some(name.as_str()));
            // And for that target: an entry never crosses targets either.
            let want = if target == "kagenti" {
                "kagenti-api"
            } else {
                "sonataflow"
            };
            let aud = &got["aud"];
            assert!(
                aud.as_str() == Some(want)
                    || aud.as_array().is_some_and(|a| a.iter().any(|x| x == want)),
                "{name} on {target}: aud {aud}"
            );
        }
        if pass + 1 < PASSES {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }
    eprintln!(
        "no_leak over 3 replicas: cache results {statuses:?}; {} exchanges",
        c.exchanges()
    );
    assert!(
        statuses.get("shared").copied().unwrap_or(0) > 0,
        "{statuses:?}"
    );
    c.stop().await;
}

/// A Redis with ACLs: the default user off, the broker's user limited to its prefix and
/// commands (as deploy/redis.example.yaml). The right password shares; a wrong one fails no
/// request (the replicas cache on their own).
#[actix_web::test]
async fn an_acl_user_is_authenticated_and_a_wrong_password_fails_no_request() {
    let acl = [
        "--user",
        "default",
        "off",
        "--user",
        "tb",
        "on",
        ">right-password",
        "~tb-test:*",
        "&tb-test:*",
        "-@all",
        "+get",
        "+mget",
        "+set",
        "+del",
        "+eval",
        "+publish",
        "+subscribe",
        "+ping",
        "+auth",
        "+select",
        // The test's own user, for `redis-cli --scan`.
        "--user",
        "admin",
        "on",
        ">admin-password",
        "~*",
        "&*",
        "+@all",
    ];
    let redis = Redis::start_with(&acl, &["--user", "admin", "--pass", "admin-password"]);
    let c = Cluster::start_on(
        redis,
        "    username: tb\n    password: right-password\n".into(),
        2,
        Opts::default(),
    )
    .await;
    let token = c.login("alice").await;
    let (_, cache, _) = c.exchange_on(0, &token, "kagenti").await;
    assert_eq!(cache, "miss");
    let (_, cache, _) = c.exchange_on(1, &token, "kagenti").await;
    assert_eq!(cache, "shared");
    assert!(!c.redis.keys().is_empty());

    let mut wrong = Cluster::start_on(
        Redis::start_with(&acl, &["--user", "admin", "--pass", "admin-password"]),
        "    username: tb\n    password: wrong-password\n".into(),
        0,
        Opts::default(),
    )
    .await;
    wrong.add_replica(&[("k1", K1)]).await;
    wrong.add_replica(&[("k1", K1)]).await;
    let token = wrong.login("alice").await;
    let (s, cache, _) = wrong.exchange_on(0, &token, "kagenti").await;
    assert_eq!((s, cache.as_str()), (200, "miss"));
    let (s, cache, _) = wrong.exchange_on(1, &token, "kagenti").await;
    assert_eq!(
        (s, cache.as_str()),
        (200, "miss"),
        "no shared cache without AUTH"
    );
    assert!(wrong.redis.keys().is_empty());
    c.stop().await;
    wrong.stop().await;
}

/// `/admin/revoke` (and a back-channel logout, which takes the same path) on one replica: the
/// broadcast drops the user's first-level entries on the others, and a revocation marker in
/// Redis keeps a replica that never held the entry from taking it out of the shared cache.
/// Other users' entries stay.
#[actix_web::test]
async fn a_revoke_on_one_replica_evicts_on_every_replica_and_in_redis() {
    let c = Cluster::start(3, Opts::default()).await;
    let alice = c.login("alice").await;
    let bob = c.login("bob").await;
    // Alice's kagenti token: cached by A, taken from Redis into B's own cache.
    assert_eq!(c.exchange_on(0, &alice, "kagenti").await.1, "miss");
    assert_eq!(c.exchange_on(1, &alice, "kagenti").await.1, "shared");
    assert_eq!(c.exchange_on(1, &alice, "kagenti").await.1, "hit");
    // Alice's sonataflow token: cached by A, in Redis, never read by C.
    assert_eq!(c.exchange_on(0, &alice, "sonataflow").await.1, "miss");
    assert_eq!(c.exchange_on(0, &bob, "kagenti").await.1, "miss");
    let admin = format!("http://{}/admin/revoke", c.brokers[0].admin_addr.unwrap());
    let r = c
        .http
        .post(&admin)
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({"sub": c.idp.user_id("alice").unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The broadcast is asynchronous: give the subscribers a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B held kagenti in its own cache: the broadcast dropped it (and Redis's copy is revoked).
    assert_eq!(c.exchange_on(1, &alice, "kagenti").await.1, "miss");
    // C never held sonataflow: Redis still has it, the revocation marker makes it a miss.
    assert_eq!(c.exchange_on(2, &alice, "sonataflow").await.1, "miss");
    // Bob's entry is untouched, on every replica.
    assert_eq!(c.exchange_on(0, &bob, "kagenti").await.1, "hit");
    assert_eq!(c.exchange_on(2, &bob, "kagenti").await.1, "shared");
    c.stop().await;
}
