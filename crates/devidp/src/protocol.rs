//! OAuth vocabulary the dev IdP speaks: the grant-type URNs it serves beyond RFC 6749's plain
//! names (`password`, `client_credentials`) and the token-type URNs of RFC 8693 §3. One place,
//! imported by discovery (`grant_types_supported`) and by the token endpoint and its grants.

/// RFC 8693 §2.1 token exchange grant.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 7523 §2.1 JWT bearer grant (Keycloak's JWT authorization grant).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 8693 §3 token types.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const REFRESH_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const SAML2_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:saml2";
