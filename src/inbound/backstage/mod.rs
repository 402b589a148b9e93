//! Verification of every Backstage caller credential, with Backstage's own dispatch order and
//! outcomes (`DefaultAuthService.authenticate`, docs/reference/backstage-tokens.md §5, checklist
//! §9):
//! 1. `typ: vnd.backstage.plugin` → plugin token (§3.3): `sub` must match `^[a-z0-9_-]+$`
//!    (and, stricter than Backstage, be at most 64 characters and match
//!    `backstage.trustedPlugins` when set; both checked before any fetch), keys from
//!    `{base(sub)}/.backstage/auth/v1/jwks.json` (so the issuer is bound by whose JWKS holds
//!    the key; fetches bounded as in [`keys`]), `aud` ∋ the broker's plugin id, `obo` → user
//!    with actor;
//! 2. `typ` user / limited user, or an untyped token with `aud == "backstage"` → user token
//!    (§3.1) against `{auth}/.well-known/jwks.json`; limited tokens are refused (the broker has
//!    no browser routes, so limited access is never allowed);
//! 3. external access in configured order, then `backend.auth.keys` (§3.4): `static` (exact
//!    match, compared in constant time), `jwks` (errors swallowed), `legacy` (HS256);
//!    `accessRestrictions` without an entry for the broker → 403;
//! 4. nothing matched → 401 `Illegal token`.
//!
//! Deviation: where Backstage answers 500 for a legacy token with a good signature that fails
//! a claim check (`JWTExpired`), the broker answers 401 (docs/backstage-integration.md).

pub mod discovery;
pub mod jose;
pub mod keys;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::backstage::lenient_base64url;
use crate::config::{AccessRestriction, BackstageConfig, ExternalAccessEntry, ExternalAccessKind};
use crate::digest::{KeyDigest, sha256};
use discovery::Discovery;
use jose::{ClaimRules, Jws};
use keys::{KeySetError, KeySets};

pub const TYP_USER: &str = "vnd.backstage.user";
pub const TYP_LIMITED: &str = "vnd.backstage.limited-user";
pub const TYP_PLUGIN: &str = "vnd.backstage.plugin";

/// Who a Backstage credential names.
#[derive(Clone)]
pub enum BackstageIdentity {
    /// A Backstage user, directly or on behalf of a plugin (`actor` = `plugin:<id>`).
    User {
        entity_ref: String,
        actor: Option<String>,
        /// The user credential's `exp` (for obo: the `obo` token's).
        expires_at: u64,
        /// The user (or limited user) token itself: the cache key of user-via-plugin requests.
        credential: SecretString,
    },
    /// A service: `plugin:<id>`, a static subject, a legacy subject, `external:...`.
    Service {
        subject: String,
        restrictions: Option<Vec<AccessRestriction>>,
    },
}

impl std::fmt::Debug for BackstageIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackstageIdentity::User {
                entity_ref, actor, ..
            } => f
                .debug_struct("User")
                .field("entity_ref", entity_ref)
                .field("actor", actor)
                .finish_non_exhaustive(),
            BackstageIdentity::Service { subject, .. } => f
                .debug_struct("Service")
                .field("subject", subject)
                .finish_non_exhaustive(),
        }
    }
}

/// Why a credential was refused; messages are Backstage's and never contain token material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackstageError {
    /// 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403 (access restrictions).
    #[error("{0}")]
    Forbidden(String),
}

fn unauth(m: &str) -> BackstageError {
    BackstageError::Unauthenticated(m.to_owned())
}

enum Handler {
    Static {
        digest: KeyDigest,
        subject: String,
    },
    Jwks {
        url: url::Url,
        algorithms: Vec<String>,
        issuers: Vec<String>,
        audiences: Vec<String>,
        subject_prefix: Option<String>,
    },
    Legacy {
        key: jsonwebtoken::DecodingKey,
        subject: String,
    },
}

struct Entry {
    handler: Handler,
    restrictions: Option<Vec<AccessRestriction>>,
}

/// The Backstage verifier of one broker.
pub struct BackstageVerifier {
    plugin_id: String,
    discovery: Discovery,
    /// `backstage.trustedPlugins`.
    trusted_plugins: Option<Vec<String>>,
    /// `externalAccess` (+ legacy keys), replaceable at run time ([`Self::reload_external`]).
    entries: parking_lot::RwLock<Arc<Vec<Entry>>>,
    key_sets: KeySets,
    clock: Arc<dyn Clock>,
}

