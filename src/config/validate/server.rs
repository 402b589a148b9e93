//! `server`: the public listener, its worker count and the limits it puts on clients (body and
//! header sizes, body deadline, connection cap, drain and shutdown delays).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::rules::{section, to_usize};
use crate::config::error::Issues;
use crate::config::model::ServerConfig;
use crate::config::walk::Field;

pub(super) fn server(field: &Field<'_>, issues: &mut Issues) -> Option<ServerConfig> {
    let obj = section(
        field,
        &[
            "listen",
            "workers",
            "maxBodyBytes",
            "maxHeaderBytes",
            "drainDelay",
            "shutdownTimeout",
            "bodyReadTimeout",
            "clientDisconnectTimeout",
            "maxConnections",
        ],
        issues,
    )?;
    let max_header = obj.field("maxHeaderBytes");
    let max_header_bytes = to_usize(&max_header, max_header.opt_uint(1024, issues), issues);
    let drain_delay = obj
        .field("drainDelay")
        .duration_or(Duration::ZERO, true, issues);
    let shutdown_timeout =
        obj.field("shutdownTimeout")
            .duration_or(Duration::from_secs(30), true, issues);
    let default_listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7070));
    let listen = obj.field("listen").socket_or(default_listen, issues);
    let workers_field = obj.field("workers");
    let workers = to_usize(&workers_field, workers_field.opt_uint(1, issues), issues);
    let max_body = obj.field("maxBodyBytes");
    let max_body_bytes = to_usize(&max_body, max_body.opt_uint(1, issues), issues);
    let body_read_timeout =
        obj.field("bodyReadTimeout")
            .duration_or(Duration::from_secs(10), false, issues);
    let client_disconnect_timeout =
        obj.field("clientDisconnectTimeout")
            .duration_or(Duration::from_secs(1), true, issues);
    let max_conn = obj.field("maxConnections");
    let max_connections = to_usize(&max_conn, max_conn.opt_uint(1, issues), issues);
    Some(ServerConfig {
        listen: listen?,
        workers: workers?,
        max_body_bytes: max_body_bytes?.unwrap_or(65_536),
        max_header_bytes: max_header_bytes?.unwrap_or(64 * 1024),
        drain_delay: drain_delay?,
        shutdown_timeout: shutdown_timeout?,
        body_read_timeout: body_read_timeout?,
        client_disconnect_timeout: client_disconnect_timeout?,
        max_connections: max_connections?.unwrap_or(1024),
    })
}
