//! One module per subcommand.

mod api;
mod bench;
mod enqueue;
mod ops;
mod remote;
mod token;
mod up;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::{context, telemetry};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let loaded = context::load(cli.config.as_deref())?;
    telemetry::init(loaded.settings.log_format);
    match cli.command {
        Command::Up(args) => up::run(cli.config.as_deref(), loaded, args).await,
        Command::Migrate => ops::migrate(&loaded.settings).await,
        Command::Enqueue(args) => enqueue::run(&loaded.settings, args).await,
        Command::Worker(args) => worker::run(loaded, args).await,
        Command::Status(args) => ops::status(&loaded.settings, args).await,
        Command::Cancel(args) => ops::cancel(&loaded.settings, args).await,
        Command::Reap(args) => ops::reap(loaded, args).await,
        Command::Stats(args) => ops::stats(&loaded.settings, args).await,
        Command::Bench(args) => bench::run(&loaded.settings, args).await,
        Command::Api(args) => api::run(loaded, args).await,
        Command::Token(command) => token::run(&loaded.settings, command).await,
    }
}

/// Resolves when this process is asked to stop (SIGTERM or Ctrl-C).
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
