//! `abridge exporter` (the fleet gauges for Prometheus) and `abridge probe` (healthchecks).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use abridge_control::gauges::FleetMetrics;
use abridge_core::Settings;

use super::worker::{MetricsServer, wait_for_store};
use crate::cli::{ExporterArgs, ProbeArgs};
use crate::context;

/// Serves `/metrics` with the fleet gauges of the configured queue, read from Redis and
/// Postgres at each scrape, until SIGTERM/SIGINT. One exporter per queue is enough (and more
/// would only duplicate the series): the gauges describe the queue, not the exporter.
pub async fn run(settings: &Settings, args: ExporterArgs) -> anyhow::Result<ExitCode> {
    abridge_telemetry::metrics::install();
    let store = wait_for_store(settings).await?;
    let fleet = FleetMetrics {
        store,
        queue: context::queue(settings)?,
        queue_name: settings.queue.clone(),
        session_ttl: settings.session_ttl,
    };
    let server = MetricsServer::start(args.listen, Some(Arc::new(fleet))).await?;
    super::stop_signal().await;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `GET url`: exit 0 on a 2xx answer; otherwise say what came back, and exit 1.
pub async fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let response =
        abridge_telemetry::http::probe(&args.url, Duration::from_millis(args.timeout_ms)).await?;
    if (200..300).contains(&response.status) {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "get {}: status {}: {}",
            args.url,
            response.status,
            response.body.trim()
        );
        Ok(ExitCode::FAILURE)
    }
}
