//! `proxy`: the limits of proxy mode shared by every target with an `upstream` (the per-target
//! keys are checked in [`super::targets`]).

use super::rules::{section, to_usize};
use crate::config::error::Issues;
use crate::config::model::ProxyConfig;
use crate::config::walk::Field;

/// `proxy`: the limits of proxy mode.
pub(super) fn proxy(field: &Field<'_>, issues: &mut Issues) -> Option<ProxyConfig> {
    let obj = section(
        field,
        &[
            "maxHeaderBytes",
            "connectTimeout",
            "idleTimeout",
            "replayBufferBytes",
            "minStreamTokenLifetime",
            "maxRetries",
        ],
        issues,
    )?;
    let d = ProxyConfig::default();
    let header_field = obj.field("maxHeaderBytes");
    // Below 1 KiB not even an ordinary request's headers fit.
    let max_header_bytes = to_usize(&header_field, header_field.opt_uint(1024, issues), issues);
    let connect_timeout = obj
        .field("connectTimeout")
        .duration_or(d.connect_timeout, false, issues);
    let idle_timeout = obj
        .field("idleTimeout")
        .duration_or(d.idle_timeout, false, issues);
    let replay_field = obj.field("replayBufferBytes");
    // 0 turns replaying (and so the 401 retry) off.
    let replay_buffer_bytes = to_usize(&replay_field, replay_field.opt_uint(0, issues), issues);
    let min_stream_token_lifetime =
        obj.field("minStreamTokenLifetime")
            .duration_or(d.min_stream_token_lifetime, true, issues);
    let retries_field = obj.field("maxRetries");
    let max_retries = match retries_field.opt_uint(0, issues) {
        None => None,
        Some(None) => Some(d.max_retries),
        Some(Some(n)) if n <= 10 => u32::try_from(n).ok(),
        Some(Some(_)) => {
            issues.push(&retries_field.path, "must be at most 10");
            None
        }
    };
    Some(ProxyConfig {
        max_header_bytes: max_header_bytes?.unwrap_or(d.max_header_bytes),
        connect_timeout: connect_timeout?,
        idle_timeout: idle_timeout?,
        replay_buffer_bytes: replay_buffer_bytes?.unwrap_or(d.replay_buffer_bytes),
        min_stream_token_lifetime: min_stream_token_lifetime?,
        max_retries: max_retries?,
    })
}
