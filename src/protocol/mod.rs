//! OAuth vocabulary the broker speaks: grant-type and token-type identifiers, defined once.
//!
//! Only constants and plain vocabulary types live here (no policy), so every layer may use them: the HTTP edge checks
//! the `grant_type` a caller sends, the IdP client puts them in its forms, and the metrics name
//! a token-endpoint call by its grant. [`ErrorCode`] is the `error` vocabulary of OAuth error
//! answers. [`headers`] names the HTTP headers with a fixed meaning
//! for the proxy.

pub mod error_code;
pub mod headers;

pub use error_code::ErrorCode;

/// RFC 8693 §2.1: the token-exchange grant.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 6749 §4.4.2: the client-credentials grant.
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";

/// RFC 7523 §2.1: the JWT authorization grant.
pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 8693 §3: an OAuth 2.0 access token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 8693 §3: an OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
