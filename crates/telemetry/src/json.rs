//! One JSON object per log line, flat, with what an on-call engineer
//! searches by: `timestamp`, `level`, `service`, `trace_id`, `span_id`,
//! `message`, then the event's own fields and those of the spans it
//! happened in (the request id, the booking or event it concerns), the
//! innermost span winning a name they share.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::{field::Field, Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields, FormattedFields},
    registry::LookupSpan,
};

/// The event formatter; `service` names lines logged outside any service's
/// span (start-up, the command line tools).
pub struct JsonLines {
    pub service: String,
}

/// Collects an event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut context = Map::new();
        let (mut trace_id, mut span_id) = (None, None);
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                // Spans' fields are kept as the JSON object JsonFields wrote.
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                        context.extend(map);
                    }
                }
                if let Some(otel) = ext.get::<OtelData>() {
                    let parent = otel.parent_cx.span();
                    let trace = if otel.parent_cx.has_active_span() {
                        Some(parent.span_context().trace_id())
                    } else {
                        otel.builder.trace_id
                    };
                    trace_id = trace.map(|t| t.to_string()).or(trace_id);
                    span_id = otel.builder.span_id.map(|s| s.to_string()).or(span_id);
                }
            }
        }
        let mut own = Map::new();
        event.record(&mut Fields(&mut own));

        let meta = event.metadata();
        let service = own
            .remove("service")
            .or_else(|| context.remove("service"))
            .unwrap_or_else(|| Value::from(self.service.clone()));
        // A request's span records the trace id it joined; the OTel data
        // is the same id, so one `trace_id` is written.
        context.remove("trace_id");
        let mut line: Vec<(String, Value)> = vec![
            (
                "timestamp".into(),
                Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            ),
            ("level".into(), Value::from(meta.level().as_str())),
            ("service".into(), service),
        ];
        line.extend(trace_id.map(|t| ("trace_id".to_string(), Value::from(t))));
        line.extend(span_id.map(|s| ("span_id".to_string(), Value::from(s))));
        line.push(("message".into(), own.remove("message").unwrap_or_default()));
        line.push(("target".into(), Value::from(meta.target())));
        // The event's own fields win over its spans'.
        context.extend(own);
        line.extend(context);
        // Written by hand so that the fixed keys come first, in this order.
        let mut out = String::from("{");
        for (i, (k, v)) in line.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        writeln!(writer, "{out}")
    }
}
