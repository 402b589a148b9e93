//! Request bodies under a deadline, and connections that never outlive an answer given before
//! the body arrived.
//!
//! actix bounds the time to receive a request *head* (5 s), not its body. A client that sends
//! headers and then one body byte every few seconds would otherwise hold its connection, and a
//! file descriptor, as long as it likes. Two rules close that (docs/security.md, "Slow
//! bodies"):
//!
//! - [`read_body`]: the handlers that buffer a body (`/v1/token`, `/admin/exchange`) read it
//!   only after the headers authenticated, bounded in size (`server.maxBodyBytes`, 413) and in
//!   total time (`server.bodyReadTimeout`, 408, RFC 9110 §15.5.9).
//! - [`close_unread_bodies`]: when an answer is sent while the body is still unread (401 before
//!   the body, 408, 413, 404 …), the connection is closed after the answer (`Connection:
//!   close`, lingering at most `server.clientDisconnectTimeout` so the client can read it).
//!   actix does that by itself for a body with a `Content-Length`, but once the handler has
//!   dropped a *chunked* body it keeps reading and discarding it for as long as the client
//!   sends, with no timer at all. Keeping the body alive until the answer has been written
//!   makes actix close the connection in both cases.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{ApiError, HttpRefusal};

/// Reads the whole body: at most `limit` bytes (413 beyond), within `deadline` (408 beyond).
pub async fn read_body(
    payload: &mut web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Vec<u8>, ApiError> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|_| ApiError::invalid_request("the request body could not be read"))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::http(
                    HttpRefusal::PayloadTooLarge,
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(r) => r,
        Err(_) => Err(too_slow(deadline)),
    }
}

/// The 408 of a body that did not arrive within `deadline` (`server.bodyReadTimeout`, RFC 9110
/// §15.5.9); also the proxy's, for its read-ahead.
pub fn too_slow(deadline: Duration) -> ApiError {
    ApiError::http(
        HttpRefusal::RequestTimeout,
        format!(
            "the request body did not arrive within {} ms (server.bodyReadTimeout)",
            deadline.as_millis()
        ),
    )
}

/// The request body as the handler sees it, shared with [`close_unread_bodies`].
struct Shared {
    payload: RefCell<Payload>,
    /// Set once the body ended (or failed): nothing is left to read.
    done: Cell<bool>,
}

/// Middleware (outermost on both listeners): see the module doc. Requests without a body pass
/// untouched; for the others the body is read through a shared handle, and an answer produced
/// before its end carries `Connection: close` and keeps the body alive until it is written.
pub async fn close_unread_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<HoldBody>, actix_web::Error> {
    close_unread_bodies_around(req, |req| next.call(req)).await
}

/// [`close_unread_bodies`] around `inner` (the layers below it): lets the public listener run
/// this rule and its own per-request layer as one middleware (each `from_fn` layer boxes the
/// request's future once more, issue 16).
pub async fn close_unread_bodies_around<B, F>(
    mut req: ServiceRequest,
    inner: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<HoldBody>, actix_web::Error>
where
    B: MessageBody + 'static,
    F: std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    // A body with a `Content-Length` (and no `Transfer-Encoding`) needs nothing from this
    // layer: actix closes the connection itself when such a body is left unread (module doc),
    // and passing it through untouched saves the shared handle on every token request.
    let framed = req
        .headers()
        .contains_key(actix_web::http::header::CONTENT_LENGTH)
        && !req
            .headers()
            .contains_key(actix_web::http::header::TRANSFER_ENCODING);
    if framed {
        let res = inner(req).await?.map_into_boxed_body();
        return Ok(res.map_body(|_, body| HoldBody { body, _hold: None }));
    }
    let original = req.take_payload();
    if matches!(original, Payload::None) {
        let res = inner(req).await?.map_into_boxed_body();
        return Ok(res.map_body(|_, body| HoldBody { body, _hold: None }));
    }
    let shared = Rc::new(Shared {
        payload: RefCell::new(original),
        done: Cell::new(false),
    });
    let reader = shared.clone();
    let stream = futures_util::stream::poll_fn(move |cx| {
        let polled = reader.payload.borrow_mut().poll_next_unpin(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            reader.done.set(true);
        }
        polled
    });
    req.set_payload(Payload::Stream {
        payload: Box::pin(stream),
    });
    // Inner layers answer with responses (handler errors become responses inside actix, and
    // `limit_header_bytes` builds its own); an error passed up here would be answered by actix
    // without this layer, so none is produced below it.
    let mut res = inner(req).await?.map_into_boxed_body();
    if shared.done.get() {
        return Ok(res.map_body(|_, body| HoldBody { body, _hold: None }));
    }
    // RFC 9112 §9.6: the server announces that it closes the connection after this answer.
    res.response_mut()
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    Ok(res.map_body(|_, body| HoldBody {
        body,
        _hold: Some(shared),
    }))
}

/// A response body that keeps the request body (when unread) alive until it has been written:
/// actix then closes the connection instead of draining a chunked body without a deadline.
pub struct HoldBody {
    body: BoxBody,
    /// Only held, never read.
    _hold: Option<Rc<Shared>>,
}

impl MessageBody for HoldBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
