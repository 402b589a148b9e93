//! Regression tests of the edge defences (issue 9 §2 and §4), each listed in docs/security.md:
//!
//! - slow request bodies: 80 connections trickling one body byte a second cannot hold the
//!   listeners; normal requests keep their latency; slow bodies are cut at
//!   `server.bodyReadTimeout` (408) and their connections closed;
//! - proxy confinement: `..;`-style segments refused, matrix parameters per target;
//! - proxy header hygiene: only allow-listed request headers reach the upstream;
//! - `TRACE` refused; refused and failed proxy calls audited.
//!
//! Everything runs on loopback against the real broker and the dev IdP; the upstream is a
//! small recorder written here.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Slow bodies (issue 9 §2)
// ---------------------------------------------------------------------------------------------

/// The body deadline, linger and connection cap of the slow-body test (`server.*`).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_SERVER_YAML: &str =
    "  workers: 2\n  bodyReadTimeout: 2s\n  clientDisconnectTimeout: 500ms\n  maxConnections: 64\n";

/// One kind of slow client: where it sends its head, with which credential, and how its body
/// is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slow {
    /// `/v1/token`, no credential header, `Content-Length`.
    NoCredential,
    /// `/v1/token`, no credential header, chunked (actix would drain it forever).
    NoCredentialChunked,
    /// `/v1/token` with an unknown Bearer token.
    BadCredential,
    /// `/v1/token` with a valid static caller token: only the deadline can cut it.
    Authenticated,
    AuthenticatedChunked,
    /// `/v1/proxy/...` without a credential, chunked.
    ProxyNoCredentialChunked,
    /// `/v1/proxy/...` with a valid static caller token, chunked (the read-ahead of the body
    /// to replay: only the deadline can cut it).
    ProxyAuthenticatedChunked,
    /// An unknown path, chunked: answered 404 without reading the body.
    UnknownPathChunked,
    /// `/admin/exchange` without the admin credential.
    AdminNoCredential,
    /// `/admin/exchange` with the admin credential: only the deadline can cut it.
    AdminAuthenticated,
}

