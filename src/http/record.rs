//! What the edge records about a request that reached the token service: the audit record's
//! fields and the request, cache and fallback metrics, both derived here from what the lower
//! layers return ([`Issued`]: identity, cache status, fallback reason; [`BrokerError`]: the
//! refusal and Keycloak's status and error), for `/v1/token` and `/v1/proxy` alike; and the
//! `token lookup` span around the token service's call ([`traced_lookup`], `traces.rs`).

use std::future::Future;

use tracing::Instrument;

use crate::audit::Record;
use crate::broker::{BrokerError, CacheStatus, FallbackReason, Identity, Issued};
use crate::idp::IdpError;
use crate::inbound::Principal;
use crate::inbound::oidc::VerifiedUserToken;
use crate::metrics::{self, CacheKind, CacheResult, Metrics, TokenOutcome};

/// The fixed outcome of the token service (metrics label and audit field).
pub fn outcome(result: &Result<Issued, BrokerError>) -> TokenOutcome {
    match result {
        Ok(i) => match i.identity {
            Identity::User => TokenOutcome::IssuedUser,
            Identity::Service => TokenOutcome::IssuedService,
        },
        Err(BrokerError::UnknownTarget(_)) => TokenOutcome::UnknownTarget,
        Err(BrokerError::Policy(_)) => TokenOutcome::PolicyDenied,
        Err(BrokerError::UserTokenRequired { .. }) => TokenOutcome::UserTokenRequired,
        Err(BrokerError::ExchangeFailed { .. }) => TokenOutcome::IdpUnavailable,
        Err(BrokerError::ExchangeRejected(_)) => TokenOutcome::KeycloakRejected,
        Err(BrokerError::ServiceAccountFailed { .. }) => TokenOutcome::ServiceAccountFailed,
        Err(BrokerError::InvalidIdpAnswer(_)) => TokenOutcome::InvalidIdpAnswer,
    }
}

/// Records who is calling: as soon as the credentials are verified, so a request refused
/// later (bad form, body deadline, path) still names its caller.
pub fn principal(rec: &mut Record, principal: &Principal, user: Option<&VerifiedUserToken<'_>>) {
    rec.caller = principal.name.clone();
    rec.caller_kind = principal.kind.as_str();
    rec.actor = principal.actor.clone().unwrap_or_default();
    rec.user = if principal.backstage_user.is_some() {
        principal.name.clone()
    } else {
        user.map(|u| u.sub().to_owned()).unwrap_or_default()
    };
}

/// Records the token service's answer in the audit record and counts it: one request per
/// answer (label `target`: the name when it is configured, else `_unknown`), and for a
/// served token its cache result and fallback reason.
pub fn issued(
    rec: &mut Record,
    m: &Metrics,
    target_known: bool,
    result: &Result<Issued, BrokerError>,
) {
    let o = outcome(result);
    note(rec, o, result);
    m.token_request(
        if target_known {
            rec.target.as_str()
        } else {
            "_unknown"
        },
        o,
    );
    if let Ok(i) = result {
        m.cache_request(
            match i.identity {
                Identity::User => CacheKind::User,
                Identity::Service => CacheKind::Service,
            },
            match i.cache {
                CacheStatus::Hit => CacheResult::Hit,
                CacheStatus::Miss => CacheResult::Miss,
                CacheStatus::Coalesced => CacheResult::Coalesced,
                CacheStatus::Shared => CacheResult::Shared,
            },
        );
        if let Some(f) = i.fallback {
            m.fallback(match f {
                FallbackReason::NoUserToken => metrics::FallbackReason::NoUserToken,
                FallbackReason::IdpUnavailable => metrics::FallbackReason::IdpUnavailable,
                FallbackReason::ExchangeUnsupported => metrics::FallbackReason::ExchangeUnsupported,
            });
        }
    }
}

fn note(rec: &mut Record, o: TokenOutcome, result: &Result<Issued, BrokerError>) {
    rec.outcome = o.as_str();
    match result {
        Ok(i) => {
            rec.identity = i.identity.as_str();
            rec.cache = i.cache.as_str();
            rec.fallback = i.fallback.map(|f| f.as_str()).unwrap_or("");
            rec.issued_fp = i.token.fingerprint.clone();
        }
        Err(e) => {
            let idp = match e {
                BrokerError::ExchangeFailed { source, .. }
                | BrokerError::ServiceAccountFailed { source, .. }
                | BrokerError::ExchangeRejected(source) => Some(source),
                _ => None,
            };
            match idp {
                Some(IdpError::Rejected { status, error, .. }) => {
                    rec.idp_status = *status;
                    rec.idp_error = error.chars().take(64).collect();
                }
                Some(other) => {
                    rec.idp_status = other.idp_status();
                    rec.idp_error = other.kind().to_owned();
                }
                None => {}
            }
        }
    }
}

/// Runs one token lookup (cache, shared in-flight exchange, fallback) inside its `token lookup`
/// span and records what it served: cache status, identity, target, fallback reason, or the
/// outcome of a refusal. The issued token appears as nothing (not even its fingerprint: the
/// audit line has that).
pub async fn traced_lookup(
    target: &str,
    lookup: impl Future<Output = Result<Issued, BrokerError>>,
) -> Result<Issued, BrokerError> {
    let span = tracing::info_span!(
        target: crate::traces::SPAN_TARGET,
        "token lookup",
        broker.target = %target.chars().take(64).collect::<String>(),
        cache.status = tracing::field::Empty,
        broker.identity = tracing::field::Empty,
        fallback.reason = tracing::field::Empty,
        broker.outcome = tracing::field::Empty,
    );
    let result = lookup.instrument(span.clone()).await;
    span.record("broker.outcome", outcome(&result).as_str());
    if let Ok(i) = &result {
        span.record("cache.status", i.cache.as_str());
        span.record("broker.identity", i.identity.as_str());
        if let Some(f) = i.fallback {
            span.record("fallback.reason", f.as_str());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_match_the_documented_values() {
        let e = BrokerError::UnknownTarget("x".into());
        assert_eq!(outcome(&Err(e)).as_str(), "unknown_target");
        let e = BrokerError::InvalidIdpAnswer("x".into());
        assert_eq!(outcome(&Err(e)).as_str(), "invalid_idp_answer");
    }
}
