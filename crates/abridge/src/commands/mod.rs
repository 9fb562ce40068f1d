//! One module per subcommand.

mod api;
mod bench;
mod enqueue;
mod exporter;
mod ops;
mod remote;
mod report;
mod results;
mod tenant;
mod token;
mod top;
mod up;
mod worker;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::context;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let loaded = context::load(cli.config.as_deref())?;
    // Held until the command returns: dropping it exports the spans still buffered.
    let _telemetry =
        abridge_telemetry::init(loaded.settings.log_format, &service_name(&cli.command))?;
    run_command(cli.config.as_deref(), loaded, cli.command).await
}

/// `abridge-worker`, `abridge-api`, ...: the OpenTelemetry `service.name` of each role, from
/// the subcommand's name.
fn service_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    let variant = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("cli");
    format!("abridge-{}", variant.to_ascii_lowercase())
}

async fn run_command(
    config: Option<&std::path::Path>,
    loaded: context::Loaded,
    command: Command,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up::run(config, loaded, args).await,
        Command::Migrate => ops::migrate(&loaded.settings).await,
        Command::Enqueue(args) => enqueue::run(&loaded, args).await,
        Command::Worker(args) => worker::run(loaded, args).await,
        Command::Status(args) => ops::status(&loaded.settings, args).await,
        Command::Items(args) => results::items(&loaded.settings, args).await,
        Command::Show(args) => results::show(&loaded.settings, args).await,
        Command::Export(args) => results::export(&loaded.settings, args).await,
        Command::Cancel(args) => ops::cancel(&loaded.settings, args).await,
        Command::Reap(args) => ops::reap(loaded, args).await,
        Command::Prune(args) => ops::prune(&loaded.settings, args).await,
        Command::Pause(args) => ops::pause(&loaded.settings, args, true).await,
        Command::Resume(args) => ops::pause(&loaded.settings, args, false).await,
        Command::Stats(args) => ops::stats(&loaded.settings, args).await,
        Command::Top(args) => top::run(&loaded.settings, args).await,
        Command::Exporter(args) => exporter::run(&loaded.settings, args).await,
        Command::Probe(args) => exporter::probe(args).await,
        Command::Bench(args) => bench::run(&loaded.settings, args).await,
        Command::Api(args) => api::run(loaded, args).await,
        Command::Token(command) => token::run(&loaded.settings, command).await,
        Command::Tenant(command) => tenant::run(&loaded.settings, command).await,
    }
}

/// The bar a batch's progress is shown with (`up`, `enqueue --wait`, local or through the API).
pub fn batch_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("##-"),
    );
    bar
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
