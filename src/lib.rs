//! token-broker: per-user downstream tokens for Backstage / RHDH backend plugins.
#![forbid(unsafe_code)]

pub mod config;
pub mod devidp;
