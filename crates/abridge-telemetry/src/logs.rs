//! The process's `tracing` subscriber: log lines on standard error, and spans to OpenTelemetry
//! when OTLP export is configured.
//!
//! Log lines are human-readable by default and JSON objects with `ABRIDGE_LOG_FORMAT=json`;
//! `RUST_LOG` sets the level (default `info`). A JSON line carries the fields of every span it
//! was logged in, flattened into the line: a line logged while an item is worked on has
//! `batch`, `item`, `video` and `attempt` at the top level, so a log search for `item=42`
//! finds every line about item 42 whatever nested span it came from. With traces on, lines
//! also carry `trace_id` and `span_id`, to jump from a log line to its trace.

use std::fmt;
use std::io::IsTerminal as _;
use std::sync::{Arc, OnceLock};

use abridge_core::settings::LogFormat;
use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::otel;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("configure OpenTelemetry trace export: {0}")]
    Otel(String),
}

/// What [`init`] set up. Keep it alive for the life of the process: dropping it exports the
/// spans still buffered and shuts the exporter down.
#[must_use = "dropping Telemetry flushes and stops trace export"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn traces_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The exporter's blocking HTTP client must not be shut down on an async runtime's
            // thread, and Drop may run on one: do it on a thread of its own.
            let _ = std::thread::spawn(move || {
                let _ = provider.force_flush();
                let _ = provider.shutdown();
            })
            .join();
        }
    }
}

/// Installs the global subscriber: log lines in `format` on standard error, and OpenTelemetry
/// spans exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. `service` is the default `service.name`
/// (`OTEL_SERVICE_NAME` overrides it). A second call in the same process changes nothing.
pub fn init(format: LogFormat, service: &str) -> Result<Telemetry, TelemetryError> {
    let provider = otel::provider_from_env(service)?;
    let dispatch_cell = Arc::new(OnceLock::new());
    // Each layer has its own filter: `RUST_LOG=warn` quiets the logs without losing traces.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![
        fmt_layer(
            format,
            std::io::stderr,
            provider.as_ref().map(|_| dispatch_cell.clone()),
        )
        .with_filter(default_filter())
        .boxed(),
    ];
    if let Some(provider) = &provider {
        layers.push(
            otel::layer(provider)
                .with_filter(otel::span_filter())
                .boxed(),
        );
    }
    let installed = tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok();
    if !installed {
        // Someone else (a test harness) installed a subscriber first: keep theirs.
        if let Some(p) = provider {
            let _ = std::thread::spawn(move || p.shutdown()).join();
        }
        return Ok(Telemetry::default());
    }
    if provider.is_some() {
        let _ = dispatch_cell.set(tracing::dispatcher::get_default(|d| d.downgrade()));
    }
    Ok(Telemetry { provider })
}

/// `RUST_LOG`, else `info` with sqlx's per-statement lines off.
pub fn default_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The log-line layer for `format`, writing to `writer`. `trace_ids`, once filled with the
/// subscriber's dispatcher, adds `trace_id`/`span_id` to JSON lines.
pub fn fmt_layer<S, W>(
    format: LogFormat,
    writer: W,
    trace_ids: Option<Arc<OnceLock<WeakDispatch>>>,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { trace_ids })
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer)
            .boxed(),
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `span` (the innermost span's
/// name), the fields of every enclosing span (outermost first, so inner ones win), the event's
/// own fields (`message` included, winning over span fields), and `trace_id`/`span_id` when
/// traces are exported.
struct JsonLines {
    trace_ids: Option<Arc<OnceLock<WeakDispatch>>>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // The fields were recorded by `JsonFields`: a JSON object, or empty.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(fields);
                }
                innermost = Some((span.id(), span.name()));
            }
        }
        if let Some((_, name)) = &innermost {
            line.insert("span".into(), (*name).into());
        }
        event.record(&mut JsonVisitor(&mut line));
        if let (Some(cell), Some((id, _))) = (&self.trace_ids, &innermost)
            && let Some(dispatch) = cell.get().and_then(WeakDispatch::upgrade)
            && let Some(cx) = tracing_opentelemetry::get_otel_context(id, &dispatch)
        {
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                line.insert("trace_id".into(), sc.trace_id().to_string().into());
                line.insert("span_id".into(), sc.span_id().to_string().into());
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Records an event's fields into a JSON object, keeping numbers and booleans typed.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing::{info, info_span};

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(buf: &Buffer) -> Vec<Map<String, Value>> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(
                |l| match serde_json::from_str(l).expect("each line is JSON") {
                    Value::Object(m) => m,
                    other => panic!("not an object: {other}"),
                },
            )
            .collect()
    }

    #[test]
    fn json_lines_flatten_the_fields_of_every_enclosing_span() {
        let buf = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(fmt_layer(LogFormat::Json, buf.clone(), None));
        tracing::subscriber::with_default(subscriber, || {
            let session = info_span!("session", worker = "w-1");
            let _s = session.enter();
            let item = info_span!(
                "item",
                batch = "b-1",
                item = 42,
                video = "dQw4w9WgXcQ",
                attempt = 2
            );
            let _i = item.enter();
            let inner = info_span!("transcript", source = "captions");
            let _t = inner.enter();
            info!(error = "timeout", "attempt failed; will retry");
        });
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["message"], "attempt failed; will retry");
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["span"], "transcript");
        assert_eq!(l["worker"], "w-1");
        assert_eq!(l["batch"], "b-1");
        assert_eq!(l["item"], 42);
        assert_eq!(l["video"], "dQw4w9WgXcQ");
        assert_eq!(l["attempt"], 2);
        assert_eq!(l["source"], "captions");
        assert_eq!(l["error"], "timeout");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn event_fields_win_over_span_fields_and_lines_outside_spans_have_none() {
        let buf = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(fmt_layer(LogFormat::Json, buf.clone(), None));
        tracing::subscriber::with_default(subscriber, || {
            info!(ready = true, "outside");
            let item = info_span!("item", item = 1);
            let _i = item.enter();
            info!(item = 2, "inside");
        });
        let lines = lines(&buf);
        assert_eq!(lines[0]["ready"], true);
        assert!(!lines[0].contains_key("span"));
        assert!(!lines[0].contains_key("item"));
        assert_eq!(lines[1]["item"], 2);
    }
}
