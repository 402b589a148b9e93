//! The token endpoint: Keycloak's common pipeline (keycloak-token-exchange.md §2) followed by the
//! `password`, `client_credentials` (§8), standard token exchange V2 (§3.3–§3.6, handing what V2
//! declines to V1 when that is on, §5: `v1_exchange.rs`) and JWT authorization (§6:
//! `jwt_grant.rs`) grants, with the statuses and error texts of §2/§3.8/§8 verbatim. Every
//! request is recorded for `DevIdpHandle::requests()`.

use std::net::IpAddr;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::claims::{self, TokenKind, TokenSpec, now_secs};
use super::discovery::{TOKEN_EXCHANGE_GRANT, realm_not_found, request_issuer};
use super::jwt_grant::{self, JWT_BEARER_GRANT};
use super::realm::{
    DEFAULT_SCOPES, DevClient, RealmState, SESSION_IDLE_SECS, Subject, UserSession,
};
use super::v1_exchange;
use super::{RecordedRequest, Shared};

pub(super) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const INVALID_CLIENT_CREDENTIALS: &str = "Invalid client or Invalid client credentials";

/// An OAuth error answer.
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// `WWW-Authenticate` challenge; such answers have no body (§2 step 5, non-Basic header).
    challenge: Option<String>,
}

impl OAuthError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            challenge: None,
        }
    }

    pub(super) fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    /// §3.4 step 2: every subject-token validation failure looks the same on the wire.
    fn invalid_token() -> Self {
        Self::bad_request("invalid_request", "Invalid token")
    }
}

/// What the handler needs from the HTTP request besides the form.
struct RequestCtx {
    issuer: String,
    peer: Option<IpAddr>,
    /// Raw `Authorization` header, if any.
    authorization: Option<String>,
    /// Decoded HTTP Basic credentials, if the header is valid Basic.
    basic: Option<(String, String)>,
}

/// The parsed form, duplicates kept.
pub(super) struct Form<'a>(pub(super) &'a [(String, String)]);

impl Form<'_> {
    pub(super) fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

/// `POST /realms/{realm}/protocol/openid-connect/token`
pub async fn token(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    idp: web::Data<Shared>,
) -> HttpResponse {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let basic = authorization.as_deref().and_then(parse_basic);
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
            issuer: request_issuer(&req, &realm),
            peer: req.peer_addr().map(|a| a.ip()),
            authorization,
            basic: basic.clone(),
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

/// §1: the token endpoint always sets `Cache-Control: no-store` and `Pragma: no-cache`.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    builder
}

fn error_response(e: &OAuthError) -> (HttpResponse, u16, Value) {
    let mut builder = no_store(HttpResponse::build(e.status));
    if let Some(challenge) = &e.challenge {
        builder.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        return (builder.finish(), e.status.as_u16(), Value::Null);
    }
    let body = json!({ "error": e.error, "error_description": e.description });
    (builder.json(&body), e.status.as_u16(), body)
}

/// HTTP Basic credentials with id and secret form-urlencoded before base64, as RFC 6749
/// §2.3.1 requires and Keycloak decodes them (`BasicAuthHelper.RFC6749`, §2 step 5).
fn parse_basic(header_value: &str) -> Option<(String, String)> {
    let (scheme, rest) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a space, `%XX` a byte).
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(|c| (c as char).to_digit(16))?;
                let lo = bytes.next().and_then(|c| (c as char).to_digit(16))?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

