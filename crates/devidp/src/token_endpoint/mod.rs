//! The token endpoint (`POST /realms/{realm}/protocol/openid-connect/token`): Keycloak's common
//! pipeline (docs/reference/keycloak-token-exchange.md §2: SSL, grant type, client authentication,
//! duplicated parameters) and the dispatch to one module per grant — `password.rs`,
//! `client_credentials.rs` (§8), `standard_exchange.rs` (token exchange V2, §3.3–§3.6),
//! `v1_exchange.rs` (legacy V1 naked impersonation, §5: what V2 declines while V1 is on) and
//! `jwt_grant.rs` (JWT authorization grant, §6) — with the statuses and error texts of
//! §2/§3.8/§8 verbatim. Client authentication is `client_auth.rs`; what the grants share (the
//! error answer, the form, minting, scopes, audiences) is `common.rs`. Every request is recorded
//! for `DevIdpHandle::requests()`.

mod client_auth;
mod client_credentials;
mod common;
mod jwt_grant;
mod password;
mod standard_exchange;
mod v1_exchange;

use std::net::IpAddr;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

pub(crate) use self::client_auth::{PresentedAuthorization, authenticate_client, parse_basic};
use self::common::Issuer;
pub(crate) use self::common::{Form, OAuthError};
use crate::discovery::{realm_issuer, realm_not_found};
use crate::protocol::{JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT};
use crate::state::{RecordedRequest, Shared};

/// What the pipeline needs from the HTTP request besides the form.
struct RequestCtx {
    issuer: String,
    peer: Option<IpAddr>,
    authorization: PresentedAuthorization,
}

/// `POST /realms/{realm}/protocol/openid-connect/token`
pub async fn token(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    idp: web::Data<Shared>,
) -> HttpResponse {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    // A header value that is not visible ASCII counts as no header.
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let basic = authorization.and_then(parse_basic);
    let authorization_present = authorization.is_some();
    let grant_type = Form(&form).first("grant_type").map(str::to_owned);

    let delay = idp.state().token_endpoint_delay;
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }

    // §6: the assertion's identity-provider keys are fetched here, before the synchronous
    // pipeline takes the realm lock.
    let prefetched = if grant_type.as_deref() == Some(JWT_BEARER_GRANT) {
        jwt_grant::prefetch_keys(&idp, &form).await
    } else {
        None
    };

    let realm = path.into_inner();
    let (response, status, recorded_body) = if realm != idp.realm {
        (
            realm_not_found(),
            404,
            json!({ "error": "Realm does not exist" }),
        )
    } else {
        let ctx = RequestCtx {
            issuer: realm_issuer(&req, &idp),
            peer: req.peer_addr().map(|a| a.ip()),
            authorization: PresentedAuthorization {
                present: authorization_present,
                basic: basic.clone(),
            },
        };
        match process(&idp, &ctx, &Form(&form), prefetched.as_ref()) {
            Ok(body) => (no_store(HttpResponse::Ok()).json(&body), 200, body),
            Err(e) => error_response(&e),
        }
    };

    idp.requests().push(RecordedRequest {
        grant_type,
        form,
        basic_auth_client_id: basic.map(|(id, _)| id),
        status,
        body: recorded_body,
    });
    response
}

/// `POST /realms/{realm}/protocol/openid-connect/token/introspect` (RFC 7662), in the generic
/// test mode only (`crate::realm::GenericMode`); otherwise, and for other methods, the realm's
/// 404 exactly as before. The client authenticates as at the token endpoint; a token is
/// `active` when it is a realm-signed JWT that passes the exchange's subject checks (issuer,
/// type, time, user enabled, session alive). Recorded like token requests (no `grant_type`).
pub async fn introspect(
    req: HttpRequest,
    body: web::Bytes,
    idp: web::Data<Shared>,
) -> HttpResponse {
    let generic = idp.state().generic.clone();
    let Some(generic) = generic.filter(|_| req.method() == actix_web::http::Method::POST) else {
        return crate::discovery::not_found(req, idp).await;
    };
    if req.match_info().get("realm") != Some(idp.realm.as_str()) {
        return realm_not_found();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let presented = PresentedAuthorization {
        present: authorization.is_some(),
        basic: authorization.and_then(parse_basic),
    };
    let (response, status, recorded) = {
        let st = idp.state();
        match authenticate_client(&st, &presented, &Form(&form), &idp.realm) {
            Err(e) => error_response(&e),
            Ok(_) => {
                let claims = Form(&form)
                    .first("token")
                    .and_then(|t| idp.keys.verify(t).ok())
                    .filter(|c| standard_exchange::subject_is_valid(&st, c, &generic.issuer));
                let body = match claims {
                    Some(Value::Object(mut c)) => {
                        let azp = c.get("azp").cloned().unwrap_or(Value::Null);
                        let username = c.get("preferred_username").cloned().unwrap_or(Value::Null);
                        c.insert("active".into(), json!(true));
                        c.insert("client_id".into(), azp);
                        c.insert("username".into(), username);
                        c.insert("token_type".into(), json!("Bearer"));
                        Value::Object(c)
                    }
                    _ => json!({ "active": false }),
                };
                (HttpResponse::Ok().json(&body), 200, body)
            }
        }
    };
    idp.requests().push(RecordedRequest {
        grant_type: None,
        form,
        basic_auth_client_id: presented.basic.map(|(id, _)| id),
        status,
        body: recorded,
    });
    response
}

/// §1: the token endpoint always sets `Cache-Control: no-store` and `Pragma: no-cache`.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    builder
}

