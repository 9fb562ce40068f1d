//! `abridge up`: the whole fleet on this machine in one command. Uses the configured Redis and
//! Postgres, or starts its own, keeping their data in a data directory for the next `up`;
//! migrates; starts worker processes; serves the API and the dashboard (signed in with a
//! local operator token); optionally enqueues a file, shows its progress and writes its
//! results to a folder; stops everything cleanly on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use abridge_api::ApiState;
use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::lists::ListOptions;
use abridge_core::settings::Secret;
use abridge_core::{BatchId, Priority};
use abridge_local::{LocalPostgres, LocalRedis};
use abridge_queue::Queue;
use abridge_store::Store;
use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::results::{Results, hand_over};
use crate::cli::UpArgs;
use crate::context::Loaded;

/// The file in the data directory that holds the local operator token (mode 0600).
const TOKEN_FILE: &str = "operator-token";

pub async fn run(config: Option<&Path>, loaded: Loaded, args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut api_settings = loaded.api()?;
    let settings = loaded.settings;
    let data = if args.ephemeral {
        None
    } else {
        let dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        Some(DataDir::lock(&dir)?)
    };
    let mut servers = Servers::default();
    let redis_url = match &settings.redis_url {
        Some(url) => url.clone(),
        None => {
            let kept = data.as_ref().map(|d| d.path.join("redis"));
            let redis = tokio::task::spawn_blocking(move || match kept {
                Some(dir) => LocalRedis::open(&dir),
                None => LocalRedis::start(),
            })
            .await??;
            let url = Secret::new(redis.url());
            eprintln!(
                "started redis-server on port {} ({})",
                redis.port(),
                kept_in(data.as_ref(), "redis")
            );
            servers.redis = Some(redis);
            url
        }
    };
    let database_url = match &settings.database_url {
        Some(url) => url.clone(),
        None => {
            let kept = data.as_ref().map(|d| d.path.join("postgres"));
            let pg = tokio::task::spawn_blocking(move || match kept {
                Some(dir) => LocalPostgres::open(&dir),
                None => LocalPostgres::start(false),
            })
            .await??;
            let admin = Secret::new(pg.url("postgres"));
            abridge_store::admin::create_database(&admin, "abridge", None).await?;
            eprintln!(
                "started postgres on port {} ({})",
                pg.port(),
                kept_in(data.as_ref(), "postgres")
            );
            let url = Secret::new(pg.url("abridge"));
            servers.postgres = Some(pg);
            url
        }
    };
    let store = Store::connect_lazy(&database_url, 4)?;
    for m in store.migrate().await.context("migrate database")? {
        eprintln!("applied migration {m}");
    }
    let queue = Queue::connect(&redis_url, &settings.redis_prefix, &settings.queue, 4)?
        .with_shards(settings.queue_shards);
    queue.ping().await.context("reach redis")?;

    let token = operator_token(&store, data.as_ref()).await?;
    let youtube = api_settings.youtube.clone();
    api_settings.listen = args.listen;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} for the API and the dashboard (is another `abridge up` or `abridge api` running? pass --listen 127.0.0.1:PORT)",
                args.listen
            )
        })?;
    let address = listener
        .local_addr()
        .context("read the listening address")?;
    let api_state = ApiState::new(store.clone(), queue.clone(), &settings, api_settings);
    let stop_api = CancellationToken::new();
    let api = tokio::spawn(abridge_api::serve(
        listener,
        api_state,
        stop_api.clone().cancelled_owned(),
    ));

    let log_dir = match &data {
        Some(d) => LogDir::Kept(d.path.join("logs")),
        None => LogDir::Temp(tempfile::Builder::new().prefix("abridge-up-").tempdir()?),
    };
    std::fs::create_dir_all(log_dir.path())
        .with_context(|| format!("create {}", log_dir.path().display()))?;
    let mut workers = Vec::new();
    for n in 0..args.workers {
        workers.push(spawn_worker(
            n,
            config,
            &database_url,
            &redis_url,
            args.concurrency,
            log_dir.path(),
        )?);
    }
    eprintln!(
        "{} workers running (logs in {}); to use this fleet from another shell:\n  export ABRIDGE_DATABASE_URL={} ABRIDGE_REDIS_URL={}",
        workers.len(),
        log_dir.path().display(),
        database_url.expose(),
        redis_url.expose()
    );
    // The token rides in the fragment, which the browser never sends to a server or a log.
    eprintln!(
        "dashboard (signed in as the operator): {}",
        sign_in_url(address, &token)
    );

    let batch = match &args.file {
        Some(file) => {
            let text = super::enqueue::read_input(Some(file))?;
            let mut input = BatchInput::with_lists(ListOptions::default());
            input.push_lines(&text);
            super::enqueue::read_lists(&youtube, &mut input, Duration::from_secs(60)).await?;
            for r in &input.rejected {
                eprintln!("line {}: {}: {}", r.line, r.input, r.reason);
            }
            let done = abridge_control::enqueue(
                &store,
                &queue,
                &settings.queue,
                input,
                EnqueueRequest {
                    name: file.file_name().and_then(|n| n.to_str()),
                    priority: Priority::Normal,
                    options: Default::default(),
                    offer: abridge_control::Offer::from(&settings),
                },
            )
            .await?;
            eprintln!(
                "enqueued batch {}: {} accepted, {} duplicates, {} rejected",
                done.batch_id,
                done.accepted,
                done.duplicates,
                done.rejected.len()
            );
            Some(done.batch_id)
        }
        None => None,
    };

    let results = Results::Local(store.clone());
    let watch = watch(&store, &queue, &settings.queue, batch);
    let mut code = if args.exit_when_done {
        // Stopped before the batch finished: not a verdict on the batch.
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    };
    tokio::select! {
        r = async {
            if let Some(id) = watch.await? {
                let view = results.batch(id).await?;
                let handed = hand_over(&results, &view, args.out.as_deref()).await?;
                if args.exit_when_done {
                    return anyhow::Ok(Some(handed));
                }
            }
            // Serve the dashboard (and the fleet) until Ctrl-C.
            std::future::pending::<()>().await;
            anyhow::Ok(None)
        } => if let Some(handed) = r? { code = handed },
        _ = super::stop_signal() => eprintln!("stopping the fleet"),
    }

    stop_api.cancel();
    stop_workers(
        &mut workers,
        settings.shutdown_grace + Duration::from_secs(5),
    )
    .await;
    let _ = api.await;
    store.close().await;
    servers.stop().await;
    Ok(code)
}