/// Keycloak's default `sslRequired=external`: plain HTTP is fine from loopback and private
/// addresses (Java's `isLoopbackAddress`/`isSiteLocalAddress`/`isAnyLocalAddress`; for IPv6
/// we also accept unique-local `fc00::/7`).
fn is_local(ip: IpAddr) -> bool {
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
    let client = authenticate_client(&st, ctx, form, &idp.realm)?;

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
    };
    match grant {
        Grant::Password => password_grant(&issued, &mut st, &client, form),
        Grant::ClientCredentials => client_credentials_grant(&issued, &client, form, ctx),
        Grant::TokenExchange => token_exchange_grant(&issued, &mut st, &client, form),
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

/// §2 step 5 (`ClientIdAndSecretAuthenticator` + `AuthorizeClientUtil`), in Keycloak's order.
fn authenticate_client(
    st: &RealmState,
    ctx: &RequestCtx,
    form: &Form<'_>,
    realm: &str,
) -> Result<DevClient, OAuthError> {
    let (client_id, secret) = match &ctx.basic {
        Some((id, secret)) => (Some(id.clone()), Some(secret.clone())),
        None => {
            // A non-Basic (or unparsable) Authorization header without a form client_id is
            // answered with a Basic challenge and no body.
            if ctx.authorization.is_some() && !form.has("client_id") {
                return Err(OAuthError {
                    status: StatusCode::UNAUTHORIZED,
                    error: "invalid_client",
                    description: String::new(),
                    challenge: Some(format!("Basic realm=\"{realm}\"")),
                });
            }
            (
                form.first("client_id").map(str::to_owned),
                form.first("client_secret").map(str::to_owned),
            )
        }
    };
    let Some(client_id) = client_id else {
        return Err(OAuthError::bad_request(
            "invalid_client",
            "Missing client_id parameter",
        ));
    };
    let unknown = || {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            INVALID_CLIENT_CREDENTIALS,
        )
    };
    let client = st.client(&client_id).ok_or_else(unknown)?;
    if !client.enabled {
        return Err(unknown());
    }
    // Public clients skip the secret check, even when one is sent.
    if let Some(expected) = &client.secret {
        let ok = secret
            .as_deref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()));
        if !ok {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                INVALID_CLIENT_CREDENTIALS,
            ));
        }
    }
    if client.bearer_only {
        return Err(OAuthError::bad_request(
            "invalid_client",
            "Bearer-only not allowed",
        ));
    }
    Ok(client.clone())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// Signs tokens for the request's issuer.
pub(super) struct Issuer<'a> {
    pub(super) idp: &'a Shared,
    pub(super) issuer: &'a str,
}

impl Issuer<'_> {
    pub(super) fn lifespan_secs(&self, client: &DevClient) -> u64 {
        client
            .access_token_lifespan
            .unwrap_or(self.idp.realm_lifespan)
            .as_secs()
    }

    pub(super) fn mint(&self, spec: &TokenSpec<'_>, kind: TokenKind) -> String {
        self.idp.keys.sign(&claims::build(spec, kind))
    }
}

/// Scopes a request asks for, validated against the client (`TokenManager.isValidScope`):
/// each value must be `openid`, a default scope (`profile`, `email`) or one of the client's
/// optional scopes; otherwise 400 `invalid_scope` / `Invalid scopes: <param verbatim>`
/// (§3.4 step 6, §8).
pub(super) struct RequestedScopes {
    pub(super) openid: bool,
    /// Optional client scopes requested, in request order, without duplicates.
    pub(super) optional: Vec<String>,
}

pub(super) fn requested_scopes(
    client: &DevClient,
    form: &Form<'_>,
) -> Result<RequestedScopes, OAuthError> {
    let mut scopes = RequestedScopes {
        openid: false,
        optional: Vec::new(),
    };
    let Some(param) = form.first("scope") else {
        return Ok(scopes);
    };
    for s in param.split(' ').filter(|s| !s.is_empty()) {
        if s == "openid" {
            scopes.openid = true;
        } else if DEFAULT_SCOPES.contains(&s) {
            // Default scopes are always applied.
        } else if client.optional_scopes.contains_key(s) {
            if !scopes.optional.iter().any(|o| o == s) {
                scopes.optional.push(s.to_owned());
            }
        } else {
            return Err(OAuthError::bad_request(
                "invalid_scope",
                format!("Invalid scopes: {param}"),
            ));
        }
    }
    Ok(scopes)
}

/// The `scope` claim/response value: `openid` if requested, the default scopes, then the
/// optional scopes kept.
pub(super) fn scope_string(openid: bool, optional: &[String]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if openid {
        parts.push("openid");
    }
    parts.extend(DEFAULT_SCOPES);
    parts.extend(optional.iter().map(String::as_str));
    parts.join(" ")
}

/// `aud` of a token issued to `client`: its Audience mappers plus the audiences of the
/// requested optional scopes, without duplicates (§3.5).
pub(super) fn audiences(client: &DevClient, optional: &[String]) -> Vec<String> {
    let mut aud: Vec<String> = Vec::new();
    let extra = optional
        .iter()
        .filter_map(|s| client.optional_scopes.get(s))
        .flatten();
    for a in client.audience_mappers.iter().chain(extra) {
        if !aud.contains(a) {
            aud.push(a.clone());
        }
    }
    aud
}

/// Base fields of a successful token response (§3.6, §8).
pub(super) fn token_response(
    access_token: String,
    expires_in: u64,
    scope: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("access_token".into(), json!(access_token));
    m.insert("expires_in".into(), json!(expires_in));
    m.insert("refresh_expires_in".into(), json!(0));
    m.insert("token_type".into(), json!("Bearer"));
    m.insert("not-before-policy".into(), json!(0));
    m.insert("scope".into(), json!(scope));
    m
}

