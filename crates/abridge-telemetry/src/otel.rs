//! OpenTelemetry trace export over OTLP, configured by the standard `OTEL_*` variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set (and `OTEL_SDK_DISABLED` is not `true`, and `OTEL_TRACES_EXPORTER` is not `none`); off
//! otherwise, at no cost. The exporter speaks OTLP over HTTP: `http/protobuf` (the default) or
//! `http/json` (`OTEL_EXPORTER_OTLP_PROTOCOL`), to the collector's HTTP port (4318); the
//! tests cover plain `http://` endpoints. The exporter itself reads `OTEL_EXPORTER_OTLP_{,TRACES_}{ENDPOINT,HEADERS,TIMEOUT,
//! PROTOCOL}`; the SDK reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_BSP_*`. The sampler defaults to parent-based
//! always-on, so a worker follows the sampling decision of the request that enqueued the item.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// The name spans and metrics of abridge are recorded under.
pub const INSTRUMENTATION_SCOPE: &str = "abridge";

/// True when the `OTEL_*` environment asks for trace export.
pub fn export_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// A tracer provider exporting over OTLP/HTTP, installed as the global provider (with the W3C
/// trace-context propagator), or `None` when export is not requested.
pub fn provider_from_env(service: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if !export_requested() {
        return Ok(None);
    }
    let mut protocol_set = false;
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        let Ok(p) = std::env::var(var) else { continue };
        protocol_set |= !p.trim().is_empty();
        if p.trim().eq_ignore_ascii_case("grpc") {
            return Err(TelemetryError::Otel(format!(
                "{var}=grpc is not supported: abridge exports OTLP over HTTP; use http/protobuf \
                 or http/json and the collector's HTTP port (usually 4318)"
            )));
        }
    }
    // The workspace builds reqwest with rustls but no default crypto provider (ring is
    // installed by whoever builds a client first); the exporter's client needs one too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if !protocol_set {
        // The specification's default; the crate would pick JSON, since both are built in.
        builder = builder.with_protocol(Protocol::HttpBinary);
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Otel(format!("build the OTLP span exporter: {e}")))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        // The environment detector has already read it.
    } else {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(provider))
}

/// Which spans become OpenTelemetry spans: abridge's own at `info` and above (the enqueue,
/// each item, its stages and writes), whatever `RUST_LOG` says about log lines; libraries'
/// spans (HTTP clients, the database driver) at `warn` and above, so practically none.
pub fn span_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target("abridge", tracing::Level::INFO)
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(INSTRUMENTATION_SCOPE))
        .with_location(false)
        .boxed()
}