/// `$XDG_DATA_HOME/abridge`, else `~/.local/share/abridge`; for root, `/var/lib/abridge`
/// (postgres runs as the `postgres` user then, which cannot enter root's home).
fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("abridge"));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/abridge"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("no HOME or XDG_DATA_HOME to keep the data in: pass --data-dir or --ephemeral")?;
    Ok(PathBuf::from(home).join(".local/share/abridge"))
}

/// The data directory, held by this `up` alone (an exclusive lock for the process's life).
struct DataDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl DataDir {
    fn lock(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("create the data directory {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("up.lock"))
            .with_context(|| format!("open {}", path.join("up.lock").display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                anyhow::anyhow!(
                    "another `abridge up` is using {} ({e}); stop it, or pass --data-dir or --ephemeral",
                    path.display()
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

fn kept_in(data: Option<&DataDir>, what: &str) -> String {
    match data {
        Some(d) => format!("data in {}", d.path.join(what).display()),
        None => "throwaway: its data is deleted on exit".to_owned(),
    }
}

/// The local operator token: the one saved in the data directory while the database still
/// knows it, else a new one (saved for the next `up`; not saved with `--ephemeral`).
async fn operator_token(store: &Store, data: Option<&DataDir>) -> anyhow::Result<String> {
    let file = data.map(|d| d.path.join(TOKEN_FILE));
    if let Some(saved) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        let saved = saved.trim().to_owned();
        let owner = store
            .token_owner(&abridge_api::auth::hash_token(&saved))
            .await?;
        if owner == Some(abridge_store::tenants::TokenOwner::Operator) {
            return Ok(saved);
        }
    }
    let made = abridge_api::auth::create_token(store, None).await?;
    if let Some(file) = &file {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(file)
            .with_context(|| format!("save the operator token in {}", file.display()))?;
        writeln!(f, "{}", made.token)?;
    }
    Ok(made.token)
}

fn sign_in_url(address: SocketAddr, token: &str) -> String {
    let host = if address.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], address.port()))
    } else {
        address
    };
    format!("http://{host}/#token={token}")
}

enum LogDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl LogDir {
    fn path(&self) -> &Path {
        match self {
            LogDir::Temp(t) => t.path(),
            LogDir::Kept(p) => p,
        }
    }
}

#[derive(Default)]
struct Servers {
    redis: Option<LocalRedis>,
    postgres: Option<LocalPostgres>,
}

impl Servers {
    /// Shuts both down cleanly (a kept cluster then starts again without recovery).
    async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(mut pg) = self.postgres {
                pg.stop();
            }
            if let Some(mut redis) = self.redis {
                redis.stop();
            }
        })
        .await;
    }
}