/// Resource owner password credentials grant (`ResourceOwnerPasswordCredentialsGrantType`).
fn password_grant(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    client: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    if !client.direct_access_grants {
        return Err(OAuthError::bad_request(
            "unauthorized_client",
            "Client not allowed for direct access grants",
        ));
    }
    let scopes = requested_scopes(client, form)?;
    let bad_credentials = || {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        )
    };
    // The direct-grant flow checks the user (exists, enabled) before the password.
    let user = form
        .first("username")
        .and_then(|name| st.user_by_name(name))
        .cloned()
        .ok_or_else(bad_credentials)?;
    if !user.enabled {
        return Err(OAuthError::bad_request("invalid_grant", "Account disabled"));
    }
    let password_ok = form
        .first("password")
        .is_some_and(|p| constant_time_eq(p.as_bytes(), user.password.as_bytes()));
    if !password_ok {
        return Err(bad_credentials());
    }

    let sid = uuid::Uuid::new_v4().to_string();
    let auth_time = now_secs();
    st.sessions.insert(
        sid.clone(),
        UserSession {
            user_id: user.id.clone(),
            auth_time,
        },
    );
    let subject = Subject::User(user);
    let aud = audiences(client, &scopes.optional);
    let scope = scope_string(scopes.openid, &scopes.optional);
    let lifespan = issuer.lifespan_secs(client);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        azp: &client.client_id,
        aud: &aud,
        sid: Some(&sid),
        auth_time: Some(auth_time),
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: "onrtro",
        client_address: None,
        service_account_session: false,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    body.insert("refresh_expires_in".into(), json!(SESSION_IDLE_SECS));
    body.insert(
        "refresh_token".into(),
        json!(issuer.mint(&spec, TokenKind::Refresh)),
    );
    if scopes.openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    body.insert("session_state".into(), json!(sid));
    Ok(Value::Object(body))
}

/// Client credentials grant (§8, `ClientCredentialsGrantType`).
fn client_credentials_grant(
    issuer: &Issuer<'_>,
    client: &DevClient,
    form: &Form<'_>,
    ctx: &RequestCtx,
) -> Result<Value, OAuthError> {
    // Bearer-only clients were already rejected by client authentication (§2 step 5).
    if client.is_public() {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Public client not allowed to retrieve service account",
        ));
    }
    if !client.service_accounts_enabled {
        return Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client not enabled to retrieve service account",
        ));
    }
    let scopes = requested_scopes(client, form)?;
    let subject = Subject::ServiceAccount(client.clone());
    let aud = audiences(client, &scopes.optional);
    let scope = scope_string(scopes.openid, &scopes.optional);
    let lifespan = issuer.lifespan_secs(client);
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &subject,
        azp: &client.client_id,
        aud: &aud,
        sid: None,
        auth_time: None,
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: "trrtcc",
        client_address: ctx.peer.map(|ip| ip.to_string()),
        service_account_session: true,
    };
    let mut body = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
    if scopes.openid {
        body.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
    }
    Ok(Value::Object(body))
}

/// Standard token exchange V2 (§3.3 `supports()`, then §3.4 steps 2–9).
/// §3.3: the reason `StandardTokenExchangeProvider.supports()` declines a request, in check
/// order; `None` when V2 accepts it.
fn standard_unsupported_reason(requester: &DevClient, form: &Form<'_>) -> Option<OAuthError> {
    let reason = |text: String| Some(OAuthError::bad_request("invalid_request", text));
    for p in ["requested_subject", "requested_issuer", "subject_issuer"] {
        if form.has(p) {
            return reason(format!(
                "Parameter '{p}' is not supported for standard token exchange"
            ));
        }
    }
    if !requester.standard_token_exchange_enabled {
        return reason("Standard token exchange is not enabled for the requested client".into());
    }
    if !form.has("subject_token") {
        return reason("Parameter 'subject_token' required for standard token exchange".into());
    }
    match form.first("subject_token_type") {
        None => {
            reason("Parameter 'subject_token_type' required for standard token exchange".into())
        }
        Some(ACCESS_TOKEN_TYPE) => None,
        Some(_) => reason("Parameter 'subject_token' supports access tokens only".into()),
    }
}

