//! Operating abridge: what a process tells the people running it.
//!
//! - [`init`]: the process's `tracing` subscriber: human-readable or JSON log lines on standard
//!   error ([`logs`]), plus OpenTelemetry traces exported over OTLP when the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`otel`]). Keep the returned [`Telemetry`] alive: dropping
//!   it flushes the spans not yet exported.
//! - [`trace`]: carrying a trace across the queue: the W3C `traceparent` an enqueue stores, and
//!   the spans a worker continues it with.
//! - [`metrics`]: the Prometheus recorder behind the `metrics` facade, the catalogue of every
//!   `abridge_*` metric (names, types, help, known labels), and helpers for processors.
//! - [`exposition`]: writing Prometheus text for values computed at scrape time (the fleet
//!   gauges, which must come from one place rather than from every worker).
//! - [`http`]: the `/metrics` and `/healthz` endpoints as an axum `Router` (workers, the exporter
//!   and the API mount the same one), and a tiny HTTP probe for container healthchecks.

pub mod exposition;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod otel;
pub mod trace;

pub use logs::{Telemetry, TelemetryError, init};
