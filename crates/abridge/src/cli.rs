//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use abridge_core::{Backend, BatchOptions, Priority, SummaryLength};
use clap::{Args, Parser, Subcommand};

/// abridge: a fleet of workers that summarizes YouTube videos in batches.
///
/// Configuration comes from built-in defaults, then an optional TOML file (--config), then
/// ABRIDGE_* environment variables (see README.md, "Configuration").
#[derive(Debug, Parser)]
#[command(name = "abridge", version, propagate_version = true)]
pub struct Cli {
    /// A TOML file of settings (flat keys, e.g. `lease_ms = 30000`).
    #[arg(long, global = true, value_name = "PATH", env = "ABRIDGE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole fleet locally: servers (if none configured), migrations, workers.
    Up(UpArgs),
    /// Apply database migrations (idempotent).
    Migrate,
    /// Submit a batch: one YouTube URL, video id or JSON object per line.
    Enqueue(EnqueueArgs),
    /// Run a worker process.
    Worker(WorkerArgs),
    /// Show a batch's progress.
    Status(StatusArgs),
    /// List a batch's items: position, video, status, attempts, error.
    Items(ItemsArgs),
    /// Print the summary of one item of a batch.
    Show(ShowArgs),
    /// Write a batch's results: a markdown file per summarized video, index.csv and
    /// batch.json (the files of the API's ZIP), into a folder or a ZIP file.
    Export(ExportArgs),
    /// Cancel a batch: no item of it starts afterwards; running ones stop.
    Cancel(BatchArg),
    /// Run one reaper pass (expired leases, dead workers) and one reconcile pass, and print
    /// what they did.
    Reap(JsonFlag),
    /// Run one pruner pass: delete what retention allows now (finished batches past their
    /// retention and everything of theirs, unused cache entries, old idempotency keys,
    /// stopped sessions, old fenced-write records) and print how many rows of each kind went.
    Prune(PruneArgs),
    /// Pause a queue: no new item starts fleet-wide (items in hand finish; enqueues are still
    /// accepted) until `abridge resume`.
    Pause(PauseArgs),
    /// Resume a paused queue.
    Resume(PauseArgs),
    /// Queue depth, retries, leases, failures and live workers.
    Stats(JsonFlag),
    /// The fleet at a glance, refreshing: depth, throughput, workers, recent batches.
    Top(TopArgs),
    /// Serve the fleet gauges (queue depth, leases, oldest item, live workers, drift) at
    /// /metrics for Prometheus. Run one per queue.
    Exporter(ExporterArgs),
    /// Check an HTTP endpoint: exit 0 on a 2xx answer (container healthchecks).
    Probe(ProbeArgs),
    /// Measure throughput, latency and cost (see BENCHMARKS.md). Uses the configured Redis
    /// and Postgres, or throwaway ones.
    Bench(BenchArgs),
    /// Serve the producer API over HTTP (batches, live progress, export, webhooks).
    Api(ApiArgs),
    /// Manage the API's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The operator's settings for an API tenant: backends and models it may use, its daily
    /// LLM token budget, its share of the fleet and its quotas.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Change a tenant's settings (the others keep their values).
    Set(TenantSetArgs),
    /// Print one tenant's settings.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Print every tenant's settings.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print what a tenant's batches' model requests cost per UTC day (`--operator`: the
    /// batches made with the CLI or an operator token).
    Costs {
        #[arg(required_unless_present = "operator", conflicts_with = "operator")]
        name: Option<String>,
        #[arg(long)]
        operator: bool,
        /// Days back, today included.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TenantSetArgs {
    pub name: String,
    /// Its share of the fleet against other tenants' (1 = an equal share; 1 to 1000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub weight: Option<i32>,
    /// Most of its items in flight at once across the fleet (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Most of its items queued at once; a batch over it is refused (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_queued: Option<u64>,
    /// Most batches it may create per minute (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_batches_per_minute: Option<u32>,
    /// Backends its batches may name, comma-separated (`default`: the fleet's backend only).
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Models its batches may name, comma-separated (`default`: only the configured ones).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// LLM tokens (in + out) its items may spend per UTC day (0: no limit).
    #[arg(long, value_name = "N")]
    pub daily_tokens: Option<u64>,
    /// The highest priority its batches may ask for: high, normal or low (`any`: no limit).
    #[arg(long, value_name = "PRIORITY")]
    pub max_priority: Option<String>,
    /// Days its finished batches are kept before the pruner deletes them (0: the fleet's
    /// ABRIDGE_RETENTION_DAYS).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete finished batches older than this (`30d`, `12h`, `90m`, `45s`) instead of
    /// ABRIDGE_RETENTION_DAYS; a tenant's own retention still applies to its batches.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

/// An age: a whole number followed by `d`, `h`, `m` or `s`.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let unit = match s.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3_600,
        Some('m') => 60,
        Some('s') => 1,
        _ => {
            return Err(format!(
                "{s:?}: expected a number and a unit: 30d, 12h, 90m or 45s"
            ));
        }
    };
    let n: u64 = s[..s.len() - 1]
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit: 30d, 12h, 90m or 45s"))?;
    n.checked_mul(unit)
        .filter(|secs| *secs <= 36_500 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: at most 36500d"))
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run: burndown, enqueue, latency, scale, ceiling, retention, transcripts
    /// (comma-separated; retention is not in the default set: it writes millions of rows).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burndown,enqueue,latency,scale,ceiling,transcripts"
    )]
    pub scenario: Vec<String>,
    /// Items pre-filled for the burn-down (and the ceiling).
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// Split the burn-down's items across this many batches.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batches: u64,
    /// Give each burn-down batch a tenant of its own (the cost of the fair share across
    /// tenants, against `--batches` alone).
    #[arg(long)]
    pub tenants: bool,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The worker processes' log filter (`RUST_LOG` syntax; `info` shows each worker's claim
    /// and write tallies at exit).
    #[arg(long, default_value = "warn")]
    pub worker_log: String,
    /// Items per worker at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Lines in the enqueue scenario's batch.
    #[arg(long, default_value_t = 100_000)]
    pub enqueue_items: usize,
    /// Open-loop arrival rates for the latency scenario (items/s, comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000,10000,20000"
    )]
    pub rates: Vec<u32>,
    /// Seconds per arrival rate.
    #[arg(long, default_value_t = 3.0)]
    pub rate_seconds: f64,
    /// Items in the scale scenario's big backlog.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Finished items the retention scenario puts in the `items` table.
    #[arg(long, default_value_t = 5_000_000)]
    pub retention_rows: usize,
    /// Of those, how many the retention scenario's pruner deletes while a burn-down runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub retention_prune: usize,
    /// Redis for the throwaway servers: `single` (one server) or `cluster` (three masters,
    /// the queue in one slot). Ignored when ABRIDGE_REDIS_URL is set.
    #[arg(long, default_value = "single", value_parser = ["single", "cluster"])]
    pub redis: String,
    /// Print only the JSON lines (no table).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Items each worker works on at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// A batch to enqueue once the fleet is up (as for `abridge enqueue`).
    pub file: Option<PathBuf>,
    /// Exit (stopping the fleet) once that batch is finished, instead of waiting for Ctrl-C:
    /// with 0 if every item succeeded, 1 if some failed, 2 if the batch was cancelled.
    #[arg(long, requires = "file")]
    pub exit_when_done: bool,
    /// Where the servers `up` starts keep their data, reused by the next `up` (default:
    /// $XDG_DATA_HOME/abridge, else ~/.local/share/abridge; /var/lib/abridge for root).
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// Keep nothing: the servers' data is deleted when `up` exits.
    #[arg(long)]
    pub ephemeral: bool,
    /// Where to serve the API and the dashboard.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The folder for the batch's results (default: ./abridge-summaries/<batch name or id>).
    #[arg(long, value_name = "DIR", requires = "file")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ItemsArgs {
    pub batch: String,
    /// Only items in this state: queued, running, succeeded, failed or cancelled.
    #[arg(long, value_parser = parse_item_status)]
    pub status: Option<abridge_core::ItemStatus>,
    /// One JSON object per item (as the API's item list gives it: `position` counts from 0).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub batch: String,
    /// The item's position in the batch, counted from 1 (as `abridge items` and the summary
    /// files number them).
    #[arg(value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub position: u32,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub batch: String,
    /// The folder to write (default: ./abridge-summaries/<batch name or id>).
    #[arg(long, value_name = "DIR", conflicts_with = "zip")]
    pub out: Option<PathBuf>,
    /// Write one ZIP file instead of a folder.
    #[arg(long, value_name = "FILE")]
    pub zip: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// A name to recognise the batch by.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "normal", value_parser = parse_priority)]
    pub priority: Priority,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub summary: SummaryArgs,
    /// The input file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Follow the batch with a progress bar until it completes or is cancelled, then write
    /// its results to a folder; exit 0 if every item succeeded, 1 if some failed, 2 if
    /// cancelled.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: the folder for the results (default:
    /// ./abridge-summaries/<batch name or id>).
    #[arg(long, value_name = "DIR", requires = "wait")]
    pub out: Option<PathBuf>,
    /// With --api: an Idempotency-Key, so that running the command again returns the first
    /// batch instead of creating another.
    #[arg(long, value_name = "KEY", requires = "api")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub lists: ListArgs,
}

