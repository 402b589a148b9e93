//! Logging set-up: `tracing` to stderr, plain or JSON, filter from `RUST_LOG` or the config;
//! and the start of the audit log's writer (`audit_writer.rs`; the audit log is not a
//! `tracing` output: `audit.rs` writes its JSON lines to stdout itself, independent of
//! `RUST_LOG` and `logging.format`, ordered, never dropped, flushed when the returned guard is
//! dropped).
//!
//! With traces on (`traces.rs`), a second layer exports the spans of target
//! [`crate::traces::SPAN_TARGET`] over OTLP; the log layer never sees those spans. With traces
//! off no layer is interested in those spans, so none is built.
//!
//! Nothing in the broker logs a token or secret: spans and events carry fingerprints
//! (`digest::fingerprint`) and claims such as `sub`, never credentials.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::audit_writer::{self, FlushGuard};
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
    // The trace spans (`traces.rs`) never reach the diagnostic log. A directive of the filter
    // rather than a filter function: directives decide once per callsite, so a disabled event
    // or span (actix-web's per-request `trace!` events, the trace spans with traces off) costs
    // a level comparison, not a dynamic check per use (issue 16).
    let spans_off = format!("{SPAN_TARGET}=off").parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = match spans_off {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let diagnostic = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let diagnostic = match format {
        LogFormat::Json => diagnostic
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Plain => diagnostic.with_filter(filter).boxed(),
    };
    let audit_guard = audit_writer::start();
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![diagnostic];
    // Only a configured trace layer joins: an absent layer (`Option::None`) would answer
    // "always interested" for every callsite, so with traces off every span would still be
    // built in the registry on every request (issue 16: a tenth of a cache hit's cost).
    let guard = match traces::settings(telemetry, |k| std::env::var(k).ok()) {
        None => TraceGuard::default(),
        Some(settings) => match traces::layer(&settings) {
            Ok((layer, guard)) => {
                layers.push(
                    layer
                        .with_filter(Targets::new().with_target(SPAN_TARGET, Level::INFO))
                        .boxed(),
                );
                guard
            }
            Err(e) => {
                // Traces are diagnostics: the broker serves without them, and says so.
                eprintln!("token-broker: traces are off: {e}");
                TraceGuard::default()
            }
        },
    };
    let _ = tracing_subscriber::registry().with(layers).try_init();
    TelemetryGuard {
        traces: guard,
        _audit: audit_guard,
    }
}
