//! Wall-clock access for the broker's own time logic (token freshness, cache lifetimes).
//!
//! Everything that compares a token's `exp` with "now" asks a [`Clock`], so tests can drive
//! time. jsonwebtoken and moka read the clock themselves; our checks run in addition to theirs.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in whole seconds since the Unix epoch (JWT NumericDate,
/// RFC 7519 §2).
pub trait Clock: Send + Sync + 'static {
    fn now_unix(&self) -> u64;
}

/// The time written on an audit line: always the real clock, with sub-second precision (the
/// audit log records when a request happened, whatever clock the token logic is given).
#[allow(clippy::disallowed_methods)]
pub fn stamp() -> SystemTime {
    SystemTime::now()
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the broker reads the wall clock (clippy.toml disallows it elsewhere).
    #[allow(clippy::disallowed_methods)]
    fn now_unix(&self) -> u64 {
        // A clock before 1970 is a broken host; treating it as 0 makes every token look
        // valid-for-longer only in our extra check, jsonwebtoken's own check still applies.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