/// How playlist and channel lines are expanded into their videos.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Expand `watch?v=X&list=ID` (and `youtu.be/X?list=ID`) into the playlist ID instead of
    /// taking the one video X.
    #[arg(long)]
    pub expand_lists: bool,
    /// Videos taken from each playlist or channel line, from its start (1 to 5000).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub max_per_list: u32,
    /// The longest reading the input's playlists and channels may take, all of them together,
    /// in seconds; a list not read by then is a rejected line.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub list_time_limit: u64,
}

/// Talk to the producer API instead of the databases (for producers without database
/// credentials).
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The API's base URL, such as https://abridge.example.com.
    #[arg(long, value_name = "URL", env = "ABRIDGE_API_URL")]
    pub api: Option<String>,
    /// A token from `abridge token create`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ABRIDGE_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address to listen on (default: ABRIDGE_API_LISTEN, else 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve this process's metrics at http://ADDR/metrics (and /healthz), e.g. 0.0.0.0:9466:
    /// a listener of its own, for Prometheus, never the port tenants reach.
    #[arg(long, value_name = "ADDR", env = "ABRIDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a tenant (making the tenant if new), or an operator token, and
    /// print it, once.
    Create {
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        tenant: Option<String>,
        /// An operator token: every tenant's batches, the fleet's figures and workers, the
        /// tenants' settings.
        #[arg(long)]
        operator: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token, given by its id or by the token itself.
    Revoke { token: String },
    /// List tokens (ids and tenants; never the tokens).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// How a batch's videos are summarized (the fleet's settings when not given).
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Summarizer backend for this batch.
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(
        clap::builder::PossibleValuesParser::new(Backend::ALL.map(Backend::as_str)),
        |name| name.parse::<Backend>().expect("a listed name"),
    ))]
    pub summarizer: Option<Backend>,
    /// Model for an LLM backend (e.g. gpt-4.1-mini, claude-haiku-4-5, llama3.1).
    #[arg(long, value_parser = parse_model)]
    pub model: Option<String>,
    /// Summary length.
    #[arg(long, value_parser = parse_length)]
    pub length: Option<SummaryLength>,
    /// Transcript languages, most preferred first (e.g. `de` or `pt-BR,en`).
    #[arg(long, value_parser = parse_language)]
    pub language: Option<String>,
    /// US dollars: once the batch's model requests cost this much, its remaining items end
    /// cancelled (`budget_reached`) instead of starting.
    #[arg(long, value_name = "USD", value_parser = parse_cost)]
    pub max_cost_usd: Option<f64>,
}

