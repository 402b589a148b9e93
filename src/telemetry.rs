//! Logging set-up: `tracing` to stderr, plain or JSON, filter from `RUST_LOG` or the config;
//! and the audit log (`audit.rs`): events of target `token_broker::audit`, always as one JSON
//! object per line on stdout, at `info`, independent of `RUST_LOG` and `logging.format`,
//! written off the request's thread by `audit_writer` (ordered, never dropped, flushed when the
//! returned guard is dropped).
//!
//! With traces on (`traces.rs`), a third layer exports the spans of target
//! [`crate::traces::SPAN_TARGET`] over OTLP; the log layers never see those spans.
//!
//! Nothing in the broker logs a token or secret: spans and events carry fingerprints
//! (`digest::fingerprint`) and claims such as `sub`, never credentials.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::audit::AUDIT_TARGET;
use crate::audit_writer::{AuditWriter, FlushGuard};
use crate::config::{LogFormat, TelemetryConfig};
use crate::traces::{self, SPAN_TARGET, TraceGuard};

/// What [`init`] returns: keep it for the life of the process. [`TelemetryGuard::shutdown`]
/// sends the queued spans; dropping it also flushes the audit log.
pub struct TelemetryGuard {
    traces: TraceGuard,
    _audit: FlushGuard,
}

impl TelemetryGuard {
    /// Flushes and stops span export (the audit log is flushed when the guard is dropped).
    pub fn shutdown(&mut self) {
        self.traces.shutdown();
    }
}

/// Installs the global subscriber once; later calls are no-ops. Keep the returned guard for
/// the life of the process: dropping it flushes the audit log and the queued spans.
pub fn init(format: LogFormat, level: &str, telemetry: &TelemetryConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|m| m.target() != AUDIT_TARGET && m.target() != SPAN_TARGET);
    let diagnostic = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let diagnostic = match format {
        LogFormat::Json => diagnostic
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .with_filter(not_audit)
            .boxed(),
        LogFormat::Plain => diagnostic
            .with_filter(filter)
            .with_filter(not_audit)
            .boxed(),
    };
    let (writer, audit_guard) = AuditWriter::start();
    let audit = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_filter(filter_fn(|m| {
            m.target() == AUDIT_TARGET && *m.level() <= tracing::Level::INFO
        }));
    let (spans, guard) = match traces::settings(telemetry, |k| std::env::var(k).ok()) {
        None => (None, TraceGuard::default()),
        Some(settings) => match traces::layer(&settings) {
            Ok((layer, guard)) => (
                Some(layer.with_filter(filter_fn(|m| m.target() == SPAN_TARGET))),
                guard,
            ),
            Err(e) => {
                // Traces are diagnostics: the broker serves without them, and says so.
                eprintln!("token-broker: traces are off: {e}");
                (None, TraceGuard::default())
            }
        },
    };
    let _ = tracing_subscriber::registry()
        .with(diagnostic)
        .with(audit)
        .with(spans)
        .try_init();
    TelemetryGuard {
        traces: guard,
        _audit: audit_guard,
    }
}
