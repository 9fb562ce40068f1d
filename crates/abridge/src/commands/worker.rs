//! `abridge worker`.

use std::process::ExitCode;
use std::sync::Arc;

use abridge_worker::Worker;
use anyhow::Context as _;
use tracing::info;

use crate::cli::WorkerArgs;
use crate::context::{self, Loaded};
use crate::processors;

pub async fn run(loaded: Loaded, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // Check the summarizer's settings before waiting for anything.
    let summarizer = loaded.summarizer()?;
    let settings = loaded.settings;
    let concurrency = args.concurrency.unwrap_or(settings.concurrency).max(1);
    // Bind before waiting for the database, so a taken port fails the start at once and
    // /healthz answers while Postgres comes up.
    let metrics = match args.metrics_listen {
        Some(addr) => {
            abridge_telemetry::metrics::install();
            // Before the listener answers, so the first scrape already has every family.
            abridge_telemetry::metrics::preregister_worker(
                settings.summarizer.as_str(),
                concurrency,
            );
            Some(MetricsServer::start(addr, None).await?)
        }
        None => None,
    };
    // Postgres may still be starting (compose, Kubernetes): wait for it rather than crash.
    let store = wait_for_store(&settings).await?;
    let queue = context::queue(&settings)?;
    let processor = processors::build(summarizer, &store, &queue)?;
    let worker = Worker {
        queue,
        store,
        processor,
        settings: Arc::new(settings),
    };
    let report = abridge_worker::run(worker, concurrency, super::stop_signal()).await?;
    // Served until the worker has drained, so the last scrapes see the shutdown.
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    info!(
        sessions = report.sessions,
        succeeded = report.succeeded,
        failed = report.failed,
        retried = report.retried,
        released = report.released,
        fenced = report.fenced,
        claims = report.claims,
        claimed = report.claimed,
        writes = report.writes,
        written = report.written,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// `/metrics` and `/healthz` on a listener of their own, until stopped.
pub(crate) struct MetricsServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    pub(crate) async fn start(
        addr: std::net::SocketAddr,
        extra: Option<Arc<dyn abridge_telemetry::http::ScrapeSource>>,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen for metrics scrapes on {addr}"))?;
        info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(abridge_telemetry::http::serve(
            listener,
            abridge_telemetry::http::router(extra),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self { stop, task })
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    }
}

pub(crate) async fn wait_for_store(
    settings: &abridge_core::Settings,
) -> anyhow::Result<abridge_store::Store> {
    let mut waits = abridge_core::backoff::Doubling::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(5),
    );
    loop {
        match context::store(settings).await {
            Ok(store) => return Ok(store),
            Err(e) => {
                let unavailable = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<abridge_store::StoreError>())
                    .any(abridge_store::StoreError::is_unavailable);
                if !unavailable {
                    return Err(e);
                }
                tracing::warn!(error = %format!("{e:#}"), "database not reachable yet; retrying");
            }
        }
        tokio::select! {
            _ = super::stop_signal() => anyhow::bail!("stopped before the database was reachable"),
            _ = tokio::time::sleep(waits.next_wait()) => {}
        }
    }
}
