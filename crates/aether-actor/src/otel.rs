//! OpenTelemetry (feature `opentelemetry`, off by default): the trace context of the current
//! `tracing` span, as the `tracing-opentelemetry` layer the application installed sees it, and
//! the other way round. With it, a command sent without a trace context takes the current
//! span's, and the owning node's span continues the caller's trace in the exported traces.

use aether_core::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of the current span (`None` when no OpenTelemetry layer is installed or
/// the span is not part of a valid trace).
///
/// ```
/// use aether_actor::otel;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer());
/// tracing::subscriber::with_default(subscriber, || {
///     let remote = aether_core::TraceContext::parse(
///         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     )
///     .unwrap();
///     let span = tracing::info_span!("handling");
///     otel::set_parent(&span, &remote);
///     let _in = span.enter();
///     let here = otel::current().expect("a trace");
///     assert_eq!(here.trace_id(), remote.trace_id());
/// });
/// ```
pub fn current() -> Option<TraceContext> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    TraceContext::new(
        &sc.trace_id().to_string(),
        &sc.span_id().to_string(),
        sc.is_sampled(),
    )
}

/// Makes `span` continue the trace `trace` came from (a remote parent).
pub fn set_parent(span: &tracing::Span, trace: &TraceContext) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(trace.trace_id()),
        SpanId::from_hex(trace.span_id()),
    ) else {
        return;
    };
    let flags = if trace.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    let context = opentelemetry::Context::new().with_remote_span_context(remote);
    // Refused only when no OpenTelemetry layer is installed: nothing to continue then.
    let _ = span.set_parent(context);
}
