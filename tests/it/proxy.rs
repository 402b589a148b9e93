//! Proxy mode (`/v1/proxy/{target}/...`) end to end: the real broker forwards to a small
//! upstream written for this suite (actix on 127.0.0.1:0) that records what it received.
//!
//! Bounded memory for large bodies is shown two ways: by design (`proxy::body`, whose unit test
//! checks that at most the replay limit plus one chunk is read ahead), and here by a 10 MB
//! upload that cannot complete unless the broker forwards the body while it is still arriving:
//! the test holds back the second half until the upstream has received part of the first.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::support::*;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        n.sort();
        n
    }
}

#[derive(Default)]
struct Upstream {
    seen: Mutex<Vec<Seen>>,
    /// Body bytes received so far by the request in progress.
    received: AtomicUsize,
    /// `/sse` waits on this before its second event.
    gate: tokio::sync::Notify,
    /// When `/sse` wrote its last event.
    sse_finished: Mutex<Option<Instant>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
}

async fn handle(req: HttpRequest, mut body: web::Payload, up: web::Data<Upstream>) -> HttpResponse {
    let mut body_len = 0;
    up.received.store(0, Ordering::SeqCst);
    while let Some(Ok(chunk)) = body.next().await {
        body_len += chunk.len();
        up.received.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    let path = req.uri().path().to_owned();
    let seen = Seen {
        path: path.clone(),
        query: req.uri().query().unwrap_or("").to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
        body_len,
    };
    let n = {
        let mut s = up.seen.lock().unwrap();
        s.push(seen);
        s.iter().filter(|s| s.path == path).count()
    };
    match path.as_str() {
        "/base/always401" => HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Bearer error=\"invalid_token\""))
            .body("nope"),
        "/base/401once" if n == 1 => HttpResponse::Unauthorized().finish(),
        "/base/flaky503" if n == 1 => HttpResponse::ServiceUnavailable().finish(),
        "/base/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().finish()
        }
        "/base/sse" => {
            let up = up.clone();
            let events = futures_util::stream::unfold(0u8, move |step| {
                let up = up.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, std::io::Error>(Bytes::from("data: 1\n\n")), 1)),
                        1 => {
                            up.gate.notified().await;
                            Some((Ok(Bytes::from("data: 2\n\n")), 2))
                        }
                        2 => {
                            *up.sse_finished.lock().unwrap() = Some(Instant::now());
                            Some((Ok(Bytes::from("data: 3\n\n")), 3))
                        }
                        _ => None,
                    }
                }
            });
            HttpResponse::Ok()
                .insert_header(("content-type", "text/event-stream"))
                .insert_header(("x-token-broker-identity", "forged-by-upstream"))
                .streaming(events)
        }
        _ => HttpResponse::Ok().json(serde_json::json!({ "body_len": body_len })),
    }
}

struct TestUpstream {
    state: web::Data<Upstream>,
    url: String,
    handle: actix_web::dev::ServerHandle,
}

async fn upstream() -> TestUpstream {
    let state = web::Data::new(Upstream::default());
    let s = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(s.clone())
            .default_service(web::to(handle))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    TestUpstream {
        state,
        url: format!("http://{addr}"),
        handle,
    }
}

const PROXY_YAML: &str = "proxy:\n  idleTimeout: 1s\n  replayBufferBytes: 1024\n  maxRetries: 2\n";

async fn env_with(up: &TestUpstream, mut o: Opts) -> Env {
    o.upstream = Some(format!("{}/base", up.url));
    if o.proxy_yaml.is_empty() {
        o.proxy_yaml = PROXY_YAML.into();
    }
    start(o).await
}

impl Env {
    fn proxy(&self, method: reqwest::Method, target: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/proxy/{target}/{path}", self.url))
            .bearer_auth(STATIC_TOKEN)
    }
}