fn token_exchange_grant(
    issuer: &Issuer<'_>,
    st: &mut RealmState,
    requester: &DevClient,
    form: &Form<'_>,
) -> Result<Value, OAuthError> {
    if let Some(reason) = standard_unsupported_reason(requester, form) {
        // §3.3: with V1 on, V1's `supports()` accepts whatever V2 declines (§5); otherwise the
        // recorded reason is the answer.
        if st.token_exchange_v1_enabled {
            return v1_exchange::v1_exchange(issuer, st, requester, form);
        }
        return Err(reason);
    }
    let Some(subject_token) = form.first("subject_token") else {
        return Err(OAuthError::invalid_token());
    };

    // §3.4 step 2: subject token validation; any failure is `Invalid token`.
    let subject_claims = issuer
        .idp
        .keys
        .verify(subject_token)
        .map_err(|_| OAuthError::invalid_token())?;
    let validated = validate_subject(st, &subject_claims, issuer.issuer)?;
    if subject_claims.get("cnf").is_some()
        && subject_claims.get("azp").and_then(Value::as_str) != Some(requester.client_id.as_str())
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "Sender-constrained token exchange rejected as the token was not issued for the requesting client",
        ));
    }

    // §3.4 step 3: requested_token_type (refresh tokens from exchange are not enabled:
    // `standard.token.exchange.enableRefreshRequestedTokenType` = NO).
    let id_token_requested = match form.first("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE) => false,
        Some(ID_TOKEN_TYPE) => true,
        Some(_) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "requested_token_type unsupported",
            ));
        }
    };

    // §3.4 step 4: every `audience` must be a client of the realm.
    let mut requested_audience: Vec<&str> = Vec::new();
    for a in form.all("audience") {
        if !requested_audience.contains(&a) {
            requested_audience.push(a);
        }
    }
    let mut targets: Vec<&DevClient> = Vec::new();
    for a in &requested_audience {
        let target = st
            .client(a)
            .ok_or_else(|| OAuthError::bad_request("invalid_client", "Audience not found"))?;
        targets.push(target);
    }

    // §3.4 step 5: validateAudience.
    if requester.is_public() {
        return Err(OAuthError::bad_request(
            "invalid_client",
            "Public client is not allowed to exchange token",
        ));
    }
    if targets.iter().any(|t| !t.enabled) {
        return Err(OAuthError::bad_request("invalid_client", "Client disabled"));
    }
    let azp_is_requester =
        subject_claims.get("azp").and_then(Value::as_str) == Some(requester.client_id.as_str());
    let requester_in_aud = match subject_claims.get("aud") {
        Some(Value::String(a)) => *a == requester.client_id,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(requester.client_id.as_str())),
        _ => false,
    };
    if !azp_is_requester && !requester_in_aud {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "Client is not within the token audience",
        ));
    }

    // §3.4 step 6: scopes of the requester (default + requested optional ones).
    let scopes = requested_scopes(requester, form)?;

    // §3.5: aud as for any grant, then filtered to the requested audiences; optional scopes
    // whose audiences were all filtered out are dropped from `scope`.
    let mut aud = audiences(requester, &scopes.optional);
    let mut optional = scopes.optional.clone();
    if !requested_audience.is_empty() {
        aud.retain(|a| requested_audience.contains(&a.as_str()));
        optional.retain(|s| {
            requester.optional_scopes.get(s).is_none_or(|auds| {
                auds.is_empty()
                    || auds
                        .iter()
                        .any(|a| requested_audience.contains(&a.as_str()))
            })
        });
    }
    // §3.4 step 9: checkRequestedAudiences.
    let missing: Vec<&str> = requested_audience
        .iter()
        .copied()
        .filter(|a| !aud.iter().any(|x| x == a))
        .collect();
    if !missing.is_empty() {
        return Err(OAuthError::bad_request(
            "invalid_request",
            format!("Requested audience not available: {}", missing.join(", ")),
        ));
    }

    // Mint: the subject's user and sid, `azp` = requester, the requester's lifespan (§3.5,
    // §3.6). V2 uses an online+transient client session: jti prefix `nt` when there is a user
    // session, `tr` otherwise.
    let scope = scope_string(scopes.openid, &optional);
    let lifespan = issuer.lifespan_secs(requester);
    let sid = validated.sid.as_deref();
    let spec = TokenSpec {
        issuer: issuer.issuer,
        realm: &issuer.idp.realm,
        subject: &validated.subject,
        azp: &requester.client_id,
        aud: &aud,
        sid,
        auth_time: validated.auth_time,
        scope: &scope,
        lifespan_secs: lifespan,
        jti_prefix: if sid.is_some() { "ntrtte" } else { "trrtte" },
        client_address: None,
        service_account_session: false,
    };
    let mut body = if id_token_requested {
        // §3.6: the ID token goes in `access_token`, `token_type` is `N_A`, no `id_token`.
        let mut b = token_response(issuer.mint(&spec, TokenKind::Id), lifespan, &scope);
        b.insert("token_type".into(), json!("N_A"));
        b.insert("issued_token_type".into(), json!(ID_TOKEN_TYPE));
        b
    } else {
        let mut b = token_response(issuer.mint(&spec, TokenKind::Access), lifespan, &scope);
        if scopes.openid {
            b.insert("id_token".into(), json!(issuer.mint(&spec, TokenKind::Id)));
        }
        b.insert("issued_token_type".into(), json!(ACCESS_TOKEN_TYPE));
        b
    };
    if let Some(sid) = sid {
        body.insert("session_state".into(), json!(sid));
    }
    if let Some(fault) = st.exchange_fault {
        apply_fault(issuer, &mut body, fault);
    }
    Ok(Value::Object(body))
}

