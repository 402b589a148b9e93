//! Traces end to end: the real binary (`serve`) with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! an OTLP/HTTP receiver inside this test, one proxied request carrying a caller `traceparent`,
//! then SIGTERM (shutdown flushes the batch). The spans must continue the caller's trace, have
//! their children and attributes, the upstream must receive a `traceparent` naming the
//! broker's upstream-call span, and no exported byte may be token material.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

use crate::support::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[derive(Default)]
struct Seen {
    /// Bodies POSTed to `/v1/traces`.
    otlp: Mutex<Vec<String>>,
    /// `traceparent` and `authorization` of each upstream request.
    upstream: Mutex<Vec<(Option<String>, Option<String>)>>,
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn otlp(body: web::Bytes, seen: web::Data<Seen>) -> HttpResponse {
    seen.otlp
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}

async fn upstream(req: HttpRequest, seen: web::Data<Seen>) -> HttpResponse {
    seen.upstream
        .lock()
        .unwrap()
        .push((header(&req, "traceparent"), header(&req, "authorization")));
    HttpResponse::Ok().body("upstream ok")
}

/// One server on 127.0.0.1:0 for both roles (paths differ); returns its base URL.
fn serve(seen: web::Data<Seen>) -> String {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(seen.clone())
            .route("/v1/traces", web::post().to(otlp))
            .default_service(web::to(upstream))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    format!("http://{addr}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An attribute's value as text (OTLP/JSON `AnyValue`).
fn value_text(v: &Value) -> String {
    for k in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        if let Some(x) = v.get(k) {
            return match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    v.to_string()
}

/// A span: id, parent, trace, name, attributes.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every span of every batch, and the resource attributes seen.
fn spans(bodies: &[String]) -> (Vec<Span>, Vec<(String, String)>) {
    let attrs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|kv| {
                        (
                            kv["key"].as_str().unwrap_or("").to_owned(),
                            value_text(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut resource = Vec::new();
    for body in bodies {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            resource.extend(attrs(&rs["resource"]["attributes"]));
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let id = |k: &str| s[k].as_str().unwrap_or("").to_ascii_lowercase();
                    out.push(Span {
                        trace: id("traceId"),
                        id: id("spanId"),
                        parent: id("parentSpanId"),
                        name: s["name"].as_str().unwrap_or("").to_owned(),
                        attrs: attrs(&s["attributes"]),
                    });
                }
            }
        }
    }
    (out, resource)
}

#[actix_web::test]
async fn a_proxied_call_continues_the_callers_trace_without_token_material() {
    let seen = web::Data::new(Seen::default());
    let base_url = serve(seen.clone());
    let idp = token_broker_devidp::start(Opts::default().idp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tb-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (public, admin) = (free_port(), free_port());
    let cfg = format!(
        r#"
server: {{listen: "127.0.0.1:{public}", workers: 1, drainDelay: 100ms, shutdownTimeout: 2s}}
admin: {{listen: "127.0.0.1:{admin}", token: test-admin-token-xyz}}
keycloak:
  issuer: {issuer}
  clientId: token-broker
  clientSecret: {BROKER_SECRET}
userToken: {{header: X-Forwarded-Access-Token, allowedClients: [dev-frontend]}}
backend:
  auth:
    externalAccess:
      - type: static
        options: {{token: {STATIC_TOKEN}, subject: ci-caller}}
targets:
  kagenti: {{audience: kagenti-api, fallback: deny, upstream: "{base_url}/api"}}
"#,
        issuer = idp.issuer(),
    );
    let cfg_file = dir.join("broker.yaml");
    std::fs::write(&cfg_file, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-broker"))
        .args(["serve", "--config", cfg_file.to_str().unwrap()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base_url)
        .env("OTEL_SERVICE_NAME", "broker-under-test")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    let ready = wait_ready(&http, admin).await;
    if !ready {
        child.kill().ok();
    }
    assert!(ready, "broker did not become ready");

    let login: Value = http
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
    let r = http
        .get(format!("http://127.0.0.1:{public}/v1/proxy/kagenti/hello"))
        .bearer_auth(STATIC_TOKEN)
        .header("X-Forwarded-Access-Token", &alice)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();

    // SIGTERM: the graceful shutdown must flush the queued spans (the batch delay is longer
    // than this test waits otherwise).
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    let mut exited = false;
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !exited {
        child.kill().ok();
    }
    child.wait().ok();
    assert_eq!((status, body.as_str()), (200, "upstream ok"));
    assert!(term && exited, "the broker exits on SIGTERM");

    let upstream = seen.upstream.lock().unwrap().clone();
    assert_eq!(upstream.len(), 1, "{upstream:?}");
    let (up_traceparent, up_auth) = upstream[0].clone();
    let issued = up_auth
        .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        .expect("the upstream got the issued token");
    let bodies = seen.otlp.lock().unwrap().clone();
    let (spans, resource) = spans(&bodies);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    assert!(
        resource
            .iter()
            .any(|(k, v)| k == "service.name" && v == "broker-under-test"),
        "{resource:?}"
    );
    // The request span continues the caller's trace: same trace id, the caller's span as
    // parent (W3C Trace Context §3.2).
    let request = spans
        .iter()
        .find(|s| s.name == "GET /v1/proxy/{target}/{path}")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(request.trace, CALLER_TRACE, "{request:?}");
    assert_eq!(request.parent, CALLER_SPAN, "{request:?}");
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert_eq!(
        request.attr("http.route"),
        Some("/v1/proxy/{target}/{path}")
    );
    let child_of = |name: &str, parent: &Span| -> Span {
        spans
            .iter()
            .find(|s| s.name == name && s.parent == parent.id && s.trace == CALLER_TRACE)
            .cloned()
            .unwrap_or_else(|| panic!("no '{name}' child of {parent:?} in {spans:#?}"))
    };
    let verify = child_of("verify caller", request);
    assert_eq!(verify.attr("caller.kind"), Some("service"));
    let fp = verify.attr("subject.fp").expect("subject fingerprint");
    assert_eq!(fp, token_broker::digest::fingerprint(&alice));
    let lookup = child_of("token lookup", request);
    assert_eq!(lookup.attr("cache.status"), Some("miss"));
    assert_eq!(lookup.attr("broker.identity"), Some("user"));
    assert_eq!(lookup.attr("broker.target"), Some("kagenti"));
    assert_eq!(lookup.attr("broker.outcome"), Some("issued_user"));
    // Of this request's trace: `serve` also sends its start-up client-authentication probe (a
    // refused exchange of a dummy subject token), which starts a trace of its own.
    let idp_call = spans
        .iter()
        .find(|s| s.attr("idp.request") == Some("token_exchange") && s.trace == CALLER_TRACE)
        .unwrap_or_else(|| panic!("no token-exchange span in {spans:#?}"));
    assert_eq!(idp_call.trace, CALLER_TRACE, "{idp_call:?}");
    assert_eq!(idp_call.parent, lookup.id, "{idp_call:?}");
    assert_eq!(idp_call.name, "POST token_exchange");
    assert_eq!(idp_call.attr("http.response.status_code"), Some("200"));
    let up_call = child_of("GET proxy upstream", request);
    assert_eq!(up_call.attr("broker.target"), Some("kagenti"));
    assert_eq!(up_call.attr("http.response.status_code"), Some("200"));
    // The upstream continues the broker's span, not the caller's.
    assert_eq!(
        up_traceparent.as_deref(),
        Some(format!("00-{CALLER_TRACE}-{}-01", up_call.id).as_str())
    );

    // No token material anywhere in what was exported: the user's token (whole and each
    // JWT segment), the issued token, the client secret, the caller's static token.
    let mut secrets = vec![
        alice.clone(),
        issued.clone(),
        BROKER_SECRET.to_owned(),
        STATIC_TOKEN.to_owned(),
    ];
    for t in [&alice, &issued] {
        secrets.extend(t.split('.').filter(|s| s.len() >= 16).map(str::to_owned));
    }
    let sub = claims(&alice)["sub"].as_str().unwrap().to_owned();
    secrets.push(sub);
    for body in &bodies {
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "exported spans carry '{s}'");
        }
    }
    for s in &spans {
        for (k, v) in &s.attrs {
            for secret in &secrets {
                assert!(
                    !v.contains(secret.as_str()),
                    "{}.{k} carries '{secret}'",
                    s.name
                );
            }
        }
    }
}
