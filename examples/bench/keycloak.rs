//! `scripts/bench keycloak`: the broker against a **real Keycloak** (scripts/keycloak's `main`,
//! realm `dev`), on loopback:
//!
//! 1. warm-up: Keycloak's JIT compiles the exchange path only after some hundred requests;
//! 2. latency: N sequential pairs, each of a broker exchange (a cache miss: a new login, so a
//!    new cache key) and the same RFC 8693 request sent straight to Keycloak with the broker's
//!    credentials; p50/p99 of both, and the difference of the p50s (the miss overhead);
//! 3. Keycloak's CPU per exchange: the CPU time (utime + stime from `/proc/<pid>/stat`, summed
//!    over Keycloak's process tree) spent over a batch of direct exchanges, minus its idle rate
//!    measured just before, divided by their number;
//! 4. the broker's CPU per cache hit: the broker's CPU time over a batch of hits (the same
//!    caller and user token, 32 concurrent), divided by their number.
//!
//! Prints `name=value` lines and writes its section of docs/benchmarks.md (between the markers
//! of [`BEGIN`] and [`END`], which the main benchmark keeps).

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{AT, Args, SECRET, STATIC, TE, free_port, percentile, sh};

pub const BEGIN: &str = "<!-- keycloak-bench: begin (written by `scripts/bench keycloak`) -->";
pub const END: &str = "<!-- keycloak-bench: end -->";

/// The real-Keycloak section of an existing docs/benchmarks.md, markers included.
pub fn section_of(md: &str) -> Option<&str> {
    let start = md.find(BEGIN)?;
    let end = md[start..].find(END)? + start + END.len();
    md.get(start..end)
}

/// CPU time in clock ticks (utime + stime) of `root` and every process below it.
fn tree_ticks(root: u32) -> u64 {
    // pid → (ppid, ticks) for every process.
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and parentheses): state is
        // field 3, ppid 4, utime 14, stime 15 (proc(5)).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        procs.push((pid, num(4) as u32, num(14) + num(15)));
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            procs
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(p, _, _)| *p),
        );
        i += 1;
    }
    procs
        .iter()
        .filter(|(p, _, _)| tree.contains(p))
        .map(|(_, _, t)| t)
        .sum()
}

fn clk_tck() -> f64 {
    sh("getconf CLK_TCK").parse().unwrap_or(100.0)
}

struct Kc {
    http: reqwest::Client,
    token_url: String,
}