pub(crate) fn error_response(e: &OAuthError) -> (HttpResponse, u16, Value) {
    let mut builder = no_store(HttpResponse::build(e.status));
    if let Some(challenge) = &e.challenge {
        builder.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        return (builder.finish(), e.status.as_u16(), Value::Null);
    }
    let body = json!({ "error": e.error, "error_description": e.description });
    (builder.json(&body), e.status.as_u16(), body)
}

/// Keycloak's default `sslRequired=external`: plain HTTP is fine from loopback and private
/// addresses (Java's `isLoopbackAddress`/`isSiteLocalAddress`/`isAnyLocalAddress`; for IPv6
/// we also accept unique-local `fc00::/7`).
pub(crate) fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local(IpAddr::V4(v4));
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfec0
        }
    }
}

/// The §2 pipeline, then the grant. Synchronous: it holds the realm lock throughout, which is
/// fine because nothing in here awaits.
fn process(
    idp: &Shared,
    ctx: &RequestCtx,
    form: &Form<'_>,
    prefetched: Option<&jwt_grant::Prefetched>,
) -> Result<Value, OAuthError> {
    // §2 step 1 checkSsl.
    if let Some(ip) = ctx.peer
        && !is_local(ip)
    {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "invalid_request",
            "HTTPS required",
        ));
    }
    // §2 step 2 checkRealm: the realm exists (checked by the caller) and is always enabled.
    let mut st = idp.state();

    // §2 step 3 checkGrantType, before client authentication.
    let Some(grant_type) = form.first("grant_type") else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "Missing form parameter: grant_type",
        ));
    };
    let grant = match grant_type {
        "password" => Grant::Password,
        "client_credentials" => Grant::ClientCredentials,
        TOKEN_EXCHANGE_GRANT if st.token_exchange_enabled => Grant::TokenExchange,
        JWT_BEARER_GRANT if st.jwt_authorization_grant_enabled => Grant::JwtBearer,
        _ => {
            return Err(OAuthError::bad_request(
                "unsupported_grant_type",
                "Unsupported grant_type",
            ));
        }
    };

    // §2 step 5 checkClient.
    let client = authenticate_client(&st, &ctx.authorization, form, &idp.realm)?;

    // §2 step 6 checkParameterDuplicated: token exchange allows `audience` and `resource` to
    // repeat (TokenExchangeGrantType.SUPPORTED_DUPLICATED_PARAMETERS).
    for (i, (key, _)) in form.0.iter().enumerate() {
        let allowed = grant == Grant::TokenExchange && (key == "audience" || key == "resource");
        if !allowed && form.0.iter().skip(i + 1).any(|(k, _)| k == key) {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "duplicated parameter",
            ));
        }
    }

    let issued = Issuer {
        idp,
        issuer: &ctx.issuer,
        generic: st.generic.clone(),
    };
    match grant {
        Grant::Password => password::password_grant(&issued, &mut st, &client, form),
        Grant::ClientCredentials => {
            client_credentials::client_credentials_grant(&issued, &client, form, ctx.peer)
        }
        Grant::TokenExchange => match standard_exchange::unsupported_reason(&client, form) {
            None => standard_exchange::standard_exchange_grant(&issued, &mut st, &client, form),
            // §3.3: with V1 on, V1's `supports()` accepts whatever V2 declines (§5); otherwise
            // V2's reason is the answer.
            Some(_) if st.token_exchange_v1_enabled => {
                v1_exchange::v1_exchange(&issued, &mut st, &client, form)
            }
            Some(reason) => Err(reason),
        },
        Grant::JwtBearer => {
            jwt_grant::jwt_bearer_grant(&issued, &mut st, &client, form, prefetched)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    Password,
    ClientCredentials,
    TokenExchange,
    JwtBearer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "::1",
            "fd00::1",
        ] {
            assert!(is_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_local(ip.parse().unwrap()), "{ip}");
        }
    }
}
