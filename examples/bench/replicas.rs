//! `scripts/bench replicas`: three broker replicas sharing one Redis (`cache.shared`, issue
//! 15), on loopback, against the dev IdP:
//!
//! 1. `replicas3_cold_burst_idp_calls`: 1000 concurrent cold requests for one key spread over
//!    the three replicas; the token-exchange calls counted at the IdP (must be 1);
//! 2. `l2_hit_p50_ms` (and p99): N sequential pairs, each a miss on replica A (a new login, so
//!    a new key) and then the same request on replica B, served from Redis (`shared`); the
//!    latency of B's answers;
//! 3. `hit_vs_bare_ratio` with the shared cache configured: `wrk` on a first-level hit of
//!    replica A (which never touches Redis) against a bare actix-web handler answering the same
//!    bytes, alternated, best of the rounds (the main benchmark's method).
//!
//! Needs `redis-server` (Debian package `redis-server`) and `wrk`. Prints `name=value` lines and
//! writes its section of docs/benchmarks.md between [`BEGIN`] and [`END`] (kept by the main
//! benchmark).

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use futures_util::StreamExt;

use super::{
    Args, Peers, SECRET, STATIC, TE, bare, best, free_port, percentile, run_wrk, sh, urlenc,
};

pub const BEGIN: &str = "<!-- replicas-bench: begin (written by `scripts/bench replicas`) -->";
pub const END: &str = "<!-- replicas-bench: end -->";

/// The replicas section of an existing docs/benchmarks.md, markers included.
pub fn section_of(md: &str) -> Option<&str> {
    let start = md.find(BEGIN)?;
    let end = md[start..].find(END)? + start + END.len();
    md.get(start..end)
}

/// 32 bytes, base64: a bench-only shared-cache key.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

