//! The servers a benchmark runs against, and worker processes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use abridge_core::input::ItemInput;
use abridge_core::settings::Secret;
use abridge_core::{BatchId, Priority};
use abridge_local::{LocalPostgres, LocalRedis};
use abridge_queue::Queue;
use abridge_store::{CreatedBatch, NewBatch, Store};
use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Redis and Postgres: the configured ones, or throwaway ones (Postgres with fsync on and
/// `synchronous_commit` on: outcome writes are as durable as in production).
pub struct Servers {
    pub database_url: Secret,
    pub redis_url: Secret,
    /// The worker processes' `RUST_LOG`.
    pub worker_log: String,
    /// `ABRIDGE_QUEUE_SHARDS` of the benchmark's queues, for its workers and its own calls.
    pub queue_shards: usize,
    _redis: Option<LocalRedis>,
    _cluster: Option<abridge_local::LocalRedisCluster>,
    _postgres: Option<LocalPostgres>,
}

impl Servers {
    pub async fn start(
        database_url: Option<Secret>,
        redis_url: Option<Secret>,
        cluster: bool,
        worker_log: String,
        queue_shards: usize,
    ) -> anyhow::Result<Self> {
        let (redis_url, redis, local_cluster) = match redis_url {
            Some(url) => (url, None, None),
            None if cluster => {
                let c =
                    tokio::task::spawn_blocking(|| abridge_local::LocalRedisCluster::start(3, 0))
                        .await??;
                (Secret::new(c.url(&c.ports())), None, Some(c))
            }
            None => {
                let r = tokio::task::spawn_blocking(LocalRedis::start).await??;
                (Secret::new(r.url()), Some(r), None)
            }
        };
        let (database_url, postgres) = match database_url {
            Some(url) => (url, None),
            None => {
                let p = tokio::task::spawn_blocking(|| LocalPostgres::start(false)).await??;
                let admin = Secret::new(p.url("postgres"));
                abridge_store::admin::create_database(&admin, "abridge_bench", None).await?;
                (Secret::new(p.url("abridge_bench")), Some(p))
            }
        };
        let store = Store::connect_lazy(&database_url, 2)?;
        store
            .migrate()
            .await
            .context("migrate the benchmark database")?;
        store.close().await;
        Ok(Self {
            database_url,
            redis_url,
            worker_log,
            queue_shards,
            _redis: redis,
            _cluster: local_cluster,
            _postgres: postgres,
        })
    }

    /// A store with room for many concurrent enqueues.
    pub fn store(&self, pool: u32) -> anyhow::Result<Store> {
        Ok(Store::connect_lazy(&self.database_url, pool)?)
    }

    /// A store for a producer that has been running a while: its durable pool's `pool`
    /// connections (the ones enqueues use) are open before the first measured call. A lazy
    /// pool met the open loop's first burst by opening connections while serving it; each new
    /// backend costs Postgres milliseconds of CPU on the cores the work needs, and the slower
    /// work wanted still more connections (BENCHMARKS.md, "Open loop").
    pub async fn warm_store(&self, pool: u32) -> anyhow::Result<Store> {
        let store = self.store(pool)?;
        let mut open = Vec::new();
        for _ in 0..pool {
            open.push(store.pool().acquire().await?);
        }
        Ok(store)
    }

    pub fn queue(&self, queue: &str) -> anyhow::Result<Queue> {
        Ok(Queue::connect(&self.redis_url, "abridge-bench", queue, 32)?
            .with_shards(self.queue_shards))
    }
}

/// Writes a batch of `items` to Postgres only, as the CLI would but without the push to Redis:
/// for scenarios that time the push, or Postgres, on their own.
pub async fn create_batch(
    store: &Store,
    queue: &str,
    name: Option<&str>,
    items: &[ItemInput],
) -> anyhow::Result<CreatedBatch> {
    Ok(store
        .create_batch(
            NewBatch {
                name,
                ..NewBatch::plain(queue, Priority::Normal)
            },
            items,
        )
        .await?)
}

/// A fresh queue name per scenario, so scenarios and earlier runs never see each other.
pub fn fresh_queue(scenario: &str) -> String {
    format!(
        "bench-{scenario}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `abridge worker` processes serving one queue with the noop summarizer.
pub struct Workers {
    children: Vec<Child>,
}

impl Workers {
    pub fn spawn(
        exe: &Path,
        servers: &Servers,
        queue: &str,
        n: usize,
        concurrency: usize,
        noop_delay_ms: u64,
    ) -> anyhow::Result<Self> {
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let mut cmd = Command::new(exe);
            cmd.args(["worker", "--concurrency", &concurrency.to_string()])
                .env("ABRIDGE_DATABASE_URL", servers.database_url.expose())
                .env("ABRIDGE_REDIS_URL", servers.redis_url.expose())
                .env("ABRIDGE_REDIS_PREFIX", "abridge-bench")
                .env("ABRIDGE_QUEUE", queue)
                .env("ABRIDGE_QUEUE_SHARDS", servers.queue_shards.to_string())
                .env("ABRIDGE_SUMMARIZER", "noop")
                .env("ABRIDGE_DRILLS", "1")
                .env("ABRIDGE_NOOP_DELAY_MS", noop_delay_ms.to_string())
                .env("ABRIDGE_SHUTDOWN_GRACE_MS", "2000")
                // The queue alone is measured: no pruner in the workers (the retention
                // scenario runs one itself, where it wants one).
                .env("ABRIDGE_PRUNE_INTERVAL_MS", "0")
                .env("RUST_LOG", &servers.worker_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            children.push(abridge_local::spawn_tied(cmd)?);
        }
        Ok(Self { children })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Waits until `n` sessions of `queue` are live.
    pub async fn wait_registered(store: &Store, queue: &str, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.live_sessions(queue).await?.len() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "workers did not register within a minute"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGTERM, then wait (SIGKILL after 15 s).
    pub async fn stop(mut self) {
        for c in &self.children {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for c in &mut self.children {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `n` distinct input lines (bare video ids).
pub fn video_lines(prefix: char, n: usize) -> String {
    let mut s = String::with_capacity(n * 12);
    for i in 0..n {
        s.push_str(&format!("{prefix}{i:010}\n"));
    }
    s
}

/// Waits until `batch` is completed or cancelled, polling its one row (cheap: counting items
/// every poll would add to the load being measured); returns false on timeout.
pub async fn wait_batch_finished(
    store: &Store,
    batch: BatchId,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if store
            .batch_status(batch)
            .await?
            .is_some_and(|s| s.is_finished())
        {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every item of `batch` is terminal; returns false on timeout.
pub async fn wait_batch_done(
    store: &Store,
    batch: BatchId,
    total: i64,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if store.counts(batch).await?.terminal() >= total {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU time (user + system) a process has used so far, in microseconds.
pub fn cpu_usec(pid: u32) -> Option<u64> {
    proc_cpu_usec(pid, false)
}

/// A process's CPU time from /proc, and with `children` that of its children that have
/// exited and been waited for. A single-threaded process's own time is the scheduler's
/// nanosecond count (`schedstat`): `stat`'s clock ticks round each process down to 10 ms,
/// which loses much of a run's time when it is spread over a dozen Postgres backends. A
/// multi-threaded one (a worker) is read from `stat`, the only place that also counts its
/// exited threads; one rounding on its whole time costs little. Exited children are only
/// known in ticks, summed before rounding.
fn proc_cpu_usec(pid: u32, children: bool) -> Option<u64> {
    let fields = stat_fields(pid)?;
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let ticks_usec = |t: u64| t * 1_000_000 / hz;
    // num_threads
    let single = tick(17) == Some(1);
    let precise = || {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    };
    let own = match single.then(precise).flatten() {
        Some(ns) => ns / 1_000,
        // utime + stime
        None => ticks_usec(tick(11)? + tick(12)?),
    };
    // cutime + cstime
    let reaped = if children {
        ticks_usec(tick(13)? + tick(14)?)
    } else {
        0
    };
    Some(own + reaped)
}

/// CPU microseconds of the Postgres server behind `store`: every process its postmaster
/// started (backends, WAL writer, checkpointer, autovacuum), then the postmaster itself with
/// the time of the children it has reaped, so a backend that closes between two readings
/// moves into the postmaster's children's time instead of vanishing from the sum. (Read in
/// that order, a backend reaped between the two reads is counted twice, never lost.)
///
/// Only this server's processes: a sum over every `postgres` on the machine once read less
/// after a run than before it (0 µs per item), when another cluster's processes exited
/// during the run.
pub async fn postgres_cpu_usec(store: &Store) -> anyhow::Result<u64> {
    let backend = store.backend_pid().await?;
    let postmaster = u32::try_from(backend)
        .ok()
        .and_then(parent_pid)
        .filter(|pm| is_postgres(*pm))
        .context("find the Postgres server's processes (is it on this machine?)")?;
    let children: u64 = std::fs::read_dir("/proc")
        .context("read /proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| parent_pid(*pid) == Some(postmaster))
        .filter_map(|pid| proc_cpu_usec(pid, false))
        .sum();
    let own = proc_cpu_usec(postmaster, true).context("read the postmaster's CPU time")?;
    Ok(children + own)
}

/// The fields of `/proc/{pid}/stat` after the command name (which may contain spaces, so
/// they start after the last ')'): index 0 is the state, 1 the parent's pid.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

/// Resident memory of a process: (current, peak) in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
