//! The integration suite: one test binary (build time on 2 cores), real HTTP throughout — the
//! real broker on 127.0.0.1:0 against the dev IdP, which plays Keycloak; and, when
//! `TOKEN_BROKER_KEYCLOAK_TEST=1` (scripts/test), against a real Keycloak (`keycloak_real`).

// Test code may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The indexing, clock and lock lints guard the product's code paths; test code indexes what it
// just asserted, reads the real clock to mint tokens, and uses std locks in stand-ins.
#![allow(
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_types
)]

mod backstage_support;
mod redis_support;
mod support;

mod admin;
mod backstage;
mod backstage_harness;
mod backstage_interop;
mod bad_input;
mod browser;
mod cache;
mod cache_session;
mod cli;
mod deploy;
mod exchange;
mod fallback;
mod generic_idp;
mod idp_errors;
mod keycloak_real;
mod logout;
mod logs;
mod no_leak;
mod online;
mod proxy;
mod refresh_ahead;
mod reliability;
mod security_backstage;
mod security_edge;
mod security_laundering;
mod security_misc;
mod shared_cache;
mod traces;