pub async fn run(a: Args, pairs: usize) {
    let tmp = std::env::temp_dir().join(format!("tb-bench-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", tmp.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (Debian package redis-server)"),
    );
    let idp = token_broker_devidp::start(
        token_broker_devidp::DevIdpConfig::contract(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();

    let mut replicas = Vec::new();
    let mut bases = Vec::new();
    for i in 0..3 {
        let (public, admin) = (free_port(), free_port());
        let cfg = format!(
            r#"
server: {{listen: "127.0.0.1:{public}", workers: 2}}
admin: {{listen: "127.0.0.1:{admin}", token: bench-admin-token}}
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: {SECRET}
  maxConcurrentRequests: 2048
userToken: {{header: X-Forwarded-Access-Token, allowedClients: [dev-frontend]}}
backend:
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC}, subject: bench-caller}}
cache:
  maxEntries: 200000
  safetyMargin: 30s
  shared:
    url: redis://127.0.0.1:{redis_port}
    encryptionKeys: [{{id: k1, key: "{KEY}"}}]
targets:
  sonataflow: {{audience: sonataflow, fallback: deny}}
logging: {{format: json, level: warn}}
"#,
            issuer = idp.issuer()
        );
        let file = tmp.join(format!("replica{i}.yaml"));
        std::fs::write(&file, cfg).unwrap();
        replicas.push(Killed(
            Command::new(&a.broker_bin)
                .args(["serve", "--config", file.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the broker binary starts"),
        ));
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "replica {i} did not become ready");
        bases.push(format!("http://127.0.0.1:{public}"));
    }

    let login = |user: &'static str| {
        let http = http.clone();
        let te = idp.token_endpoint();
        async move {
            let v: serde_json::Value = http
                .post(te)
                .form(&[
                    ("grant_type", "password"),
                    ("client_id", "dev-frontend"),
                    ("username", user),
                    ("password", user),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let exchange = |base: String, user_token: String| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/token"))
                .bearer_auth(STATIC)
                .header("X-Forwarded-Access-Token", user_token)
                .form(&[("grant_type", TE), ("audience", "sonataflow")])
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("x-token-broker-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = r.text().await.unwrap_or_default();
            (status, cache, body)
        }
    };

    // Every replica warm (realm keys loaded), with another login (a new token, a new key).
    let bob = login("alice").await;
    for b in &bases {
        let (s, _, body) = exchange(b.clone(), bob.clone()).await;
        assert_eq!(s, 200, "warm-up: {body}");
    }

    // 1. Cold burst over three replicas.
    let carol = login("alice").await;
    let before = idp.count_grant(TE);
    let started = Instant::now();
    let results: Vec<(u16, String, String)> = futures_util::stream::iter(0..1000usize)
        .map(|i| exchange(bases[i % 3].clone(), carol.clone()))
        .buffer_unordered(1000)
        .collect()
        .await;
    let burst_ms = started.elapsed().as_secs_f64() * 1000.0;
    let burst_calls = idp.count_grant(TE) - before;
    let burst_failed = results.iter().filter(|(s, _, _)| *s != 200).count();
    let mut burst_status: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, c, _) in &results {
        *burst_status.entry(c.clone()).or_default() += 1;
    }

    // 2. L2 hits: a miss on A, then the same request on B.
    let (mut l2_ms, mut miss_ms) = (Vec::new(), Vec::new());
    let mut l2_errors = 0;
    for _ in 0..pairs {
        let t = login("alice").await;
        let started = Instant::now();
        let (s, c, _) = exchange(bases[0].clone(), t.clone()).await;
        miss_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if s != 200 || c != "miss" {
            l2_errors += 1;
        }
        let started = Instant::now();
        let (s, c, _) = exchange(bases[1].clone(), t).await;
        l2_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if s != 200 || c != "shared" {
            l2_errors += 1;
        }
    }
    let l2_p50 = percentile(&mut l2_ms, 0.5);
    let l2_p99 = percentile(&mut l2_ms, 0.99);
    let miss_p50 = percentile(&mut miss_ms, 0.5);

    // 3. First-level hits on A with the shared cache configured, against a bare handler.
    let alice = login("alice").await;
    let (s, _, _) = exchange(bases[0].clone(), alice.clone()).await;
    assert_eq!(s, 200);
    let (s, cache, hit_body) = exchange(bases[0].clone(), alice.clone()).await;
    assert_eq!((s, cache.as_str()), (200, "hit"));
    let peers_port = free_port();
    let peers = web::Data::new(Peers {
        body: hit_body,
        key: jsonwebtoken::DecodingKey::from_secret(b"unused"),
        validation: jsonwebtoken::Validation::default(),
        jwks: serde_json::Value::Null,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(peers.clone())
            .route("/bare", web::to(bare))
    })
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", peers_port))
    .unwrap()
    .run();
    let peers_handle = server.handle();
    actix_web::rt::spawn(server);
    // The server runs once the runtime polls it: wait for it here (wrk below blocks the thread).
    let bare_url = format!("http://127.0.0.1:{peers_port}/bare");
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = http.post(&bare_url).send().await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the bare handler did not start");
    let form = format!("grant_type={}&audience=sonataflow", urlenc(TE));
    let hit_lua = tmp.join("hit.lua");
    std::fs::write(
        &hit_lua,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{form}\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.headers[\"Authorization\"] = \"Bearer {STATIC}\"\nwrk.headers[\"X-Forwarded-Access-Token\"] = \"{alice}\"\n"
        ),
    )
    .unwrap();
    let (mut bare_runs, mut hit_runs) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        eprintln!("bench replicas: wrk round {} of {}", round + 1, a.rounds);
        bare_runs.push(run_wrk(&a, &bare_url, &hit_lua));
        hit_runs.push(run_wrk(&a, &format!("{}/v1/token", bases[0]), &hit_lua));
    }
    let (bare_l, hit_l) = (best(&bare_runs), best(&hit_runs));
    let ratio = hit_l.rps / bare_l.rps;
    peers_handle.stop(true).await;
    drop(replicas);
    idp.stop().await;

    let machine = format!(
        "{} ({} CPUs), Linux {}; redis-server {}",
        sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
        sh("nproc"),
        sh("uname -r"),
        sh("redis-server --version | sed -n 's/.*v=\\([^ ]*\\).*/\\1/p'"),
    );
    let mut md = String::new();
    md.push_str(BEGIN);
    md.push('\n');
    let _ = writeln!(
        md,
        "## Three replicas sharing Redis (`scripts/bench replicas`, issue 15)\n\n\
         Three broker processes (release build, 2 workers each) with `cache.shared` on one local \
         `redis-server`, the dev IdP in the driver, all on loopback on {machine}. The machine is \
         shared and noisy: figures of one run, read them as orders of magnitude.\n\n\
         | figure | value |\n|---|---|\n\
         | `replicas3_cold_burst_idp_calls` (1000 concurrent cold requests for one key over 3 replicas) | {burst_calls} (failed requests: {burst_failed}; answers {burst_status:?}; {burst_ms:.0} ms in all) |\n\
         | `l2_hit_p50_ms` (replica B serving what A cached, sequential, {pairs} pairs) | {l2_p50:.3} (p99 {l2_p99:.3}; A's miss p50 {miss_p50:.3}; unexpected answers {l2_errors}) |\n\
         | `hit_vs_bare_ratio` with `cache.shared` configured (first-level hits on A vs a bare handler, best of {rounds} rounds, wrk {conns} connections, {dur} s) | {ratio:.3} (hit {hit_rps:.0} req/s p50 {hit_p50:.3} ms; bare {bare_rps:.0} req/s p50 {bare_p50:.3} ms) |\n",
        rounds = a.rounds,
        conns = a.connections,
        dur = a.duration,
        hit_rps = hit_l.rps,
        hit_p50 = hit_l.p50_ms,
        bare_rps = bare_l.rps,
        bare_p50 = bare_l.p50_ms,
    );
    md.push_str(END);
    let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
    let next = match section_of(&previous) {
        Some(old) => previous.replacen(old, &md, 1),
        None => format!("{}\n{md}\n", previous.trim_end()),
    };
    if let Err(e) = std::fs::write(&a.out, next) {
        eprintln!("cannot write {}: {e}", a.out.display());
    }
    std::fs::remove_dir_all(&tmp).ok();
    println!("{md}");
    println!("replicas3_cold_burst_idp_calls={burst_calls}");
    println!("l2_hit_p50_ms={l2_p50:.3}");
    println!("l2_hit_p99_ms={l2_p99:.3}");
    println!("hit_vs_bare_ratio_shared={ratio:.3}");
}