impl Kc {
    async fn login(&self) -> String {
        let r = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "password"),
                ("client_id", "dev-frontend"),
                ("username", "alice"),
                ("password", "alice"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login at Keycloak");
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// The broker's exchange request, sent straight to Keycloak; true on a 200.
    async fn exchange(&self, subject: &str) -> bool {
        let r = self
            .http
            .post(&self.token_url)
            .basic_auth("token-broker", Some(SECRET))
            .form(&[
                ("grant_type", TE),
                ("subject_token", subject),
                ("subject_token_type", AT),
                ("audience", "sonataflow"),
            ])
            .send()
            .await
            .unwrap();
        let ok = r.status() == 200;
        let _ = r.bytes().await;
        ok
    }
}

/// `n` calls of `f`, at most `par` at a time; the number that succeeded.
async fn batch<F, Fut>(n: usize, par: usize, f: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures_util::StreamExt;
    futures_util::stream::iter((0..n).map(|_| f()))
        .buffer_unordered(par)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

pub async fn run(a: Args) {
    assert!(a.keycloak_pid > 0, "--keycloak-pid is required");
    let tmp = std::env::temp_dir().join(format!("tb-bench-kc-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let issuer = format!("{}/realms/dev", a.keycloak_url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let kc = Kc {
        http: http.clone(),
        token_url: format!("{issuer}/protocol/openid-connect/token"),
    };

    // The broker: the release binary, as in the main benchmark, against the real Keycloak.
    let (public, admin) = (free_port(), free_port());
    let cfg = format!(
        r#"
server: {{listen: "127.0.0.1:{public}", workers: 2}}
admin: {{listen: "127.0.0.1:{admin}", token: bench-admin-token}}
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: {SECRET}
  maxConcurrentRequests: 256
userToken: {{header: X-Forwarded-Access-Token, allowedClients: [dev-frontend]}}
backend:
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC}, subject: bench-caller}}
cache: {{maxEntries: 200000, safetyMargin: 30s}}
targets:
  sonataflow: {{audience: sonataflow, fallback: deny}}
logging: {{format: json, level: info}}
"#
    );
    let cfg_file = tmp.join("broker.yaml");
    std::fs::write(&cfg_file, cfg).unwrap();
    let mut broker = Command::new(&a.broker_bin)
        .args(["serve", "--config", cfg_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker binary starts");
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the broker did not become ready");
    let token_url = format!("http://127.0.0.1:{public}/v1/token");
    let via_broker = |user: String| {
        let http = http.clone();
        let url = token_url.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(STATIC)
                .header("X-Forwarded-Access-Token", user)
                .form(&[("grant_type", TE), ("audience", "sonataflow")])
                .send()
                .await
                .unwrap();
            let cache = r
                .headers()
                .get("x-token-broker-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let ok = r.status() == 200;
            let _ = r.bytes().await;
            (ok, cache)
        }
    };

    // 1. Warm-up.
    eprintln!("bench keycloak: warm-up");
    let subject = kc.login().await;
    let warm = batch(400, 4, || kc.exchange(&subject)).await;
    assert_eq!(warm, 400, "warm-up exchanges at Keycloak");
    for _ in 0..50 {
        let (ok, _) = via_broker(kc.login().await).await;
        assert!(ok, "warm-up exchange through the broker");
    }

    // 2. Latency, interleaved.
    eprintln!("bench keycloak: {} miss-path pairs", a.keycloak);
    let (mut broker_ms, mut direct_ms) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let mut broker_miss_ticks = 0;
    for _ in 0..a.keycloak {
        let (t1, t2) = (kc.login().await, kc.login().await);
        let ticks = tree_ticks(broker.id());
        let started = Instant::now();
        let (ok, cache) = via_broker(t1).await;
        broker_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        broker_miss_ticks += tree_ticks(broker.id()).saturating_sub(ticks);
        if !ok || cache != "miss" {
            errors += 1;
        }
        let started = Instant::now();
        let ok = kc.exchange(&t2).await;
        direct_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            errors += 1;
        }
    }
    let (broker_p50, broker_p99) = (
        percentile(&mut broker_ms, 0.5),
        percentile(&mut broker_ms, 0.99),
    );
    let (direct_p50, direct_p99) = (
        percentile(&mut direct_ms, 0.5),
        percentile(&mut direct_ms, 0.99),
    );
    let tck = clk_tck();

    // 3. Keycloak's CPU per exchange: idle rate first, then a batch of exchanges.
    let n_cpu = 2000usize;
    eprintln!("bench keycloak: Keycloak CPU over {n_cpu} exchanges");
    let idle_secs = 10.0;
    let t0 = tree_ticks(a.keycloak_pid);
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle_rate = tree_ticks(a.keycloak_pid).saturating_sub(t0) as f64 / tck / idle_secs;
    let t0 = tree_ticks(a.keycloak_pid);
    let started = Instant::now();
    let done = batch(n_cpu, 4, || kc.exchange(&subject)).await;
    let wall = started.elapsed().as_secs_f64();
    let kc_secs = tree_ticks(a.keycloak_pid).saturating_sub(t0) as f64 / tck;
    errors += n_cpu - done;
    let kc_cpu_ms = (kc_secs - idle_rate * wall) / n_cpu as f64 * 1000.0;

    // 4. The broker's CPU per cache hit.
    let n_hits = 50_000usize;
    eprintln!("bench keycloak: broker CPU over {n_hits} cache hits");
    let user = kc.login().await;
    let (ok, _) = via_broker(user.clone()).await;
    assert!(ok, "the exchange to be hit");
    let b0 = tree_ticks(broker.id());
    let started = Instant::now();
    let hits = batch(n_hits, 32, || {
        let f = via_broker(user.clone());
        async move {
            let (ok, cache) = f.await;
            ok && cache == "hit"
        }
    })
    .await;
    let hit_wall = started.elapsed().as_secs_f64();
    let broker_secs = tree_ticks(broker.id()).saturating_sub(b0) as f64 / tck;
    errors += n_hits - hits;
    let broker_hit_us = broker_secs / n_hits as f64 * 1e6;
    let broker_miss_us = broker_miss_ticks as f64 / tck / a.keycloak as f64 * 1e6;
    broker.kill().ok();
    broker.wait().ok();
    std::fs::remove_dir_all(&tmp).ok();

    let overhead = broker_p50 - direct_p50;
    let ratio = kc_cpu_ms * 1000.0 / broker_hit_us;
    let version = std::fs::read_to_string("target/keycloak/main.version")
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "(unknown)".into());
    let date = sh("date -u +%Y-%m-%dT%H:%MZ");
    let load = sh("cut -d' ' -f1-3 /proc/loadavg");
    let mut md = String::new();
    let _ = writeln!(md, "{BEGIN}");
    let _ = writeln!(
        md,
        "## Against a real Keycloak\n\n\
Measured by `scripts/bench keycloak` on {date} (release broker; Keycloak {version} of `scripts/keycloak start main`, dev mode, H2, heap ≤ 512 MB, \
realm `dev` with its events stored; loopback; the same 2 CPUs; load average before the run {load}).\n"
    );
    let _ = writeln!(md, "| figure | measured |\n|---|---|");
    let _ = writeln!(
        md,
        "| Keycloak token exchange, direct (the broker's request sent straight to Keycloak, {n} sequential) p50 / p99 | **{direct_p50:.2}** / {direct_p99:.2} ms |",
        n = a.keycloak
    );
    let _ = writeln!(
        md,
        "| the same exchange through the broker (a cache miss) p50 / p99 | {broker_p50:.2} / {broker_p99:.2} ms |"
    );
    let _ = writeln!(
        md,
        "| miss overhead: broker p50 minus direct p50 | **{overhead:.2} ms** |"
    );
    let _ = writeln!(
        md,
        "| Keycloak CPU per exchange ({n_cpu} exchanges, 4 concurrent, in {wall:.1} s; idle rate {idle_rate:.3} CPU-s/s subtracted) | **{kc_cpu_ms:.2} ms** |"
    );
    let _ = writeln!(
        md,
        "| broker CPU per cache hit ({n_hits} hits, 32 concurrent, in {hit_wall:.1} s) | **{broker_hit_us:.1} µs** |"
    );
    let _ = writeln!(
        md,
        "| broker CPU per miss (the latency runs: verify subject, call Keycloak, verify and cache the answer) | {broker_miss_us:.0} µs |"
    );
    let _ = writeln!(
        md,
        "| Keycloak CPU saved per cache hit, in broker CPU spent on the hit | **{ratio:.0}×** |"
    );
    let _ = writeln!(md, "\nErrors: {errors}.\n");
    md.push_str(NOTES);
    let _ = writeln!(md, "{END}");