fn spawn_worker(
    n: usize,
    config: Option<&Path>,
    database_url: &Secret,
    redis_url: &Secret,
    concurrency: Option<usize>,
    log_dir: &Path,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("find the abridge executable")?;
    let log = std::fs::File::create(log_dir.join(format!("worker-{n}.log")))?;
    let mut cmd = Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("worker");
    if let Some(c) = concurrency {
        cmd.args(["--concurrency", &c.to_string()]);
    }
    cmd.env("ABRIDGE_DATABASE_URL", database_url.expose())
        .env("ABRIDGE_REDIS_URL", redis_url.expose())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    abridge_local::spawn_tied(cmd)
}

/// Shows the fleet's progress (and the batch's, if any) until the batch is finished, whose id
/// it then returns; without a batch, until Ctrl-C.
async fn watch(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    batch: Option<BatchId>,
) -> anyhow::Result<Option<BatchId>> {
    let multi = MultiProgress::new();
    let fleet = multi.add(ProgressBar::new_spinner());
    fleet.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
    let bar = batch.map(|_| multi.add(super::batch_bar(0)));
    loop {
        if let Ok(s) = abridge_control::stats(store, queue, queue_name).await {
            fleet.set_message(format!(
                "{} workers · ready {} · retrying {} · in hand {} · Ctrl-C to stop",
                s.workers.len(),
                s.depth.high + s.depth.normal + s.depth.low,
                s.delayed,
                s.leased
            ));
        }
        fleet.tick();
        if let (Some(id), Some(bar)) = (batch, &bar)
            && let Ok(b) = abridge_control::status(store, id).await
        {
            let c = b.counts;
            bar.set_length(u64::try_from(b.total).unwrap_or(0));
            bar.set_position(u64::try_from(c.terminal()).unwrap_or(0));
            bar.set_message(format!(
                "{} · {} succeeded, {} failed, {} running",
                b.status, c.succeeded, c.failed, c.running
            ));
            if b.status.is_finished() {
                bar.finish_and_clear();
                fleet.finish_and_clear();
                return Ok(Some(id));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn stop_workers(workers: &mut [Child], grace: Duration) {
    for w in workers.iter() {
        let _ = kill(Pid::from_raw(w.id() as i32), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    for w in workers.iter_mut() {
        loop {
            if let Ok(Some(_)) = w.try_wait() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = w.kill();
                let _ = w.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
