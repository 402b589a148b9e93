//! Traces: OpenTelemetry spans through `tracing`, exported over OTLP/HTTP with the JSON
//! encoding, and W3C Trace Context (`traceparent`, `tracestate`) read from callers and written
//! on the broker's own outbound calls.
//!
//! What lives here: the decision whether traces are on ([`settings`]), the exporter and the
//! `tracing` layer that feeds it ([`layer`]), the guard whose shutdown flushes what is queued
//! ([`TraceGuard`]), and the two halves of propagation ([`continue_trace`], [`inject`]).
//! Where the spans are opened (the request, caller verification, the token lookup, the IdP call,
//! the proxy's upstream call) is the business of the modules that do the work; they all use
//! [`SPAN_TARGET`] so that only the trace layer sees these spans (the log lines keep their
//! format) and, with traces off, no layer is interested in them: the span macros then return
//! disabled spans, nothing is recorded and no header is read or written.
//!
//! Export is off the request path: the SDK's batch processor queues ended spans and a thread of
//! its own sends them in batches (`OTEL_BSP_*` variables tune it); a full queue drops spans
//! rather than slowing requests. Shutdown flushes the queue.
//!
//! Attributes never carry a token, a secret or a full subject: subjects appear as fingerprints
//! (`digest::fingerprint`), as in the audit log, and URLs only as configured bases or route
//! templates (a caller's path or query could hold anything).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// The `tracing` target of every span meant for export (and only those).
pub const SPAN_TARGET: &str = "token_broker::trace";

/// The service name when neither `telemetry.serviceName` nor `OTEL_SERVICE_NAME` is set.
pub const DEFAULT_SERVICE_NAME: &str = "token-broker";

/// Where spans go and under which name, once traces are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The OTLP/HTTP traces URL from the configuration; `None` = the SDK reads the standard
    /// variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, `OTEL_EXPORTER_OTLP_ENDPOINT` +
    /// `/v1/traces`).
    pub traces_url: Option<String>,
    pub service_name: String,
}

/// Whether traces are on, from the configuration and then the environment (`env` looks a
/// variable up): on when `telemetry.otlpEndpoint` or one of the OTLP endpoint variables is set,
/// unless `OTEL_SDK_DISABLED=true` (the OpenTelemetry switch for turning the SDK off).
pub fn settings(cfg: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Option<Settings> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    let traces_url = cfg
        .otlp_endpoint
        .as_ref()
        .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')));
    if traces_url.is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return None;
    }
    let service_name = cfg
        .service_name
        .clone()
        .or_else(|| set("OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Some(Settings {
        traces_url,
        service_name,
    })
}

/// Keeps the tracer provider; [`TraceGuard::shutdown`] (or dropping it) flushes the queued
/// spans and stops the export thread. Empty when traces are off.
#[derive(Default)]
pub struct TraceGuard(Option<SdkTracerProvider>);

impl TraceGuard {
    /// Flushes and stops export; a second call does nothing.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            // Not through `tracing`: the subscriber may be the thing being torn down.
            eprintln!("token-broker: flushing traces failed: {e}");
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The exporter, the provider and a `tracing` layer feeding it.
pub fn layer<S>(
    settings: &Settings,
) -> Result<
    (
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        TraceGuard,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson);
    if let Some(url) = &settings.traces_url {
        builder = builder.with_endpoint(url.clone());
    }
    let exporter = builder.build().map_err(|e| format!("OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("token-broker");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        TraceGuard(Some(provider)),
    ))
}

/// The caller's Trace Context fields, for the propagator.
struct Fields<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` a child of the caller's span when the request carries a valid `traceparent`
/// (W3C Trace Context §3.2; an invalid one is ignored and the span starts a new trace, §4.3).
/// `header` returns a request header's value by lower-case name. No-op with traces off.
pub fn continue_trace<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) {
    if span.is_disabled() {
        return;
    }
    let fields = Fields {
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    let cx = TraceContextPropagator::new().extract(&fields);
    // A parent can only be set before the span starts; here it has not been entered yet.
    let _ = span.set_parent(cx);
}

struct Collect(Vec<(&'static str, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes exactly these two fields (W3C Trace Context §3).
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((name, value));
    }
}

/// The `traceparent` (and `tracestate`) naming `span` as the parent, for an outbound call made
/// inside it: the next hop continues the broker's span, not the caller's. Empty with traces
/// off (the caller's headers, where forwarded, then pass unchanged).
pub fn inject(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let mut out = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let none = TelemetryConfig::default();
        assert_eq!(settings(&none, env(&[])), None);
        assert_eq!(settings(&none, env(&[("OTEL_SERVICE_NAME", "x")])), None);
        assert_eq!(
            settings(
                &none,
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])
            ),
            Some(Settings {
                traces_url: None,
                service_name: DEFAULT_SERVICE_NAME.into()
            })
        );
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://c:4318/".into()),
            service_name: None,
        };
        let s = settings(&cfg, env(&[("OTEL_SERVICE_NAME", "broker-eu")]));
        assert_eq!(
            s,
            Some(Settings {
                traces_url: Some("http://c:4318/v1/traces".into()),
                service_name: "broker-eu".into()
            })
        );
        assert_eq!(settings(&cfg, env(&[("OTEL_SDK_DISABLED", "true")])), None);
    }

    #[test]
    fn disabled_spans_neither_read_nor_write_headers() {
        let span = tracing::Span::none();
        continue_trace(&span, |_| {
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        });
        assert!(inject(&span).is_empty());
    }
}
