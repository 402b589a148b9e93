//! `logging`: log format and the tracing filter directive; `telemetry`: trace export.

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::{LogFormat, LoggingConfig, TelemetryConfig};
use crate::config::walk::Field;

pub(super) fn logging(field: &Field<'_>, issues: &mut Issues) -> Option<LoggingConfig> {
    let obj = section(field, &["format", "level"], issues)?;
    let format = obj.field("format").enum_or(
        LogFormat::Plain,
        &[("plain", LogFormat::Plain), ("json", LogFormat::Json)],
        issues,
    );
    let level_field = obj.field("level");
    let level = level_field.opt_str(issues).and_then(|l| match l {
        None => Some("info".to_owned()),
        Some(l) if !l.trim().is_empty() && !l.chars().any(char::is_control) => Some(l.to_owned()),
        Some(_) => {
            issues.push(
                &level_field.path,
                "must be a tracing filter directive, e.g. info or token_broker=debug,info",
            );
            None
        }
    });
    Some(LoggingConfig {
        format: format?,
        level: level?,
    })
}

/// `telemetry`: both keys optional; an endpoint must be an absolute `http(s)` URL (it is
/// where the broker sends spans, so a typo should stop the start, not lose every trace).
pub(super) fn telemetry(field: &Field<'_>, issues: &mut Issues) -> Option<TelemetryConfig> {
    let obj = section(field, &["otlpEndpoint", "serviceName"], issues)?;
    let endpoint_field = obj.field("otlpEndpoint");
    let otlp_endpoint = endpoint_field.opt_str(issues).and_then(|e| match e {
        None => Some(None),
        Some(e) if url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {
            Some(Some(e.trim_end_matches('/').to_owned()))
        }
        Some(_) => {
            issues.push(
                &endpoint_field.path,
                "must be an http(s) URL, e.g. http://otel-collector:4318",
            );
            None
        }
    });
    let name_field = obj.field("serviceName");
    let service_name = name_field.opt_str(issues).and_then(|n| match n {
        None => Some(None),
        Some(n) if !n.trim().is_empty() && !n.chars().any(char::is_control) => {
            Some(Some(n.to_owned()))
        }
        Some(_) => {
            issues.push(&name_field.path, "must be a non-empty name");
            None
        }
    });
    Some(TelemetryConfig {
        otlp_endpoint: otlp_endpoint?,
        service_name: service_name?,
    })
}
