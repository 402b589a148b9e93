//! Memory per user on the real path (issue 16 §2): a broker process of its own, against a dev
//! IdP of its own that knows `n` users; each user makes one real token request (caller check,
//! local verification of the user's token, RFC 8693 exchange at the dev IdP over HTTP, the
//! answer checked, both caches filled); then the broker's RSS is read from /proc.
//!
//! The users' access tokens are minted in this process with the dev IdP's signing key (the
//! claims of a real password login, with each user's `sub`, `preferred_username` and a new
//! `jti`, without a session): logging 100 000 users in over HTTP would only add the IdP's
//! work. The exchanges go over HTTP as always.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use token_broker_devidp::{DevIdpConfig, DevUser};

pub struct UsersRss {
    pub users: usize,
    pub ok: usize,
    pub hits: usize,
    pub idle_kb: u64,
    pub after_kb: u64,
    pub seconds: f64,
}

/// Runs the fill; `cfg(public, admin, issuer)` is the broker's configuration.
pub async fn run(
    broker_bin: &Path,
    tmp: &Path,
    n: usize,
    cfg: impl Fn(u16, u16, &str) -> String,
) -> UsersRss {
    let started = Instant::now();
    let mut realm = DevIdpConfig::contract();
    let names: Vec<String> = (0..n).map(|i| format!("user{i:06}")).collect();
    for name in &names {
        realm.users.push(DevUser::new(name, "pw"));
    }
    let ids: Vec<String> = realm.users.iter().skip(2).map(|u| u.id.clone()).collect();
    let idp = token_broker_devidp::start(realm, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (public, admin) = (crate::free_port(), crate::free_port());
    let file = tmp.join("broker-users.yaml");
    std::fs::write(&file, cfg(public, admin, &idp.issuer())).unwrap();
    let mut broker = Command::new(broker_bin)
        .args(["serve", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A real login: its claims are the template of the minted tokens.
    let login: serde_json::Value = http
        .post(idp.token_endpoint())
        .form(&[
            ("grant_type", "password"),
            ("client_id", "dev-frontend"),
            ("username", "alice"),
            ("password", "alice"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice = login["access_token"].as_str().unwrap().to_owned();
    let url = format!("http://127.0.0.1:{public}/v1/token");
    let send = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(crate::STATIC)
                .header("X-Forwarded-Access-Token", token)
                .form(&[("grant_type", crate::TE), ("audience", "sonataflow")])
                .send()
                .await;
            match r {
                Ok(r) => {
                    let hit = r
                        .headers()
                        .get("x-token-broker-cache")
                        .is_some_and(|v| v == "hit");
                    let ok = r.status() == 200;
                    let _ = r.bytes().await;
                    (ok, hit)
                }
                Err(_) => (false, false),
            }
        }
    };
    // Warm-up (first JWKS fetch, connection pools), then the idle figure.
    let _ = send(alice.clone()).await;
    let _ = send(alice.clone()).await;
    let idle_kb = crate::rss_kb(broker.id());

    let payload = crate::jwt_payload(&alice);
    let idp = Arc::new(idp);
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(ids);
    let names = Arc::new(names);
    // Minting is RSA signing: on blocking threads, 8 requests in flight.
    let workers = (0..8).map(|_| {
        let (idp, next, ok, hits, ids, names, payload) = (
            idp.clone(),
            next.clone(),
            ok.clone(),
            hits.clone(),
            ids.clone(),
            names.clone(),
            payload.clone(),
        );
        let send = &send;
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ids.len() {
                    break;
                }
                let mut claims = payload.clone();
                claims["sub"] = serde_json::json!(ids[i]);
                claims["preferred_username"] = serde_json::json!(names[i]);
                claims["jti"] = serde_json::json!(format!("bench-{i}"));
                if let Some(o) = claims.as_object_mut() {
                    o.remove("sid");
                    o.remove("session_state");
                }
                let idp2 = idp.clone();
                let token = tokio::task::spawn_blocking(move || idp2.sign_jwt(&claims))
                    .await
                    .unwrap();
                let (good, hit) = send(token).await;
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                if hit {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                if i > 0 && i % 20_000 == 0 {
                    eprintln!("bench: {i} users");
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    // Let the caches' pending maintenance run (moka applies inserts lazily).
    let _ = send(alice.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = send(alice).await;
    let after_kb = crate::rss_kb(broker.id());
    broker.kill().ok();
    broker.wait().ok();
    idp.stop().await;
    UsersRss {
        users: n,
        ok: ok.load(Ordering::Relaxed),
        hits: hits.load(Ordering::Relaxed),
        idle_kb,
        after_kb,
        seconds: started.elapsed().as_secs_f64(),
    }
}