    let previous = std::fs::read_to_string(&a.out).unwrap_or_default();
    let text = match section_of(&previous) {
        Some(old) => previous.replacen(old, md.trim_end(), 1),
        None => format!("{}\n\n{}", previous.trim_end(), md.trim_end()),
    };
    if let Err(e) = std::fs::write(&a.out, format!("{}\n", text.trim_end())) {
        eprintln!("cannot write {}: {e}", a.out.display());
    }
    print!("{md}");
    println!();
    println!("kc_exchange_p50_ms={direct_p50:.3}");
    println!("kc_exchange_p99_ms={direct_p99:.3}");
    println!("kc_broker_miss_p50_ms={broker_p50:.3}");
    println!("kc_broker_miss_p99_ms={broker_p99:.3}");
    println!("kc_miss_overhead_p50_ms={overhead:.3}");
    println!("kc_cpu_per_exchange_ms={kc_cpu_ms:.3}");
    println!("broker_cpu_per_hit_us={broker_hit_us:.2}");
    println!("broker_cpu_per_miss_us={broker_miss_us:.0}");
    println!("kc_cpu_saved_per_hit_ratio={ratio:.0}");
    println!("kc_bench_errors={errors}");
}

const NOTES: &str = "How: the miss path interleaves a broker exchange and a direct one, each with a token from a new login \
(a new cache key; the logins are not timed); the broker's extra work on a miss is the local RS256 check of the subject token, \
the check of Keycloak's answer (signature, `aud`, `sub`, types), the cache insert and one more loopback hop. CPU is utime + stime \
from `/proc/<pid>/stat` (Keycloak: its whole process tree; clock-tick resolution), Keycloak's idle rate over 10 s before the batch subtracted; \
it includes what every exchange costs Keycloak here: client authentication, the subject token's checks and session lookup, signing the new token, \
and storing the `TOKEN_EXCHANGE` event (realm `dev` stores events for the end-to-end tests; a realm without stored events saves that insert). \
The ratio is the Keycloak CPU one cache hit saves, over the broker CPU that hit costs.\n";
