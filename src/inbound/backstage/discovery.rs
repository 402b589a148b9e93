//! Plugin id → base URL, mirroring Backstage's `HostDiscovery` (docs/reference/backstage-tokens.md
//! §2.2):
//! the first `discovery.endpoints` entry listing the plugin (or `*`) gives the internal
//! target with `{{pluginId}}` substituted; otherwise `{backend.baseUrl}/api/{pluginId}`.
//! Without either, no Backstage is trusted. JWKS URLs come only from here (§9 item 8).

use crate::config::BackstageConfig;
use crate::config::backstage::substitute;

pub struct Discovery {
    base_url: Option<String>,
    endpoints: Vec<crate::config::DiscoveryEndpoint>,
}

impl Discovery {
    pub fn new(config: &BackstageConfig) -> Self {
        Discovery {
            base_url: config
                .base_url
                .as_ref()
                .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            endpoints: config.endpoints.clone(),
        }
    }

    /// `base(plugin_id)`; the id must already have passed the plugin id pattern check.
    pub fn base_url(&self, plugin_id: &str) -> Option<String> {
        for e in &self.endpoints {
            if e.plugins.iter().any(|p| p == plugin_id || p == "*") {
                return Some(substitute(&e.target, plugin_id));
            }
        }
        self.base_url
            .as_ref()
            .map(|b| format!("{b}/api/{plugin_id}"))
    }

    /// `{base(sub)}/.backstage/auth/v1/jwks.json`.
    pub fn plugin_jwks_url(&self, plugin_id: &str) -> Option<url::Url> {
        url::Url::parse(&format!(
            "{}/.backstage/auth/v1/jwks.json",
            self.base_url(plugin_id)?
        ))
        .ok()
    }

    /// `{base(auth)}/.well-known/jwks.json`.
    pub fn auth_jwks_url(&self) -> Option<url::Url> {
        url::Url::parse(&format!("{}/.well-known/jwks.json", self.base_url("auth")?)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiscoveryEndpoint;

    #[test]
    fn endpoints_then_default() {
        let d = Discovery::new(&BackstageConfig {
            plugin_id: "token-broker".into(),
            base_url: Some(url::Url::parse("http://bs:7007").unwrap()),
            endpoints: vec![DiscoveryEndpoint {
                target: "http://catalog.svc/{{ pluginId }}".into(),
                plugins: vec!["catalog".into()],
            }],
            trusted_plugins: None,
        });
        assert_eq!(d.base_url("catalog").unwrap(), "http://catalog.svc/catalog");
        assert_eq!(d.base_url("auth").unwrap(), "http://bs:7007/api/auth");
        assert_eq!(
            d.auth_jwks_url().unwrap().as_str(),
            "http://bs:7007/api/auth/.well-known/jwks.json"
        );
        let none = Discovery::new(&BackstageConfig {
            plugin_id: "token-broker".into(),
            base_url: None,
            endpoints: vec![],
            trusted_plugins: None,
        });
        assert!(none.plugin_jwks_url("catalog").is_none());
    }
}
