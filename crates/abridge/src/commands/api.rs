//! `abridge api`: the producer API.

use std::process::ExitCode;

use abridge_api::ApiState;
use anyhow::Context;

use crate::cli::ApiArgs;
use crate::context::{self, Loaded};

pub async fn run(loaded: Loaded, args: ApiArgs) -> anyhow::Result<ExitCode> {
    let settings = &loaded.settings;
    let mut api = loaded.api()?;
    if let Some(listen) = args.listen {
        api.listen = listen;
    }
    let store = context::store(settings).await?;
    let queue = context::queue(settings)?;
    let listener = tokio::net::TcpListener::bind(api.listen)
        .await
        .with_context(|| format!("listen on {}", api.listen))?;
    let address = listener
        .local_addr()
        .context("read the listening address")?;
    tracing::info!(%address, queue = %settings.queue, "abridge api listening");
    abridge_telemetry::metrics::install();
    let metrics = match args.metrics_listen {
        Some(addr) => Some(super::worker::MetricsServer::start(addr, None).await?),
        None => None,
    };
    let state = ApiState::new(store.clone(), queue, settings, api);
    abridge_api::serve(listener, state, super::stop_signal())
        .await
        .context("serve the api")?;
    if let Some(m) = metrics {
        m.stop().await;
    }
    store.close().await;
    tracing::info!("abridge api stopped");
    Ok(ExitCode::SUCCESS)
}
