//! Carrying a trace across the queue.
//!
//! A producer's request and the work on each of its items happen in different processes,
//! minutes or days apart. At enqueue, [`current_traceparent`] captures the enqueueing span as a
//! W3C `traceparent` (`00-{trace id}-{span id}-{flags}`), stored with the batch in Postgres.
//! When a worker starts an item it continues that trace: [`continue_trace`] makes the item's
//! span a child of the enqueue span, and [`record_span`] adds the spans that happened before
//! the worker had a span of its own (the wait in the queue, the claim), with their real start
//! and end times. Everything the processor does inside the item span (the transcript fetch,
//! each LLM call) and the outcome write then land in the same trace.
//!
//! All of this is free when trace export is off: no context is captured, nothing is stored,
//! and the spans go to a no-op tracer.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
pub use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::otel::INSTRUMENTATION_SCOPE;

/// The current `tracing` span's OpenTelemetry context as a W3C `traceparent`, or `None` when
/// no trace is being recorded.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current().context())
}

/// `cx` as a W3C `traceparent`, if it holds a valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The context a stored `traceparent` describes (empty if it is malformed).
pub fn context_from(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of the span a stored `traceparent` names. Call it right after
/// creating `span`, before anything is logged in it. Does nothing without a `traceparent` or
/// with trace export off.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        let cx = context_from(tp);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// Records a finished span that started before anyone could open it (the wait in the queue
/// began when the producer enqueued the item), as a child of `parent`.
pub fn record_span(
    name: &'static str,
    parent: &Context,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) {
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(INSTRUMENTATION_SCOPE);
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(end.max(start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_the_round_trip() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = context_from(tp);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(tp));
    }

    #[test]
    fn no_trace_means_nothing_to_store() {
        assert_eq!(current_traceparent(), None);
        assert!(!context_from("garbage").span().span_context().is_valid());
    }
}