impl BackstageVerifier {
    pub fn new(
        config: &BackstageConfig,
        external: &[ExternalAccessEntry],
        outbound: Arc<crate::outbound::Outbound>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        BackstageVerifier {
            plugin_id: config.plugin_id.clone(),
            discovery: Discovery::new(config),
            trusted_plugins: config.trusted_plugins.clone(),
            entries: parking_lot::RwLock::new(Arc::new(build_entries(external))),
            key_sets: KeySets::new(outbound),
            clock,
        }
    }

    /// Replaces the external-access entries (SIGHUP): static tokens rotate by listing the new
    /// token as a second entry with the same subject, reloading, and removing the old entry
    /// after the overlap (docs/operations.md "Rotation"). Returns the number of entries.
    pub fn reload_external(&self, external: &[ExternalAccessEntry]) -> usize {
        let entries = build_entries(external);
        let n = entries.len();
        *self.entries.write() = Arc::new(entries);
        n
    }

    fn entries(&self) -> Arc<Vec<Entry>> {
        self.entries.read().clone()
    }
}

fn build_entries(external: &[ExternalAccessEntry]) -> Vec<Entry> {
    {
        external
            .iter()
            .map(|e| Entry {
                handler: match &e.kind {
                    ExternalAccessKind::Static { token, subject } => Handler::Static {
                        digest: sha256(token.expose_secret().as_bytes()),
                        subject: subject.clone(),
                    },
                    ExternalAccessKind::Jwks {
                        url,
                        algorithms,
                        issuers,
                        audiences,
                        subject_prefix,
                    } => Handler::Jwks {
                        url: url.clone(),
                        algorithms: algorithms.clone(),
                        issuers: issuers.clone(),
                        audiences: audiences.clone(),
                        subject_prefix: subject_prefix.clone(),
                    },
                    ExternalAccessKind::Legacy { secret, subject } => Handler::Legacy {
                        key: jsonwebtoken::DecodingKey::from_secret(&lenient_base64url(
                            secret.expose_secret(),
                        )),
                        subject: subject.clone(),
                    },
                },
                restrictions: e.access_restrictions.clone(),
            })
            .collect()
    }
}

/// What `backstage.trustedPlugins` says of a plugin id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Named exactly: configured, so its key set is exempt from the budget for unseen URLs.
    Named,
    /// Admitted by a pattern, or no list is configured.
    Admitted,
    /// No entry admits it: refused before any fetch.
    Refused,
}

impl BackstageVerifier {
    pub fn plugin_id(&self) -> &str {
        &self.plugin_id
    }

    fn trust(&self, plugin: &str) -> Trust {
        let Some(list) = &self.trusted_plugins else {
            return Trust::Admitted;
        };
        if list.iter().any(|p| p == plugin) {
            Trust::Named
        } else if list
            .iter()
            .any(|p| crate::broker::policy::glob_match(p, plugin))
        {
            Trust::Admitted
        } else {
            Trust::Refused
        }
    }

    /// `DefaultAuthService.authenticate` with `allowLimitedAccess: false` (§5).
    pub async fn authenticate(&self, token: &str) -> Result<BackstageIdentity, BackstageError> {
        let jws = jose::parse(token);
        if let Some(j) = &jws {
            let typ = j.header_str("typ");
            if typ == Some(TYP_PLUGIN) {
                // Boxed, like the other key-fetching paths below: their futures are large and
                // would otherwise make every request's future large (issue 16).
                return Box::pin(self.plugin_token(j)).await;
            }
            let legacy_user = typ.is_none_or(|t| t != TYP_USER && t != TYP_LIMITED)
                && j.claim("aud").and_then(Value::as_str) == Some("backstage");
            if typ == Some(TYP_USER) || typ == Some(TYP_LIMITED) || legacy_user {
                let (sub, exp, limited) = Box::pin(self.user_token(j))
                    .await
                    .map_err(|_| unauth("Failed user token verification"))?;
                if limited {
                    return Err(unauth("Illegal limited user token"));
                }
                return Ok(BackstageIdentity::User {
                    entity_ref: sub,
                    actor: None,
                    expires_at: exp,
                    credential: SecretString::from(token.to_owned()),
                });
            }
        }
        self.external(token, jws.as_ref()).await
    }

