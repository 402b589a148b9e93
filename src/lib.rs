//! token-broker: per-user downstream tokens for Backstage / RHDH backend plugins.
//!
//! A caller presents what it has (a static external-access token, or the user's Keycloak
//! access token); the broker verifies it, exchanges the user's token at Keycloak with RFC 8693
//! for a token scoped to a named target, caches it per subject, shares concurrent identical
//! exchanges, and falls back to its own client-credentials token where a target allows it.
//!
//! Module map (layers and dependency direction: docs/architecture.md): `config` (YAML →
//! validated types), `inbound` (who is calling), `broker` (policy, cache, fallback), `idp`
//! (Keycloak), `outbound` (the one HTTP layer), `protocol` (OAuth URNs), `http` (routes, thin
//! handlers), `error` (RFC 6749 error answers), `app` (assembly), and with cargo feature `dev`
//! (on by default) `dev` (the `token-broker dev` set-up around the development IdP of the
//! `token-broker-devidp` crate) and `devupstream` (its echo upstream).
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod audit_writer;
pub mod broker;
pub mod clock;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "dev")]
pub mod devupstream;
pub mod digest;
pub mod http;
pub mod idp;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod proxy;
pub mod telemetry;
pub mod tester;
pub mod traces;
