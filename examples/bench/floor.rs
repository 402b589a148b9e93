//! Floor proxies for the proxy-tail figure (issue 16 §5): minimal forwarders with none of the
//! broker's work (no caller check, no token lookup, no audit line) that send the same
//! `GET` with the same downstream token to the same dev echo upstream. Run side by side with
//! the broker's proxy mode under the same `wrk` load, their `p99 / p50` is what this machine
//! and load give a proxy built on each stack, so the broker's own share of its tail can be read
//! off in one run:
//!
//! - `actix`: actix-web (two single-threaded workers) and reqwest (one client per worker), the
//!   broker's stack; `GET /floor/...`;
//! - `actix-hyper`: the same server with hyper-util's client instead of reqwest (would dropping
//!   reqwest's layers change the tail?); `GET /floorh/...`, only with `--only-proxy`;
//! - `tokio`: hyper's server and client on a work-stealing tokio runtime (two workers), the
//!   architecture of other Rust gateways; its own process.
//!
//! Each floor runs as its own process, as the broker does (`--floor-serve PORT`, with
//! `FLOOR_UPSTREAM`, `FLOOR_TOKEN` and `FLOOR_TOKIO=1` for the tokio one).

use std::process::{Child, Command};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::free_port;

/// The floor processes of one benchmark run; killed when dropped.
pub struct Floors {
    children: Vec<Child>,
    /// `GET` URL of the actix-web + reqwest floor.
    pub actix: String,
    /// `GET` URL of the actix-web + hyper-util client floor.
    pub actix_hyper: String,
    /// `GET` URL of the tokio work-stealing hyper floor.
    pub tokio: String,
}

impl Drop for Floors {
    fn drop(&mut self) {
        for c in &mut self.children {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// Starts both floor processes (this executable, `--floor-serve`) in front of `upstream`,
/// sending `token`, and waits until they listen.
pub fn start(upstream: &str, token: &str) -> Floors {
    let me = std::env::current_exe().unwrap();
    let (actix_port, tokio_port) = (free_port(), free_port());
    let spawn = |port: u16, tokio: bool| {
        let mut c = Command::new(&me);
        c.args(["--floor-serve", &port.to_string()])
            .env("FLOOR_UPSTREAM", upstream)
            .env("FLOOR_TOKEN", token);
        if tokio {
            c.env("FLOOR_TOKIO", "1");
        }
        c.spawn().unwrap()
    };
    let children = vec![spawn(actix_port, false), spawn(tokio_port, true)];
    for port in [actix_port, tokio_port] {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Floors {
        children,
        actix: format!("http://127.0.0.1:{actix_port}/floor/bench"),
        actix_hyper: format!("http://127.0.0.1:{actix_port}/floorh/bench"),
        tokio: format!("http://127.0.0.1:{tokio_port}/floor/bench"),
    }
}

/// `--floor-serve PORT`: serves one floor until killed.
pub fn serve(port: u16) {
    let upstream = std::env::var("FLOOR_UPSTREAM").unwrap();
    let bearer = format!("Bearer {}", std::env::var("FLOOR_TOKEN").unwrap());
    if std::env::var_os("FLOOR_TOKIO").is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve_tokio(port, upstream, bearer));
    } else {
        actix_web::rt::System::new().block_on(serve_actix(port, upstream, bearer));
    }
}

/// Upstream URL and `Authorization` value.
struct Target {
    upstream: String,
    bearer: String,
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn hyper_client() -> HyperClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Clients are built in the factory, so once per worker, as the broker's forwarders are.
async fn serve_actix(port: u16, upstream: String, bearer: String) {
    let target = web::Data::new(Target { upstream, bearer });
    HttpServer::new(move || {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        App::new()
            .app_data(target.clone())
            .app_data(web::Data::new(client))
            .app_data(web::Data::new(hyper_client()))
            .route("/floorh/{tail:.*}", web::to(via_hyper))
            .default_service(web::to(via_reqwest))
    })
    .workers(2)
    .bind(("127.0.0.1", port))
    .unwrap()
    .run()
    .await
    .unwrap();
}

/// The answer's status, content type and length, its body streamed.
fn answer<S, E>(status: u16, content_type: Option<&[u8]>, len: Option<u64>, body: S) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + 'static,
    E: Into<Box<dyn std::error::Error>> + 'static,
{
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(ct) = content_type {
        b.insert_header(("content-type", ct));
    }
    match len {
        Some(n) => b.no_chunking(n).streaming(body),
        None => b.streaming(body),
    }
}

async fn via_reqwest(
    req: HttpRequest,
    t: web::Data<Target>,
    client: web::Data<reqwest::Client>,
) -> HttpResponse {
    let tail = req.path().strip_prefix("/floor").unwrap_or("");
    match client
        .get(format!("{}{tail}", t.upstream))
        .header("authorization", t.bearer.as_str())
        .send()
        .await
    {
        Ok(r) => answer(
            r.status().as_u16(),
            r.headers()
                .get("content-type")
                .map(|v| v.as_bytes().to_vec())
                .as_deref(),
            r.content_length(),
            r.bytes_stream(),
        ),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn via_hyper(
    req: HttpRequest,
    t: web::Data<Target>,
    client: web::Data<HyperClient>,
) -> HttpResponse {
    let tail = req.path().strip_prefix("/floorh").unwrap_or("");
    let r = http::Request::get(format!("{}{tail}", t.upstream))
        .header("authorization", t.bearer.as_str())
        .body(http_body_util::Empty::new())
        .unwrap();
    match client.request(r).await {
        Ok(r) => {
            let len = r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.as_bytes().to_vec());
            answer(
                r.status().as_u16(),
                ct.as_deref(),
                len,
                http_body_util::BodyDataStream::new(r.into_body()),
            )
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

/// hyper's server and client in one work-stealing runtime: a connection's tasks may run on
/// either worker.
async fn serve_tokio(port: u16, upstream: String, bearer: String) {
    let shared = std::sync::Arc::new((hyper_client(), Target { upstream, bearer }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        sock.set_nodelay(true).ok();
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let (client, t) = &*shared;
                        let tail = req.uri().path().strip_prefix("/floor").unwrap_or("");
                        let r = http::Request::get(format!("{}{tail}", t.upstream))
                            .header("authorization", t.bearer.as_str())
                            .body(http_body_util::Empty::new())
                            .unwrap();
                        // An upstream failure ends the connection (wrk counts it as an error).
                        let (parts, body) = client.request(r).await?.into_parts();
                        let mut out = http::Response::new(body);
                        *out.status_mut() = parts.status;
                        for h in ["content-type", "content-length"] {
                            if let Some(v) = parts.headers.get(h) {
                                out.headers_mut().insert(h, v.clone());
                            }
                        }
                        Ok::<_, hyper_util::client::legacy::Error>(out)
                    }
                });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await
                .ok();
        });
    }
}