    /// §3.1 steps 1–3 and 5: `(sub, exp, limited)`.
    async fn user_token(&self, j: &Jws<'_>) -> Result<(String, u64, bool), &'static str> {
        let typ = j.header_str("typ");
        let limited = typ == Some(TYP_LIMITED);
        let backstage = ["backstage".to_owned()];
        let rules = match typ {
            Some(t) if t == TYP_USER || t == TYP_LIMITED => ClaimRules {
                typ: Some(t),
                required: &["iat", "exp", "sub"],
                ..Default::default()
            },
            _ => ClaimRules {
                audience: &backstage,
                ..Default::default()
            },
        };
        let url = self
            .discovery
            .auth_jwks_url()
            .ok_or("no Backstage auth backend is configured")?;
        // The auth backend's URL comes from configuration alone.
        self.verify_with(j, &url, &rules, true).await?;
        let sub = j
            .claim("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("missing sub")?;
        let exp = j
            .claim("exp")
            .and_then(Value::as_u64)
            .ok_or("missing exp")?;
        Ok((sub.to_owned(), exp, limited))
    }

    /// §3.3 verification by the receiving plugin (the broker).
    async fn plugin_token(&self, j: &Jws<'_>) -> Result<BackstageIdentity, BackstageError> {
        // String(payload.sub): a missing sub becomes "undefined", which passes the pattern.
        let plugin = match j.claim("sub") {
            Some(Value::String(s)) => s.clone(),
            None => "undefined".to_owned(),
            Some(other) => other.to_string(),
        };
        // Everything before the fetch is decided from the unverified token alone, so the id is
        // bounded (pattern and length) and checked against trustedPlugins first.
        if !crate::config::backstage::is_plugin_id(&plugin) {
            return Err(unauth(
                "Failed plugin token verification: forbidden subject format",
            ));
        }
        let trust = self.trust(&plugin);
        if trust == Trust::Refused {
            tracing::info!(plugin = %plugin, "plugin token refused: not in backstage.trustedPlugins");
            return Err(unauth(
                "Failed plugin token verification: plugin is not trusted",
            ));
        }
        let failed = || unauth("Failed plugin token verification");
        let url = self.discovery.plugin_jwks_url(&plugin).ok_or_else(failed)?;
        let aud = [self.plugin_id.clone()];
        let rules = ClaimRules {
            typ: Some(TYP_PLUGIN),
            audience: &aud,
            required: &["iat", "exp", "sub", "aud"],
            ..Default::default()
        };
        if let Err(e) = self
            .verify_with(j, &url, &rules, trust == Trust::Named)
            .await
        {
            tracing::info!(plugin = %plugin, reason = e, "plugin token refused");
            return Err(failed());
        }
        let subject = format!("plugin:{plugin}");
        let obo = j.claim("obo");
        let truthy = match obo {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if !truthy {
            return Ok(BackstageIdentity::Service {
                subject,
                restrictions: None,
            });
        }
        let bad_obo = || unauth("Invalid user token in plugin token obo claim");
        let obo = obo.and_then(Value::as_str).ok_or_else(bad_obo)?;
        let oj = jose::parse(obo).ok_or_else(bad_obo)?;
        let otyp = oj.header_str("typ");
        let recognised = otyp == Some(TYP_USER)
            || otyp == Some(TYP_LIMITED)
            || (otyp.is_none() && oj.claim("aud").and_then(Value::as_str) == Some("backstage"));
        if !recognised {
            return Err(bad_obo());
        }
        let (sub, exp, _limited) = self
            .user_token(&oj)
            .await
            .map_err(|_| unauth("Failed user token verification"))?;
        Ok(BackstageIdentity::User {
            entity_ref: sub,
            actor: Some(subject),
            expires_at: exp,
            credential: SecretString::from(obo.to_owned()),
        })
    }

    /// The jose claim rules, then a signature by a key of the set at `url`. `configured`: the
    /// URL comes from configuration, not only from a token ([`keys`] budget exemption).
    async fn verify_with(
        &self,
        j: &Jws<'_>,
        url: &url::Url,
        rules: &ClaimRules<'_>,
        configured: bool,
    ) -> Result<(), &'static str> {
        let alg = j.alg().ok_or("unsupported alg")?;
        let alg_name = j.header_str("alg").unwrap_or("");
        let kid = j.header_str("kid");
        // The claim rules first: a token that fails them is refused whatever its signature
        // (same answer either way), so an expired or misaddressed forgery costs no fetch.
        jose::check_claims(j, self.clock.now_unix(), rules)?;
        let unavailable = |e: KeySetError| {
            // A fetch that really failed was logged (warn) where it happened; repeats served
            // from the negative cache or refused by the budget are only noted here.
            tracing::debug!(url = %url, error = %e, "Backstage key set unavailable");
            match e {
                KeySetError::NotSupported => "plugin not supported",
                KeySetError::Throttled => "too many unseen key sets",
                _ => "key set unavailable",
            }
        };
        let set = self
            .key_sets
            .get(url, configured)
            .await
            .map_err(unavailable)?;
        let keys = set
            .candidates(alg, alg_name, kid, configured)
            .await
            .map_err(unavailable)?;
        if keys.is_empty() {
            return Err("no matching key");
        }
        if !keys.iter().any(|k| j.signature_ok(&k.key, alg)) {
            return Err("signature verification failed");
        }
        Ok(())
    }

    /// §3.4: the external handlers in order; the first match wins.
    async fn external(
        &self,
        token: &str,
        jws: Option<&Jws<'_>>,
    ) -> Result<BackstageIdentity, BackstageError> {
        let digest = sha256(token.as_bytes());
        let entries = self.entries();
        for entry in entries.iter() {
            let subject = match &entry.handler {
                Handler::Static { digest: d, subject } => {
                    let eq: bool = d.ct_eq(&digest).into();
                    eq.then(|| subject.clone())
                }
                Handler::Jwks {
                    url,
                    algorithms,
                    issuers,
                    audiences,
                    subject_prefix,
                } => match jws {
                    None => None,
                    Some(j) => Box::pin(self.jwks_handler(j, url, algorithms, issuers, audiences))
                        .await
                        .map(|sub| match subject_prefix {
                            Some(p) => format!("external:{p}:{sub}"),
                            None => format!("external:{sub}"),
                        }),
                },
                Handler::Legacy { key, subject } => match jws {
                    None => None,
                    Some(j) => self.legacy_handler(j, key)?.then(|| subject.clone()),
                },
            };
            let Some(subject) = subject else { continue };
            if let Some(r) = &entry.restrictions
                && !r.iter().any(|x| x.plugin == self.plugin_id)
            {
                let plugins: Vec<String> = r.iter().map(|x| format!("'{}'", x.plugin)).collect();
                return Err(BackstageError::Forbidden(format!(
                    "This token's access is restricted to plugin(s) {}",
                    plugins.join(", ")
                )));
            }
            return Ok(BackstageIdentity::Service {
                subject,
                restrictions: entry.restrictions.clone(),
            });
        }
        Err(unauth("Illegal token"))
    }

    /// jwks.ts: every error is swallowed (`None` = next handler).
    async fn jwks_handler(
        &self,
        j: &Jws<'_>,
        url: &url::Url,
        algorithms: &[String],
        issuers: &[String],
        audiences: &[String],
    ) -> Option<String> {
        let alg_name = j.header_str("alg")?;
        if !algorithms.is_empty() && !algorithms.iter().any(|a| a == alg_name) {
            return None;
        }
        let rules = ClaimRules {
            audience: audiences,
            issuer: issuers,
            ..Default::default()
        };
        // A configured handler URL.
        self.verify_with(j, url, &rules, true).await.ok()?;
        j.claim("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// legacy.ts: pre-filter, HS256 signature (mismatch = next handler), then the claim rules
    /// (failures are errors: Backstage's 500, the broker's 401).
    fn legacy_handler(
        &self,
        j: &Jws<'_>,
        key: &jsonwebtoken::DecodingKey,
    ) -> Result<bool, BackstageError> {
        let aud_truthy = match j.claim("aud") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(_) => true,
        };
        if j.header_str("alg") != Some("HS256")
            || j.claim("sub").and_then(Value::as_str) != Some("backstage-server")
            || aud_truthy
        {
            return Ok(false);
        }
        if !j.signature_ok(key, jsonwebtoken::Algorithm::HS256) {
            return Ok(false);
        }
        jose::check_claims(j, self.clock.now_unix(), &ClaimRules::default()).map_err(|e| {
            BackstageError::Unauthenticated(format!("Legacy token verification failed: {e}"))
        })?;
        Ok(true)
    }
}
