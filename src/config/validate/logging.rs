//! `logging`: log format and the tracing filter directive.

use super::rules::section;
use crate::config::error::Issues;
use crate::config::model::{LogFormat, LoggingConfig};
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
