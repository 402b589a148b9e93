//! Backstage-style static external-access tokens (`backend.auth.externalAccess`, `type: static`).
//!
//! Backstage compares with `===`; the broker compares SHA-256 digests in constant time
//! (`subtle`), which gives the same results without leaking, through timing, how much of a
//! guess was right or how long the real token is. Every entry is compared on every call, so
//! the position of the matching entry is not observable either. Like Backstage, entries are
//! tried in configuration order and the first match wins (backstage-tokens.md §3.4).

use subtle::ConstantTimeEq;

use crate::config::{AccessRestriction, ExternalAccessEntry, ExternalAccessKind};
use crate::digest::{KeyDigest, sha256};
use secrecy::ExposeSecret;

struct Entry {
    digest: KeyDigest,
    subject: String,
    restrictions: Option<Vec<AccessRestriction>>,
}

/// A matched static caller.
#[derive(Debug, Clone)]
pub struct StaticCaller {
    pub subject: String,
    pub restrictions: Option<Vec<AccessRestriction>>,
}

#[derive(Default)]
pub struct StaticTokens {
    entries: Vec<Entry>,
}

impl StaticTokens {
    pub fn new(config: &[ExternalAccessEntry]) -> Self {
        let entries = config
            .iter()
            .filter_map(|e| match &e.kind {
                ExternalAccessKind::Static { token, subject } => Some(Entry {
                    digest: sha256(token.expose_secret().as_bytes()),
                    subject: subject.clone(),
                    restrictions: e.access_restrictions.clone(),
                }),
                _ => None,
            })
            .collect();
        StaticTokens { entries }
    }

    pub fn authenticate(&self, presented: &str) -> Option<StaticCaller> {
        let d = sha256(presented.as_bytes());
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            let eq: bool = e.digest.ct_eq(&d).into();
            if eq && found.is_none() {
                found = Some(e);
            }
        }
        found.map(|e| StaticCaller {
            subject: e.subject.clone(),
            restrictions: e.restrictions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn entry(token: &str, subject: &str) -> ExternalAccessEntry {
        ExternalAccessEntry {
            kind: ExternalAccessKind::Static {
                token: SecretString::from(token.to_owned()),
                subject: subject.into(),
            },
            access_restrictions: None,
        }
    }

    #[test]
    fn exact_match_only_first_wins() {
        let t = StaticTokens::new(&[
            entry("token-one-12345", "one"),
            entry("token-two-12345", "two"),
            entry("token-one-12345", "shadowed"),
        ]);
        assert_eq!(t.authenticate("token-one-12345").unwrap().subject, "one");
        assert_eq!(t.authenticate("token-two-12345").unwrap().subject, "two");
        assert!(t.authenticate("token-one-1234").is_none());
        assert!(t.authenticate("token-one-123456").is_none());
        assert!(t.authenticate("Token-one-12345").is_none());
        assert!(t.authenticate("").is_none());
    }
}
