//! The dev echo upstream of docs/dev-contract.md (DEVELOPMENT ONLY): the `upstream` of both dev
//! targets, so a newcomer can see exactly what a target receives through `/v1/proxy`.
//!
//! - any path, any method: JSON `{"method","path","query","headers"}` of the request it got
//!   (the body is read and discarded);
//! - `GET /stream`: `text/event-stream` (WHATWG HTML §9.2), events `data: 1`, `data: 2`,
//!   `data: 3`, 300 ms apart.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

/// The dev echo upstream's address (docs/dev-contract.md).
pub const DEV_UPSTREAM_ADDR: &str = "127.0.0.1:7090";

/// A running echo upstream.
pub struct DevUpstream {
    pub addr: SocketAddr,
    handle: ServerHandle,
}

impl DevUpstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

async fn echo(req: HttpRequest, mut body: web::Payload) -> HttpResponse {
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            break;
        }
    }
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    HttpResponse::Ok().json(json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query().unwrap_or(""),
        "headers": headers,
    }))
}

async fn stream() -> HttpResponse {
    let events = futures_util::stream::unfold(1u32, |n| async move {
        if n > 3 {
            return None;
        }
        if n > 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("data: {n}\n\n"))),
            n + 1,
        ))
    });
    HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .streaming(events)
}

/// Starts the echo upstream on `addr` (port 0 for any). Must run inside an actix system.
pub async fn start(addr: SocketAddr) -> std::io::Result<DevUpstream> {
    let server = HttpServer::new(|| {
        App::new()
            .route("/stream", web::get().to(stream))
            .default_service(web::to(echo))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let addr = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(DevUpstream { addr, handle })
}
