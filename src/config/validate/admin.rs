//! `admin`: the loopback admin listener and its optional bearer token.

use std::net::{Ipv4Addr, SocketAddr};

use secrecy::SecretString;

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::AdminConfig;
use crate::config::walk::Field;

pub(super) fn admin(
    field: &Field<'_>,
    server_listen: Option<SocketAddr>,
    issues: &mut Issues,
) -> Option<AdminConfig> {
    let obj = section(field, &["enabled", "listen", "token"], issues)?;
    let enabled = obj.field("enabled").bool_or(true, issues);
    let listen_field = obj.field("listen");
    let listen = listen_field.socket_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 7071)), issues);
    // Port 0 asks the OS for a free port, so two port-0 listeners never collide.
    if enabled == Some(true)
        && listen.is_some()
        && listen == server_listen
        && listen.is_some_and(|a| a.port() != 0)
    {
        issues.push(&listen_field.path, "must differ from server.listen");
    }
    let token_field = obj.field("token");
    let token = match token_field.opt_str(issues) {
        None => None,
        Some(None) => Some(None),
        Some(Some(t)) => {
            // The admin credential is sent as `Authorization: Bearer <token>`, so it must be an
            // RFC 6750 §2.1 b64token; 8 characters is Backstage's floor for static tokens.
            if !is_b64token(t) {
                issues.push(
                    &token_field.path,
                    "must be an RFC 6750 §2.1 bearer token: letters, digits and -._~+/ optionally followed by =",
                );
                None
            } else if t.len() < 8 {
                issues.push(&token_field.path, "must be at least 8 characters");
                None
            } else {
                Some(Some(SecretString::from(t.to_owned())))
            }
        }
    };
    Some(AdminConfig {
        listen: if enabled? { Some(listen?) } else { None },
        token: token?,
    })
}

fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