fn parse_cost(s: &str) -> Result<f64, String> {
    let usd: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of US dollars"))?;
    BatchOptions {
        max_cost_usd: Some(usd),
        ..BatchOptions::default()
    }
    .validate()
    .map(|()| usd)
    .map_err(|e| e.replace("summarizer.max_cost_usd", "--max-cost-usd"))
}

impl SummaryArgs {
    pub fn options(&self) -> BatchOptions {
        BatchOptions {
            backend: self.summarizer,
            model: self.model.clone(),
            length: self.length,
            language: self.language.clone(),
            max_cost_usd: self.max_cost_usd,
        }
    }
}

fn parse_length(s: &str) -> Result<SummaryLength, String> {
    s.parse()
}

fn parse_model(s: &str) -> Result<String, String> {
    let options = BatchOptions {
        model: Some(s.to_owned()),
        ..BatchOptions::default()
    };
    options
        .validate()
        .map(|()| s.trim().to_owned())
        .map_err(|_| "a model name is 1 to 200 printable characters".to_owned())
}

fn parse_language(s: &str) -> Result<String, String> {
    let options = BatchOptions {
        language: Some(s.to_owned()),
        ..BatchOptions::default()
    };
    options
        .validate()
        .map(|()| s.replace(' ', ""))
        .map_err(|_| {
            format!("{s:?} is not a list of language codes such as \"en\" or \"pt-BR,en\"")
        })
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Items worked on at once (default: ABRIDGE_CONCURRENCY, else 16).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Serve this worker's metrics at http://ADDR/metrics (and /healthz), e.g. 0.0.0.0:9464.
    #[arg(long, value_name = "ADDR", env = "ABRIDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one screen and exit (also the behaviour when standard output is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub interval: f64,
    /// How many recent batches to show.
    #[arg(long, default_value_t = 8)]
    pub batches: u16,
}

#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// Where to serve /metrics and /healthz, e.g. 0.0.0.0:9465.
    #[arg(long, value_name = "ADDR", env = "ABRIDGE_EXPORTER_LISTEN")]
    pub listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A plain http:// URL, e.g. http://127.0.0.1:9464/healthz.
    pub url: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub batch: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct BatchArg {
    pub batch: String,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The queue (default: ABRIDGE_QUEUE).
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

fn parse_item_status(s: &str) -> Result<abridge_core::ItemStatus, String> {
    s.parse()
        .map_err(|e: abridge_core::status::ParseEnumError| e.to_string())
}

fn parse_priority(s: &str) -> Result<Priority, String> {
    s.parse()
        .map_err(|e: abridge_core::status::ParseEnumError| e.to_string())
}