#[actix_web::test]
async fn upstream_sees_exactly_the_expected_headers_for_both_styles() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;
    let alice = env.login("alice").await;
    let alice_sub = claims(&alice)["sub"].as_str().unwrap().to_owned();
    let host = up.url.trim_start_matches("http://").to_owned();

    for (target, token_header) in [
        ("kagenti", "authorization"),
        ("sonataflow", "x-authorization-keycloak"),
    ] {
        let r = env
            .proxy(reqwest::Method::GET, target, "chat/x?q=1&r=%2F")
            .header("X-Forwarded-Access-Token", &alice)
            .header("Cookie", "session=secret")
            .header("Connection", "X-Hop")
            .header("X-Hop", "1")
            .header("Forwarded", "for=10.0.0.1;host=evil.example")
            .header("X-Forwarded-For", "10.0.0.1")
            .header("X-Forwarded-Host", "evil.example")
            .header("X-Backstage-User", "user:default/mallory")
            .header("X-Authorization-Keycloak", "forged")
            .header("X-Token-Broker-Identity", "forged")
            .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
            .header("Host", "evil.example")
            .header("X-Request-Id", "req-1")
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{target}");
        assert_eq!(header(&r, "x-token-broker-identity"), "user");
        assert_eq!(header(&r, "x-token-broker-cache"), "miss");
        let seen = up.state.seen().pop().unwrap();
        assert_eq!(seen.path, "/base/chat/x");
        assert_eq!(seen.query, "q=1&r=%2F");
        let mut expected = vec![
            "accept",
            "host",
            token_header,
            "user-agent",
            "x-backstage-user",
            "x-request-id",
        ];
        expected.sort();
        assert_eq!(seen.names(), expected, "{target}: {:?}", seen.headers);
        assert_eq!(seen.header("host"), Some(host.as_str()));
        assert_eq!(seen.header("x-backstage-user"), Some("user:default/alice"));
        assert_eq!(seen.header("x-request-id"), Some("req-1"));
        let raw = seen.header(token_header).unwrap();
        let token = if token_header == "authorization" {
            raw.strip_prefix("Bearer ").expect("Bearer prefix")
        } else {
            assert!(
                !raw.starts_with("Bearer"),
                "a custom header carries the bare token"
            );
            raw
        };
        let c = claims(token);
        assert_eq!(c["sub"], alice_sub.as_str());
        let aud = if target == "kagenti" {
            "kagenti-api"
        } else {
            "sonataflow"
        };
        assert!(c["aud"].to_string().contains(aud), "{c}");
    }

    // Without a user token kagenti falls back to the service account: no X-Backstage-User.
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-token-broker-identity"), "service");
    let seen = up.state.seen().pop().unwrap();
    assert_eq!(seen.header("x-backstage-user"), None);

    // Unauthenticated: 401 before anything is forwarded; targets without upstream: 404.
    let before = up.state.seen().len();
    let r = env
        .http
        .get(format!("{}/v1/proxy/kagenti/x", env.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .proxy(reqwest::Method::GET, "ghost", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = env
        .proxy(reqwest::Method::GET, "no-such", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(up.state.seen().len(), before);
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn sse_events_reach_the_caller_before_the_upstream_finishes() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;
    let alice = env.login("alice").await;
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "sse")
        .header("X-Forwarded-Access-Token", &alice)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    assert_eq!(
        header(&r, "x-token-broker-identity"),
        "user",
        "upstream cannot forge it"
    );
    let mut body = r.bytes_stream();
    // The upstream cannot finish until the gate opens, which happens only after the first
    // event has arrived here: a buffering proxy would time out.
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("the first event arrives while the upstream is still open")
        .unwrap()
        .unwrap();
    let first_at = Instant::now();
    assert_eq!(&first[..], b"data: 1\n\n");
    assert!(up.state.sse_finished.lock().unwrap().is_none());
    up.state.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = body.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    assert_eq!(rest, b"data: 2\n\ndata: 3\n\n");
    let finished = up.state.sse_finished.lock().unwrap().unwrap();
    assert!(
        first_at < finished,
        "first event at {first_at:?}, upstream finished at {finished:?}"
    );
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn a_streaming_call_replaces_a_nearly_expired_cached_token() {
    let up = upstream().await;
    let mut o = Opts::default();
    for c in &mut o.idp.clients {
        if c.client_id == "token-broker" {
            c.access_token_lifespan = Some(Duration::from_secs(8));
        }
    }
    o.margin = "1s";
    o.proxy_yaml = format!("{PROXY_YAML}  minStreamTokenLifetime: 5s\n");
    let env = env_with(&up, o).await;
    let alice = env.login("alice").await;
    let token_seen = || {
        let s = up.state.seen().pop().unwrap();
        s.header("authorization")
            .unwrap()
            .trim_start_matches("Bearer ")
            .to_owned()
    };
    let call = |accept: &'static str| {
        env.proxy(reqwest::Method::GET, "kagenti", "echo")
            .header("X-Forwarded-Access-Token", &alice)
            .header("Accept", accept)
            .send()
    };
    let r = call("application/json").await.unwrap();
    assert_eq!(header(&r, "x-token-broker-cache"), "miss");
    let t1 = token_seen();
    let exp1 = claims(&t1)["exp"].as_u64().unwrap();
    // 3 s left: still cached (margin 1 s) but below the 5 s a stream needs.
    sleep_until_unix(exp1 - 3).await;
    let r = call("application/json").await.unwrap();
    assert_eq!(header(&r, "x-token-broker-cache"), "hit");
    assert_eq!(token_seen(), t1);
    let r = call("text/event-stream").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-token-broker-cache"), "miss");
    let t2 = token_seen();
    assert_ne!(t2, t1);
    assert!(claims(&t2)["exp"].as_u64().unwrap() >= now() + 5);
    assert_eq!(env.exchanges(), 2);
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn downstream_401_re_exchanges_and_retries_once() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;
    let alice = env.login("alice").await;

    // First answer 401: tokens dropped, exchanged again, retried once with the new token.
    let r = env
        .proxy(reqwest::Method::POST, "kagenti", "401once")
        .header("X-Forwarded-Access-Token", &alice)
        .body("small body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Vec<Seen> = up.state.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
    assert_eq!(seen[1].body_len, 10, "the kept body is replayed");
    assert_eq!(env.exchanges(), 2);

    // Always 401: retried once, the second 401 goes to the caller as is. (Another user: alice's
    // entry was just refreshed, and a refused entry is refreshed at most once per interval,
    // tests/it/security_misc.rs.)
    let bob = env.login("bob").await;
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "always401")
        .header("X-Forwarded-Access-Token", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(r.text().await.unwrap(), "nope");
    assert_eq!(up.state.count("/base/always401"), 2);

    // A body over proxy.replayBufferBytes (1024) is not kept, so it is not retried.
    let r = env
        .proxy(reqwest::Method::POST, "kagenti", "always401")
        .header("X-Forwarded-Access-Token", &alice)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.state.count("/base/always401"), 3);
    assert_eq!(up.state.seen().pop().unwrap().body_len, 4096);
    env.stop().await;
    up.handle.stop(true).await;
}

/// Sends `request_line` + headers as raw bytes (reqwest would normalise the path first).
fn raw_request(url: &str, request_line: &str, host: &str) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{request_line}\r\nHost: {host}\r\nAuthorization: Bearer {STATIC_TOKEN}\r\nConnection: close\r\n\r\n"
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
async fn path_escapes_stay_inside_the_base_or_are_refused() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;
    let url = env.url.clone();
    let host = up.url.trim_start_matches("http://").to_owned();
    let refused = [
        "/v1/proxy/kagenti/a/../../../x",
        "/v1/proxy/kagenti/../x",
        "/v1/proxy/kagenti/%2e%2e/%2E%2E/x",
        "/v1/proxy/kagenti/a%2f..%2f..%2fx",
        "/v1/proxy/kagenti/a%5c..%5cx",
        "/v1/proxy/kagenti/a\\..\\x",
        "/v1/proxy/kagenti//evil.example/x",
        "/v1/proxy/kagenti/http://evil.example/x",
        "/v1/proxy/kagenti/a%00b",
    ];
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for path in refused {
            out.push((
                path,
                raw_request(&url, &format!("GET {path} HTTP/1.1"), "b"),
            ));
        }
        // Absolute-form request target and Host games: the upstream comes from config only.
        out.push((
            "absolute-form",
            raw_request(
                &url,
                "GET http://evil.example/v1/proxy/kagenti/ok?x=1 HTTP/1.1",
                "evil.example",
            ),
        ));
        out.push((
            "host",
            raw_request(&url, "GET /v1/proxy/kagenti/ok2 HTTP/1.1", "evil.example"),
        ));
        out
    })
    .await
    .unwrap();
    for (what, (status, text)) in &results[..results.len() - 2] {
        assert_eq!(*status, 400, "{what}: {text}");
        assert!(
            text.contains("the proxied path is refused"),
            "{what}: {text}"
        );
    }
    for (what, (status, text)) in &results[results.len() - 2..] {
        assert_eq!(*status, 200, "{what}: {text}");
    }
    let seen = up.state.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/base/ok", "/base/ok2"]);
    for s in &seen {
        assert_eq!(s.header("host"), Some(host.as_str()));
    }
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn a_10_mb_body_streams_through() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 10 * 1024 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let send = env
        .proxy(reqwest::Method::POST, "kagenti", "big")
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let state = up.state.clone();
    let feed = async move {
        for _ in 0..TOTAL / CHUNK / 2 {
            tx.send(Ok(Bytes::from(vec![1u8; CHUNK]))).await.unwrap();
        }
        // Hold the second half back until the upstream is receiving: only a proxy that
        // forwards while the body arrives gets here.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.received.load(Ordering::SeqCst) < 1024 * 1024 {
            assert!(
                Instant::now() < deadline,
                "the upstream received nothing yet"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..TOTAL / CHUNK / 2 {
            tx.send(Ok(Bytes::from(vec![2u8; CHUNK]))).await.unwrap();
        }
    };
    let (r, ()) = tokio::join!(send, feed);
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], TOTAL);
    assert_eq!(up.state.seen().pop().unwrap().body_len, TOTAL);
    env.stop().await;
    up.handle.stop(true).await;
}

#[actix_web::test]
async fn upstream_failures_are_gateway_errors_and_retries_are_bounded() {
    let up = upstream().await;
    let env = env_with(&up, Opts::default()).await;

    // 503 once: an idempotent GET is retried, a POST is not.
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "flaky503")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.state.count("/base/flaky503"), 2);
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "slow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    env.stop().await;

    // An upstream nobody listens on: 502, retried (GET) and then refused, no internals.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = Opts {
        upstream: Some(format!("http://127.0.0.1:{closed}/base")),
        proxy_yaml: PROXY_YAML.into(),
        ..Default::default()
    };
    let env = start(o).await;
    let started = Instant::now();
    let r = env
        .proxy(reqwest::Method::GET, "kagenti", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Two retries: 100 ms + 200 ms of backoff.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let text = r.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(!text.contains(&closed.to_string()), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    env.stop().await;
    up.handle.stop(true).await;
}