impl Slow {
    fn admin(self) -> bool {
        matches!(self, Slow::AdminNoCredential | Slow::AdminAuthenticated)
    }
    fn chunked(self) -> bool {
        matches!(
            self,
            Slow::NoCredentialChunked
                | Slow::AuthenticatedChunked
                | Slow::ProxyNoCredentialChunked
                | Slow::ProxyAuthenticatedChunked
                | Slow::UnknownPathChunked
        )
    }
    /// Authenticated slow bodies are cut by the deadline; the others are answered at once.
    fn authenticated(self) -> bool {
        matches!(
            self,
            Slow::Authenticated
                | Slow::AuthenticatedChunked
                | Slow::AdminAuthenticated
                | Slow::ProxyAuthenticatedChunked
        )
    }
    fn expected_status(self) -> u16 {
        match self {
            _ if self.authenticated() => 408,
            Slow::UnknownPathChunked => 404,
            _ => 401,
        }
    }
    fn head(self) -> String {
        let (path, ct, auth) = match self {
            Slow::NoCredential | Slow::NoCredentialChunked => ("/v1/token", FORM, None),
            Slow::BadCredential => ("/v1/token", FORM, Some("not-a-known-caller-token")),
            Slow::Authenticated | Slow::AuthenticatedChunked => {
                ("/v1/token", FORM, Some(STATIC_TOKEN))
            }
            Slow::ProxyNoCredentialChunked => ("/v1/proxy/kagenti/upload", FORM, None),
            Slow::ProxyAuthenticatedChunked => {
                ("/v1/proxy/kagenti/upload", FORM, Some(STATIC_TOKEN))
            }
            Slow::UnknownPathChunked => ("/nowhere", FORM, None),
            Slow::AdminNoCredential => ("/admin/exchange", "application/json", None),
            Slow::AdminAuthenticated => (
                "/admin/exchange",
                "application/json",
                Some("test-admin-token"),
            ),
        };
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: broker\r\nContent-Type: {ct}\r\n");
        if let Some(a) = auth {
            head.push_str(&format!("Authorization: Bearer {a}\r\n"));
        }
        if self.chunked() {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        } else {
            head.push_str("Content-Length: 200\r\n\r\n");
        }
        head
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// What one slow client saw.
#[derive(Debug)]
struct SlowOutcome {
    kind: Slow,
    status: u16,
    /// When the broker closed the connection (from connect), `None` if it was still open when
    /// the client gave up.
    closed_after: Option<Duration>,
}

/// Connects, sends the head, then one body byte (or one 1-byte chunk) a second until the
/// broker closes the connection or `bound` passes.
async fn slow_client(addr: SocketAddr, kind: Slow, bound: Duration) -> SlowOutcome {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(kind.head().as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let give_up = tokio::time::sleep(bound);
    tokio::pin!(give_up);
    let mut closed_after = None;
    loop {
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let piece: &[u8] = if kind.chunked() { b"1\r\na\r\n" } else { b"a" };
                // The broker may have closed its side already: the read above will tell.
                let _ = wr.write_all(piece).await;
            }
            _ = &mut give_up => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    SlowOutcome {
        kind,
        status,
        closed_after,
    }
}

/// Latencies of `n` normal token requests, one every `gap`, each on a fresh connection (a
/// listener whose connection slots are all taken would make new connections wait).
async fn normal_requests(env: &Env, alice: &str, n: usize, gap: Duration) -> Vec<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let r = client
            .post(format!("{}/v1/token", env.url))
            .bearer_auth(STATIC_TOKEN)
            .header("X-Forwarded-Access-Token", alice)
            .form(&[("grant_type", TE), ("audience", "kagenti")])
            .send()
            .await;
        let took = started.elapsed();
        match r {
            Ok(r) => assert_eq!(r.status(), 200, "normal request {i}"),
            Err(e) => panic!("normal request {i} failed after {took:?}: {e}"),
        }
        out.push(took);
        tokio::time::sleep(gap).await;
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(v: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    let p = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.95), s[s.len() - 1])
}

#[actix_web::test]
async fn slow_bodies_are_cut_off_and_normal_requests_keep_their_latency() {
    let env = start_with_yaml(Opts::default(), |y| {
        y.replace("  workers: 2\n", SLOW_SERVER_YAML)
    })
    .await;
    let alice = env.login("alice").await;
    let public = env.broker.public_addr;
    let admin = env.broker.admin_addr.unwrap();

    // Baseline: normal requests on an idle broker (the first one fills the cache).
    normal_requests(&env, &alice, 3, Duration::ZERO).await;
    let before = normal_requests(&env, &alice, 25, Duration::from_millis(100)).await;

    // The attack: 70 slow connections on the public listener (more than its 64 connection
    // slots) and 10 on the admin listener, each trickling one byte a second for up to 10 s.
    let mix = [
        (Slow::NoCredential, 16),
        (Slow::NoCredentialChunked, 16),
        (Slow::BadCredential, 8),
        (Slow::Authenticated, 8),
        (Slow::AuthenticatedChunked, 8),
        (Slow::ProxyNoCredentialChunked, 7),
        (Slow::UnknownPathChunked, 7),
        (Slow::AdminNoCredential, 5),
        (Slow::AdminAuthenticated, 5),
    ];
    let bound = Duration::from_secs(10);
    let mut attackers = Vec::new();
    for (kind, n) in mix {
        for _ in 0..n {
            let addr = if kind.admin() { admin } else { public };
            attackers.push(actix_web::rt::spawn(slow_client(addr, kind, bound)));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = normal_requests(&env, &alice, 25, Duration::from_millis(200)).await;
    let mut outcomes = Vec::new();
    for a in attackers {
        outcomes.push(a.await.unwrap());
    }

    let (b50, b95, bmax) = summary(&before);
    let (d50, d95, dmax) = summary(&during);
    eprintln!(
        "normal /v1/token latency, fresh connection each (ms): without attack p50 {:.1} p95 {:.1} max {:.1}; \
         during the attack p50 {:.1} p95 {:.1} max {:.1}",
        ms(b50),
        ms(b95),
        ms(bmax),
        ms(d50),
        ms(d95),
        ms(dmax)
    );
    for o in &outcomes {
        assert_eq!(
            o.status,
            o.kind.expected_status(),
            "{:?}: wrong answer ({o:?})",
            o.kind
        );
        let closed = o.closed_after.unwrap_or_else(|| {
            panic!(
                "{:?}: the connection was still open after {bound:?}",
                o.kind
            )
        });
        if o.kind.authenticated() {
            // Cut by the deadline, not before it, and closed right after the 408.
            assert!(
                closed >= BODY_READ_TIMEOUT
                    && closed < BODY_READ_TIMEOUT + Duration::from_millis(2500),
                "{:?}: closed after {closed:?}",
                o.kind
            );
        } else {
            // Answered without waiting for the body; closed after at most the linger.
            assert!(
                closed < Duration::from_millis(2500),
                "{:?}: closed after {closed:?}",
                o.kind
            );
        }
    }
    let closed: Vec<Duration> = outcomes.iter().filter_map(|o| o.closed_after).collect();
    let (c50, _, cmax) = summary(&closed);
    eprintln!(
        "slow connections closed by the broker after (ms): p50 {:.0}, max {:.0}",
        ms(c50),
        ms(cmax)
    );
    // Normal requests keep their usual latency: no request waits behind the slow ones.
    assert!(
        d50 <= b50 * 3 + Duration::from_millis(50),
        "median latency during the attack {d50:?} vs {b50:?} without"
    );
    assert!(
        dmax < Duration::from_millis(1500),
        "slowest normal request {dmax:?}"
    );
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Proxy confinement and header hygiene (issue 9 §4)
// ---------------------------------------------------------------------------------------------

/// One request as the upstream saw it: method, raw path, headers (lower-case names).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(req: HttpRequest, _body: web::Bytes, rec: web::Data<Recorder>) -> HttpResponse {
    rec.seen.lock().unwrap().push(Seen {
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
    });
    HttpResponse::Ok().json(serde_json::json!({"ok": true}))
}

struct Upstream {
    rec: web::Data<Recorder>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

async fn upstream() -> Upstream {
    let rec = web::Data::new(Recorder::default());
    let r = rec.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(r.clone())
            .default_service(web::to(record))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Upstream { rec, url, handle }
}

/// A broker whose `kagenti` and `sonataflow` forward to `up`, plus a target `matrix` (same
/// upstream) with `allowMatrixParams` and `forwardHeaders`.
async fn proxy_env(up: &Upstream) -> Env {
    let o = Opts {
        upstream: Some(format!("{}/base", up.url)),
        proxy_yaml: "proxy:\n  maxRetries: 0\n".into(),
        ..Opts::default()
    };
    let base = format!("{}/base", up.url);
    start_with_yaml(o, move |y| {
        y.replace(
            "  unmapped:\n",
            &format!(
                "  matrix:\n    audience: kagenti-api\n    fallback: service_account\n    upstream: {base}\n    allowMatrixParams: true\n    forwardHeaders: [X-Tenant, X-Kagenti-*]\n  unmapped:\n"
            ),
        )
    })
    .await
}

/// A proxied body that trickles in is cut by `server.bodyReadTimeout` while the broker reads it
/// ahead (to keep it for a replay): 408, the connection closed, nothing sent upstream.
#[actix_web::test]
async fn a_slow_proxied_body_is_cut_by_the_body_deadline() {
    let up = upstream().await;
    let o = Opts {
        upstream: Some(format!("{}/base", up.url)),
        proxy_yaml: "proxy:\n  maxRetries: 0\n".into(),
        ..Opts::default()
    };
    let env = start_with_yaml(o, |y| y.replace("  workers: 2\n", SLOW_SERVER_YAML)).await;
    let bound = Duration::from_secs(10);
    let out = slow_client(
        env.broker.public_addr,
        Slow::ProxyAuthenticatedChunked,
        bound,
    )
    .await;
    assert_eq!(out.status, 408, "{out:?}");
    let closed = out
        .closed_after
        .unwrap_or_else(|| panic!("the connection was still open after {bound:?}"));
    assert!(
        closed >= BODY_READ_TIMEOUT && closed < BODY_READ_TIMEOUT + Duration::from_millis(2500),
        "closed after {closed:?}"
    );
    assert!(up.rec.seen().is_empty(), "nothing may reach the upstream");
    up.handle.stop(true).await;
}

/// Sends `GET <path>` as raw bytes (reqwest would normalise the path) with the static caller
/// token; the status and the whole answer.
fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {STATIC_TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[actix_web::test]
async fn proxy_refuses_dot_segments_before_a_semicolon() {
    let up = upstream().await;
    let env = proxy_env(&up).await;
    let addr = env.broker.public_addr;
    let mut refused = Vec::new();
    for target in ["kagenti", "matrix"] {
        for rest in [
            "api/..;/admin",
            "..;/admin",
            "..;jsessionid=1/admin",
            "%2e%2e;/admin",
            "%2E.;x=1/admin",
            "..%3b/admin",
            "..%3B/admin",
            "api/.;/admin",
            "api/;x/admin",
        ] {
            refused.push(format!("/v1/proxy/{target}/{rest}"));
        }
    }
    // Matrix parameters: refused by default, forwarded for a target that allows them.
    refused.push("/v1/proxy/kagenti/cars;color=red".into());
    refused.push("/v1/proxy/kagenti/cars%3Bcolor=red".into());
    let results = tokio::task::spawn_blocking(move || {
        let refused: Vec<(String, (u16, String))> = refused
            .into_iter()
            .map(|p| {
                let r = raw_get(addr, &p);
                (p, r)
            })
            .collect();
        let allowed = raw_get(addr, "/v1/proxy/matrix/cars;color=red/x");
        (refused, allowed)
    })
    .await
    .unwrap();
    for (path, (status, text)) in &results.0 {
        assert_eq!(*status, 400, "{path}: {text}");
        assert!(
            text.contains("the proxied path is refused"),
            "{path}: {text}"
        );
    }
    assert_eq!(results.1.0, 200, "{}", results.1.1);
    let paths: Vec<String> = up.rec.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/base/cars;color=red/x"],
        "only the allowed call got through"
    );
    env.stop().await;
    up.handle.stop(true).await;
}

/// Identity, client-address and URL-override headers a caller might forge (issue 9 §4).
const FORGED: &[(&str, &str)] = &[
    ("X-Auth-Request-User", "admin"),
    ("X-Auth-Request-Email", "admin@example.com"),
    ("X-Remote-User", "admin"),
    ("X-Real-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("X-Client-IP", "10.0.0.1"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Auth-Request-Groups", "admins"),
    ("X-Remote-Group", "admins"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-Envoy-Original-Path", "/admin"),
    ("X-Unlisted-Header", "x"),
];

#[actix_web::test]
async fn proxy_forwards_only_allow_listed_headers() {
    let up = upstream().await;
    let env = proxy_env(&up).await;
    for target in ["kagenti", "matrix"] {
        let mut rb = env
            .http
            .get(format!("{}/v1/proxy/{target}/h", env.url))
            .bearer_auth(STATIC_TOKEN)
            .header("Accept", "application/json")
            .header(
                "Traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("Tracestate", "congo=t61rcWkgMzE")
            .header("Baggage", "userId=alice")
            .header("If-None-Match", "\"v1\"")
            .header("X-Request-Id", "req-7")
            .header("X-Tenant", "t1")
            .header("X-Kagenti-Session", "s1");
        for (n, v) in FORGED {
            rb = rb.header(*n, *v);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200, "{target}");
        let seen = up.rec.seen().pop().unwrap();
        for (n, _) in FORGED {
            assert_eq!(
                seen.header(&n.to_ascii_lowercase()),
                None,
                "{target}: {n} reached the upstream: {:?}",
                seen.headers
            );
        }
        for kept in [
            "accept",
            "traceparent",
            "tracestate",
            "baggage",
            "if-none-match",
            "x-request-id",
        ] {
            assert!(seen.header(kept).is_some(), "{target}: {kept} missing");
        }
        // `matrix` lists X-Tenant and X-Kagenti-* in forwardHeaders; kagenti does not.
        let extra = target == "matrix";
        assert_eq!(seen.header("x-tenant").is_some(), extra, "{target}");
        assert_eq!(
            seen.header("x-kagenti-session").is_some(),
            extra,
            "{target}"
        );
        assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
    }
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn proxy_refuses_trace() {
    let up = upstream().await;
    let env = proxy_env(&up).await;
    for auth in [Some(STATIC_TOKEN), None] {
        let mut rb = env.http.request(
            reqwest::Method::TRACE,
            format!("{}/v1/proxy/kagenti/x", env.url),
        );
        if let Some(a) = auth {
            rb = rb.bearer_auth(a);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 405, "auth {auth:?}");
        let allow = header(&r, "allow");
        assert!(allow.contains("GET") && !allow.contains("TRACE"), "{allow}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    // Other methods still pass.
    let r = env
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/proxy/kagenti/x", env.url),
        )
        .bearer_auth(STATIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let methods: Vec<String> = up.rec.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["OPTIONS"], "no TRACE reached the upstream");
    env.stop().await;
    up.handle.stop(true).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary's audit log (stdout) for refused, failed and forwarded proxy calls.
#[actix_web::test]
async fn refused_and_failed_proxy_calls_are_audited() {
    let up = upstream().await;
    let idp = token_broker_devidp::start(Opts::default().idp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tb-proxy-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public, admin, closed) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
server: {{listen: "127.0.0.1:{public}", workers: 1}}
admin: {{listen: "127.0.0.1:{admin}"}}
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: {BROKER_SECRET}
backend:
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC_TOKEN}, subject: ci-caller}}
targets:
  kagenti: {{audience: kagenti-api, fallback: service_account, upstream: "{up}/base"}}
  down: {{audience: kagenti-api, fallback: service_account, upstream: "http://127.0.0.1:{closed}/"}}
proxy: {{maxRetries: 0}}
logging: {{format: json, level: info}}
"#,
        issuer = idp.issuer(),
        up = up.url,
    );
    let cfg_file = dir.join("broker.yaml");
    std::fs::write(&cfg_file, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
        .args(["serve", "--config", cfg_file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let http = reqwest::Client::new();
    let ready = wait_ready(&http, admin).await;
    assert!(ready, "broker did not become ready");
    let base = format!("http://127.0.0.1:{public}/v1/proxy");
    let call = |method: reqwest::Method, path: &str, auth: bool| {
        let mut rb = http.request(method, format!("{base}/{path}"));
        if auth {
            rb = rb.bearer_auth(STATIC_TOKEN);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(call(reqwest::Method::TRACE, "kagenti/t", true).await, 405);
    assert_eq!(
        call(reqwest::Method::GET, "kagenti/..;/admin", true).await,
        400
    );
    assert_eq!(call(reqwest::Method::GET, "kagenti/anon", false).await, 401);
    assert_eq!(call(reqwest::Method::GET, "down/x", true).await, 502);
    assert_eq!(call(reqwest::Method::GET, "kagenti/ok", true).await, 200);

    // The audit writer puts lines on stdout within a few milliseconds, and all of them before
    // the process ends on SIGTERM (a SIGKILL can lose the last few milliseconds).
    assert!(
        stop_gracefully(&mut child).await,
        "the broker exits on SIGTERM"
    );
    let out = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "proxy_request")
        .collect();
    let find = |outcome: &str| {
        lines
            .iter()
            .find(|v| v["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no proxy_request audit line with outcome {outcome}:\n{out}"))
            .clone()
    };
    let trace = find("method_refused");
    assert_eq!(
        (trace["method"].as_str(), trace["status"].as_u64()),
        (Some("TRACE"), Some(405))
    );
    let path = find("path_refused");
    assert_eq!(path["status"], 400);
    assert_eq!(path["caller"], "ci-caller");
    assert_eq!(path["target"], "kagenti");
    let anon = find("bad_request");
    assert_eq!(
        (anon["status"].as_u64(), anon["caller"].as_str()),
        (Some(401), Some(""))
    );
    assert_eq!(anon["error"], "invalid_client");
    let down = find("upstream_unavailable");
    assert_eq!(down["status"], 502);
    assert_eq!(down["target"], "down");
    assert_eq!(down["caller"], "ci-caller");
    assert_eq!(
        down["identity"], "service",
        "the token was obtained before the failure"
    );
    assert_eq!(down["error"], "upstream_unavailable");
    let ok = find("proxied");
    assert_eq!(
        (ok["status"].as_u64(), ok["method"].as_str()),
        (Some(200), Some("GET"))
    );
    assert!(!ok["issued_fp"].as_str().unwrap().is_empty());
    assert_eq!(lines.len(), 5, "one line per call: {lines:?}");
    let seen: Vec<String> = up.rec.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["/base/ok"]);
    idp.stop().await;
    up.handle.stop(true).await;
    std::fs::remove_dir_all(&dir).ok();
}