/// The test hook of [`super::realm::ExchangeFault`]: rewrites a successful answer.
fn apply_fault(
    issuer: &Issuer<'_>,
    body: &mut serde_json::Map<String, Value>,
    fault: super::realm::ExchangeFault,
) {
    use super::realm::ExchangeFault;
    let mut claims = body
        .get("access_token")
        .and_then(Value::as_str)
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    match fault {
        ExchangeFault::WrongAudience => {
            claims["aud"] = json!("someone-else");
            body.insert("access_token".into(), json!(issuer.idp.keys.sign(&claims)));
        }
        ExchangeFault::WrongSubject => {
            claims["sub"] = json!("00000000-0000-0000-0000-000000000000");
            body.insert("access_token".into(), json!(issuer.idp.keys.sign(&claims)));
        }
        ExchangeFault::WrongIssuedTokenType => {
            body.insert(
                "issued_token_type".into(),
                json!("urn:ietf:params:oauth:token-type:refresh_token"),
            );
        }
        ExchangeFault::WrongTokenType => {
            body.insert("token_type".into(), json!("mac"));
        }
        ExchangeFault::ForeignSignature => {
            if let Ok(other) = super::keys::RealmKeys::generate() {
                body.insert("access_token".into(), json!(other.sign(&claims)));
            }
        }
    }
}

/// A subject token that passed §3.4 step 2.
struct ValidatedSubject {
    subject: Subject,
    sid: Option<String>,
    auth_time: Option<u64>,
}

/// §3.4 step 2 after the signature: `iss` equals the request-derived issuer, `typ` is
/// `Bearer`, the token is active (exp/nbf, no clock skew as in Keycloak's default), the user
/// exists and is enabled, and its session (if the token names one) is still alive.
fn validate_subject(
    st: &RealmState,
    claims: &Value,
    issuer: &str,
) -> Result<ValidatedSubject, OAuthError> {
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("iss") != Some(issuer) {
        return Err(OAuthError::invalid_token());
    }
    if str_claim("typ") != Some("Bearer") {
        return Err(OAuthError::invalid_token());
    }
    let now = now_secs();
    // Keycloak: expired when `exp` is set and now > exp; not yet valid when now < nbf.
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or_else(OAuthError::invalid_token)?;
        if exp != 0 && now > exp {
            return Err(OAuthError::invalid_token());
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or_else(OAuthError::invalid_token)?;
        if now < nbf {
            return Err(OAuthError::invalid_token());
        }
    }
    let sub = str_claim("sub").ok_or_else(OAuthError::invalid_token)?;
    let subject = st
        .subject_by_id(sub)
        .ok_or_else(OAuthError::invalid_token)?;
    if let Subject::User(u) = &subject
        && !u.enabled
    {
        return Err(OAuthError::invalid_token());
    }
    let sid = str_claim("sid").map(str::to_owned);
    let mut auth_time = claims.get("auth_time").and_then(Value::as_u64);
    if let Some(sid) = &sid {
        let session = st
            .sessions
            .get(sid)
            .filter(|s| s.user_id == sub)
            .ok_or_else(OAuthError::invalid_token)?;
        auth_time = Some(session.auth_time);
    }
    Ok(ValidatedSubject {
        subject,
        sid,
        auth_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my%20client:s%3Ae+cr%2Bet"));
        assert_eq!(
            parse_basic(&header),
            Some(("my client".to_owned(), "s:e cr+et".to_owned()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

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
