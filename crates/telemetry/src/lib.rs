//! Logging and tracing for every service.
//!
//! Logs are flat JSON lines ([`json::JsonLines`]): timestamp, level,
//! service, trace and span ids, message, and the fields of the event and
//! of the spans it happened in (request id, booking, event). Spans always go through the OpenTelemetry layer so
//! that trace ids exist and propagate over HTTP and inside message envelopes
//! even when nothing exports them; OTLP export switches on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::collections::HashMap;

pub mod json;

use opentelemetry::{
    global,
    trace::{TraceContextExt, TracerProvider as _},
    Context,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider alive; flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber. `service_name` becomes the OTLP resource name.
pub fn init(service_name: &str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.to_string())
            .build(),
    );
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        use opentelemetry_otlp::WithExportConfig;
        let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("ticketer"));

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,hyper=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(json::JsonLines {
                        service: service_name
                            .strip_prefix("ticketer-")
                            .unwrap_or(service_name)
                            .to_string(),
                    }),
            )
            .try_init()?,
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// Installs only the propagator: enough for tests that check trace ids travel.
pub fn init_propagation() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Makes `span` a child of the remote context in `traceparent`, if valid.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = HashMap::from([(TRACEPARENT.to_string(), tp.to_string())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    if cx.span().span_context().is_valid() {
        span.set_parent(cx);
    }
}

/// The W3C traceparent of `span`, when tracing is active.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    traceparent_of_context(&cx)
}

/// The W3C traceparent of the current span, when tracing is active.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

fn traceparent_of_context(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The trace id (32 hex digits) of `span`, or of `fallback_traceparent` when
/// tracing is not active, for log correlation.
pub fn trace_id_of(span: &tracing::Span, fallback_traceparent: Option<&str>) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return Some(sc.trace_id().to_string());
    }
    fallback_traceparent.and_then(parse_trace_id)
}

/// The trace id field of a `00-<trace>-<span>-<flags>` header.
pub fn parse_trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trace_ids() {
        assert_eq!(
            parse_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(parse_trace_id("garbage"), None);
        assert_eq!(parse_trace_id("00-xyz-00f067aa0ba902b7-01"), None);
    }
}
