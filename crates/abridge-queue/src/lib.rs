//! Redis, abridge's fast path: queue order, leases and wake-ups. Only this crate talks to Redis.
//!
//! Redis holds item ids, positions, deadlines and lease records, never payloads or results, so
//! a queued item costs about 110 bytes and Redis may lose everything without losing work: the
//! reconciler rebuilds it from Postgres. Each state change is one atomic Lua script
//! ([`scripts`], files under `src/lua/`); [`Queue`] is their typed front.
//!
//! Architecture Invariant: nothing here decides an item's fate. A claim in Redis only lets a
//! worker *try* to start the item in Postgres; a lease lost or re-created in Redis is settled by
//! the Postgres compare-and-set on the lease token.

pub mod engine;
mod keys;
mod pool;
mod scripts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_core::{BatchId, ItemId, LeaseToken, Priority, WorkerId};
use chrono::{DateTime, Utc};
use deadpool::Runtime;
use futures::{Stream, StreamExt};
use pool::{Manager, Pool};
use redis::{AsyncCommands, AsyncConnectionConfig};

pub use keys::Keys;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    // Causes are part of the message (not `source()`), so a log line shows the whole story.
    #[error("redis url {url} is invalid: {cause}")]
    BadUrl {
        url: String,
        cause: redis::RedisError,
    },
    #[error("{context}: {cause}")]
    Redis {
        context: &'static str,
        cause: redis::RedisError,
    },
    #[error("{context}: redis unavailable: {cause}")]
    Pool {
        context: &'static str,
        cause: deadpool::managed::PoolError<redis::RedisError>,
    },
    #[error("{context}: unexpected reply: {detail}")]
    Reply {
        context: &'static str,
        detail: String,
    },
}

impl QueueError {
    /// True when Redis could not be reached or answered too late: back off and retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Redis { cause, .. } => {
                use redis::ServerErrorKind as S;
                cause.is_io_error()
                    || cause.is_timeout()
                    || cause.is_connection_dropped()
                    || cause.is_connection_refusal()
                    // A failover under way (a demoted master, a cluster without a master
                    // for a slot yet, a replica still loading): wait and retry.
                    || matches!(
                        cause.kind(),
                        redis::ErrorKind::Server(
                            S::ReadOnly | S::ClusterDown | S::TryAgain | S::MasterDown | S::BusyLoading
                        )
                    )
            }
            QueueError::Pool { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for redis::RedisResult<T> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|cause| QueueError::Redis { context, cause })
    }
}

/// A worker's claim: one token for every item it returned.
#[derive(Clone, Debug)]
pub struct Claim {
    pub token: LeaseToken,
    pub items: Vec<LeaseRef>,
    /// False when Redis has lost its data since the last reconcile (FLUSHALL, restart without
    /// persistence): the caller should reconcile now rather than at its next tick.
    pub epoch_present: bool,
    /// How soon the next retry comes due, so an idle worker knows how long it may block.
    pub next_due: Option<Duration>,
}

/// A lease a worker holds, with what Redis needs to renew, re-create or requeue it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRef {
    pub item: ItemId,
    pub token: LeaseToken,
    pub batch: BatchId,
    pub priority: Priority,
    pub position: i32,
}

/// What a renewal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Another claim holds the item, or it was requeued: stop working on it.
    Lost,
    /// Its batch was cancelled: stop working on it.
    Cancelled,
    /// Redis had lost the lease (and the item was nowhere else); it was re-created.
    Recreated,
}

/// What to do with an item when its lease is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAck {
    /// Nothing: it is finished, or not ours to place.
    Drop,
    /// Make it ready again now.
    Ready,
    /// Retry it after this long.
    Delay(Duration),
}

/// What an acknowledgement did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acked {
    pub removed: i64,
    /// Ready items of each batch asked about, in order.
    pub ready: Vec<i64>,
}

/// An item to put back in the queue, as Postgres describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub item: ItemId,
    pub batch: BatchId,
    pub priority: Priority,
    pub position: i32,
    /// `None` or a past time: ready now. A future time: delayed until then.
    pub due: Option<DateTime<Utc>>,
}

/// A lease taken away from its holder (expired, or its worker was buried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenLease {
    pub lease: LeaseRef,
    pub worker: WorkerId,
}

/// Queue depth as Redis sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Ready items per priority rank (high, normal, low).
    pub ready: [i64; 3],
    pub leased: i64,
    pub delayed: i64,
    pub batches_in_rotation: i64,
}

/// What the last reconcile pass found, as it recorded it for the fleet gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileMark {
    /// Queued items (per Postgres) that Redis did not hold.
    pub drift: u64,
    /// Of those, how many the pass put back.
    pub requeued: u64,
    /// When the pass ran, in Unix milliseconds on the reconciling worker's clock.
    pub at_ms: i64,
}

/// Redis server counters (from `INFO`), for benchmarks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStats {
    pub used_memory: i64,
    /// Commands executed, over all command types (commands run inside scripts included).
    pub calls: i64,
    /// Microseconds spent in scripts (`EVALSHA`/`EVAL`; inner commands are also counted
    /// under their own names, so summing every command would count them twice).
    pub script_usec: i64,
    /// CPU seconds of the server process (user + system).
    pub cpu_seconds: f64,
}

impl ServerStats {
    fn parse(info: &str) -> Self {
        let mut stats = Self::default();
        for line in info.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("used_memory:") {
                stats.used_memory = v.parse().unwrap_or(0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                stats.cpu_seconds += v.parse::<f64>().unwrap_or(0.0);
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                // cmdstat_evalsha:calls=10,usec=123,usec_per_call=12.3,...
                let (name, fields) = rest.split_once(':').unwrap_or((rest, ""));
                let script = name == "evalsha" || name == "eval";
                for field in fields.split(',') {
                    match field.split_once('=') {
                        Some(("calls", v)) => stats.calls += v.parse::<i64>().unwrap_or(0),
                        Some(("usec", v)) if script => {
                            stats.script_usec += v.parse::<i64>().unwrap_or(0)
                        }
                        _ => {}
                    }
                }
            }
        }
        stats
    }
}

/// A claim loop's own connection, held across claims: an idle loop's claim is pipelined
/// behind its blocking wait for a wake-up, and both must go down one connection. Replaced by a
/// fresh one after any error.
pub struct ClaimConnection {
    queue: Queue,
    conn: Option<pool::Connection>,
}

impl ClaimConnection {
    async fn conn(&mut self) -> Result<&mut pool::Connection> {
        if self.conn.is_none() {
            self.conn = Some(self.queue.conn("claim connection").await?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// As [`Queue::claim`]; with `wait`, it first waits up to that long for a wake-up, in the
    /// same round trip (see `Queue::wait_then_claim_on`).
    pub async fn claim(
        &mut self,
        worker: WorkerId,
        lease: Duration,
        n: usize,
        wait: Option<Duration>,
    ) -> Result<Claim> {
        let queue = self.queue.clone();
        let conn = self.conn().await?;
        let result = match wait {
            None => queue.claim_on(conn, worker, lease, n).await,
            Some(wait) => queue.wait_then_claim_on(conn, worker, lease, n, wait).await,
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// The queue: a Redis pool and this queue's key names. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: Pool,
    /// Shared, like the pool: a queue is cloned for every item a worker runs, and the
    /// connector (its connection info) and the key names are a score of strings.
    connector: Arc<engine::Connector>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.keys.prefix)
            .finish()
    }
}

/// Longest a blocking wait for work lasts before the caller looks around again.
const MAX_WAIT: Duration = Duration::from_secs(5);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Scripts over big batches and blocking waits take longer than the 500 ms default.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Cancel markers outlive any lease by far, so a worker always sees its batch cancelled.
const CANCEL_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);
/// A staged batch lives this long without being activated. Far longer than writing any batch
/// takes; if it expires first anyway, activation finds it gone and the items are enqueued.
const STAGED_TTL: Duration = Duration::from_secs(3600);
/// Item ids per command when a batch's items are pushed or staged: big enough that 100,000
/// items take five commands, small enough that no single command holds Redis for long.
const PUSH_CHUNK: usize = 20_000;
/// Whose turn a batch's items take in a claim's fair share: its tenant's (weighted), or the
/// one turn that every batch of no tenant (the CLI's, the operator's) shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share<'a> {
    pub tenant: Option<&'a str>,
    /// The owner's weight against the others' (1 = an equal share).
    pub weight: i32,
    /// Most of the owner's items leased at once across the fleet.
    pub max_in_flight: Option<i32>,
}

impl Share<'_> {
    /// The turn of batches that belong to no tenant.
    pub const NO_TENANT: Share<'static> = Share {
        tenant: None,
        weight: 1,
        max_in_flight: None,
    };

    /// The owner's name in Redis: tenant names never contain `~`.
    fn owner(&self) -> &str {
        self.tenant.unwrap_or("~")
    }
}

/// Item ids per cancel call: one script call stays short however large the batch.
const CANCEL_CHUNK: usize = 5_000;

impl Queue {
    /// Builds the pool; no connection is made until first use.
    pub fn connect(
        url: &Secret,
        redis_prefix: &str,
        queue: &str,
        pool_size: usize,
    ) -> Result<Self> {
        let bad_url = |cause| QueueError::BadUrl {
            url: url.redacted_url(),
            cause,
        };
        let target = engine::Target::parse(url.expose()).map_err(|cause| QueueError::BadUrl {
            url: url.redacted_url(),
            cause: redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Redis URL",
                cause,
            )),
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connector = Arc::new(engine::Connector::new(&target).map_err(bad_url)?);
        let manager = Manager::new(connector.clone(), config);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| QueueError::Reply {
                context: "build redis pool",
                detail: e.to_string(),
            })?;
        Ok(Self {
            pool,
            connector,
            keys: Arc::new(Keys::new(redis_prefix, queue)),
        })
    }

    /// A dedicated connection for one claim loop (see [`ClaimConnection`]).
    pub fn claim_connection(&self) -> ClaimConnection {
        ClaimConnection {
            queue: self.clone(),
            conn: None,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn conn(&self, context: &'static str) -> Result<pool::Connection> {
        self.pool
            .get()
            .await
            .map(pool::Connection::from)
            .map_err(|cause| QueueError::Pool { context, cause })
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn("ping redis").await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .context("ping redis")?;
        Ok(())
    }

    /// Makes a new batch's items ready, in input order (`item_ids[i]` has position `i`), in
    /// `share`'s turn.
    pub async fn enqueue(
        &self,
        batch: BatchId,
        priority: Priority,
        share: Share<'_>,
        item_ids: &[ItemId],
    ) -> Result<()> {
        let mut conn = self.conn("enqueue items").await?;
        for (chunk_no, chunk) in item_ids.chunks(PUSH_CHUNK).enumerate() {
            let mut inv = scripts::ENQUEUE.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(&self.keys.wake)
                .key(self.keys.cancelled(batch))
                .arg(batch.to_string());
            self.share_args(&mut inv, priority, share);
            for (i, id) in chunk.iter().enumerate() {
                inv.arg(chunk_no * PUSH_CHUNK + i).arg(id.0);
            }
            inv.invoke_async::<i64>(&mut conn)
                .await
                .context("enqueue items")?;
        }
        Ok(())
    }

    /// Writes a large new batch's items (`item_ids[i]` has position `i`) where no claim sees
    /// them, while Postgres writes their rows; [`Queue::activate`] makes them ready once the
    /// rows are committed. The staged set expires after `STAGED_TTL` if that never happens
    /// (the enqueuer died: the reconciler queues a committed batch's items).
    pub async fn stage(&self, batch: BatchId, item_ids: &[ItemId]) -> Result<()> {
        let key = self.keys.staged(batch);
        let mut conn = self.conn("stage items").await?;
        let mut pipe = redis::pipe();
        for (chunk_no, chunk) in item_ids.chunks(PUSH_CHUNK).enumerate() {
            let cmd = pipe.cmd("ZADD").arg(&key);
            for (i, id) in chunk.iter().enumerate() {
                cmd.arg(chunk_no * PUSH_CHUNK + i).arg(id.0);
            }
            cmd.ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(STAGED_TTL))
            .ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .context("stage items")?;
        Ok(())
    }

    /// Makes a staged batch's items ready (see `lua/activate.lua`). Returns how many were
    /// staged; fewer than the batch has means the staging was lost, and the caller enqueues
    /// the items with [`Queue::enqueue`].
    pub async fn activate(
        &self,
        batch: BatchId,
        priority: Priority,
        share: Share<'_>,
    ) -> Result<usize> {
        let mut conn = self.conn("activate items").await?;
        let mut inv = scripts::ACTIVATE.prepare_invoke();
        inv.key(self.keys.rotation_for(priority))
            .key(self.keys.ready(batch))
            .key(&self.keys.wake)
            .key(self.keys.cancelled(batch))
            .key(self.keys.staged(batch))
            .arg(batch.to_string());
        self.share_args(&mut inv, priority, share);
        let n: i64 = inv
            .invoke_async(&mut conn)
            .await
            .context("activate items")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The arguments every script that records a batch's owner takes after the batch id:
    /// PREFIX, rank, owner, weight, limit on items in flight (0: none).
    fn share_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        priority: Priority,
        share: Share<'_>,
    ) {
        inv.arg(&self.keys.prefix)
            .arg(priority.rank())
            .arg(share.owner())
            .arg(share.weight)
            .arg(share.max_in_flight.unwrap_or(0));
    }

    /// Drops a staged batch whose rows were not written.
    pub async fn unstage(&self, batch: BatchId) -> Result<()> {
        let mut conn = self.conn("unstage items").await?;
        redis::cmd("DEL")
            .arg(self.keys.staged(batch))
            .query_async::<()>(&mut conn)
            .await
            .context("unstage items")?;
        Ok(())
    }

    /// Leases up to `n` ready items to `worker` under one fresh token.
    pub async fn claim(&self, worker: WorkerId, lease: Duration, n: usize) -> Result<Claim> {
        let mut conn = self.conn("claim items").await?;
        self.claim_on(&mut conn, worker, lease, n).await
    }

    async fn claim_on(
        &self,
        conn: &mut pool::Connection,
        worker: WorkerId,
        lease: Duration,
        n: usize,
    ) -> Result<Claim> {
        let token = LeaseToken::random();
        let reply: Vec<String> = self
            .claim_invocation(worker, token, lease, n)
            .invoke_async(conn)
            .await
            .context("claim items")?;
        parse_claim(token, reply)
    }

    /// Blocks on the wake-up list for up to `timeout`, then claims, in one round trip: the
    /// claim is pipelined behind the blocking pop, so Redis runs it the moment a wake-up
    /// arrives (or when the wait times out), instead of the worker hearing of the wake-up and
    /// only then asking. A worker that dies while blocked takes its pipeline with it: Redis
    /// drops a closed client's pending commands, so nothing is leased to it.
    async fn wait_then_claim_on(
        &self,
        conn: &mut pool::Connection,
        worker: WorkerId,
        lease: Duration,
        n: usize,
        timeout: Duration,
    ) -> Result<Claim> {
        let secs = timeout.min(MAX_WAIT).as_secs_f64().max(0.01);
        let token = LeaseToken::random();
        let invocation = self.claim_invocation(worker, token, lease, n);
        let mut pipe = redis::pipe();
        pipe.cmd("BLPOP")
            .arg(&self.keys.wake)
            .arg(secs)
            .ignore()
            .invoke_script(&invocation);
        match pipe.query_async::<(Vec<String>,)>(&mut *conn).await {
            Ok((reply,)) => parse_claim(token, reply),
            // The script is not cached (Redis restarted): claim the usual way, which loads it.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.claim_on(conn, worker, lease, n).await
            }
            Err(e) => Err(e).context("wait for work, then claim"),
        }
    }

    fn claim_invocation(
        &self,
        worker: WorkerId,
        token: LeaseToken,
        lease: Duration,
        n: usize,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = scripts::CLAIM.prepare_invoke();
        for key in &self.keys.rotation {
            inv.key(key);
        }
        inv.key(&self.keys.leases)
            .key(&self.keys.lease)
            .key(&self.keys.delayed)
            .key(&self.keys.dref)
            .key(&self.keys.wake)
            .key(&self.keys.epoch)
            .key(&self.keys.paused)
            .arg(&self.keys.prefix)
            .arg(worker.to_string())
            .arg(token.0)
            .arg(millis(lease))
            .arg(n);
        inv
    }

    /// Extends the leases `worker` holds; one [`Renewal`] per lease, in order.
    pub async fn renew(
        &self,
        worker: WorkerId,
        lease: Duration,
        leases: &[LeaseRef],
    ) -> Result<Vec<Renewal>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn("renew leases").await?;
        let mut inv = scripts::RENEW.prepare_invoke();
        inv.key(&self.keys.leases)
            .key(&self.keys.lease)
            .key(&self.keys.delayed)
            .key(&self.keys.taken)
            .arg(&self.keys.prefix)
            .arg(worker.to_string())
            .arg(millis(lease));
        for l in leases {
            push_lease(&mut inv, l);
        }
        let codes: Vec<i64> = inv.invoke_async(&mut conn).await.context("renew leases")?;
        if codes.len() != leases.len() {
            return Err(QueueError::Reply {
                context: "renew leases",
                detail: format!("{} codes for {} leases", codes.len(), leases.len()),
            });
        }
        Ok(codes
            .into_iter()
            .map(|c| match c {
                1 => Renewal::Renewed,
                2 => Renewal::Cancelled,
                3 => Renewal::Recreated,
                _ => Renewal::Lost,
            })
            .collect())
    }

    /// Lets go of leases (only those still carrying the given token) and places the items as
    /// asked. Returns how many leases were removed and, for each of `report`, how many of its
    /// items are ready in Redis.
    pub async fn ack(&self, acks: &[(LeaseRef, AfterAck)], report: &[BatchId]) -> Result<Acked> {
        let mut acked = Acked {
            removed: 0,
            ready: vec![0; report.len()],
        };
        if acks.is_empty() && report.is_empty() {
            return Ok(acked);
        }
        let mut conn = self.conn("acknowledge leases").await?;
        let chunks: Vec<&[(LeaseRef, AfterAck)]> = if acks.is_empty() {
            vec![&[]]
        } else {
            acks.chunks(5_000).collect()
        };
        let last = chunks.len() - 1;
        for (n, chunk) in chunks.into_iter().enumerate() {
            // Ready counts are read once, after the last chunk.
            let reported: &[BatchId] = if n == last { report } else { &[] };
            let mut inv = scripts::ACK.prepare_invoke();
            inv.key(&self.keys.leases)
                .key(&self.keys.lease)
                .key(&self.keys.delayed)
                .key(&self.keys.dref)
                .key(&self.keys.wake)
                .arg(&self.keys.prefix)
                .arg(reported.len());
            for b in reported {
                inv.arg(b.to_string());
            }
            for (l, after) in chunk {
                push_lease(&mut inv, l);
                inv.arg(match after {
                    AfterAck::Drop => -1,
                    AfterAck::Ready => 0,
                    AfterAck::Delay(d) => millis(*d).max(1) as i64,
                });
            }
            let reply: Vec<i64> = inv
                .invoke_async(&mut conn)
                .await
                .context("acknowledge leases")?;
            acked.removed += reply.first().copied().unwrap_or(0);
            if n == last {
                for (slot, v) in acked.ready.iter_mut().zip(reply.into_iter().skip(1)) {
                    *slot = v;
                }
            }
        }
        Ok(acked)
    }

    /// Puts items back where Postgres says they belong (ready, or delayed until `due`).
    /// Items someone holds a lease on, and items of cancelled batches, are skipped.
    pub async fn requeue(&self, placements: &[Placement]) -> Result<i64> {
        let mut conn = self.conn("requeue items").await?;
        let mut placed = 0;
        for chunk in placements.chunks(5_000) {
            let mut inv = scripts::REQUEUE.prepare_invoke();
            inv.key(&self.keys.leases)
                .key(&self.keys.delayed)
                .key(&self.keys.dref)
                .key(&self.keys.wake)
                .arg(&self.keys.prefix);
            for p in chunk {
                inv.arg(p.item.0)
                    .arg(p.batch.to_string())
                    .arg(p.priority.rank())
                    .arg(p.position)
                    .arg(p.due.map(|d| d.timestamp_millis().max(0)).unwrap_or(0));
            }
            placed += inv
                .invoke_async::<i64>(&mut conn)
                .await
                .context("requeue items")?;
        }
        Ok(placed)
    }

    /// Removes up to `max` expired leases and returns them; of several reapers, exactly one
    /// gets each.
    pub async fn take_expired(&self, max: usize) -> Result<Vec<TakenLease>> {
        let mut conn = self.conn("take expired leases").await?;
        let reply: Vec<String> = scripts::REAP
            .key(&self.keys.leases)
            .key(&self.keys.lease)
            .key(&self.keys.taken)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .context("take expired leases")?;
        parse_taken(&reply, "take expired leases")
    }

    /// Removes every lease `worker` holds and returns them.
    pub async fn take_worker_leases(&self, worker: WorkerId) -> Result<Vec<TakenLease>> {
        let mut conn = self.conn("take a worker's leases").await?;
        let reply: Vec<String> = scripts::RELEASE_WORKER
            .key(&self.keys.leases)
            .key(&self.keys.lease)
            .key(&self.keys.taken)
            .arg(worker.to_string())
            .invoke_async(&mut conn)
            .await
            .context("take a worker's leases")?;
        parse_taken(&reply, "take a worker's leases")
    }

    /// Stops handing out a batch's items and tells the workers holding some to stop. `items`
    /// are the batch's unfinished items (those that may wait to retry): the cost is theirs,
    /// never the other batches' delayed retries.
    pub async fn cancel_batch(
        &self,
        batch: BatchId,
        priority: Priority,
        items: &[ItemId],
    ) -> Result<i64> {
        let mut conn = self.conn("cancel batch").await?;
        let mut dropped = 0;
        let mut chunks = items.chunks(CANCEL_CHUNK);
        let mut first = true;
        loop {
            let chunk = chunks.next();
            if chunk.is_none() && !first {
                return Ok(dropped);
            }
            let mut inv = scripts::CANCEL.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(self.keys.cancelled(batch))
                .key(&self.keys.delayed)
                .key(&self.keys.dref)
                .arg(batch.to_string())
                .arg(millis(CANCEL_MARKER_TTL))
                .arg(&self.keys.events)
                .arg(if first { "1" } else { "0" })
                .arg(&self.keys.prefix)
                .arg(priority.rank());
            for id in chunk.unwrap_or_default() {
                inv.arg(id.0);
            }
            let n: i64 = inv.invoke_async(&mut conn).await.context("cancel batch")?;
            dropped += n;
            first = false;
        }
    }

    /// Which of a batch's items Redis holds (ready, delayed or leased); records the batch's
    /// owner again and repairs its place in the rotation on the way.
    pub async fn held(
        &self,
        batch: BatchId,
        priority: Priority,
        share: Share<'_>,
        items: &[ItemId],
    ) -> Result<Vec<bool>> {
        let mut conn = self.conn("check held items").await?;
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(10_000) {
            let mut inv = scripts::HELD.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(&self.keys.delayed)
                .key(&self.keys.leases)
                .arg(batch.to_string());
            self.share_args(&mut inv, priority, share);
            for id in chunk {
                inv.arg(id.0);
            }
            let flags: Vec<i64> = inv
                .invoke_async(&mut conn)
                .await
                .context("check held items")?;
            out.extend(flags.into_iter().map(|f| f == 1));
        }
        Ok(out)
    }

    /// Items Redis holds per batch: ready, delayed and leased. In a steady state this equals
    /// the batch's queued plus running items in Postgres.
    pub async fn held_counts(&self, batches: &[BatchId]) -> Result<HashMap<BatchId, i64>> {
        let mut conn = self.conn("count held items").await?;
        let mut pipe = redis::pipe();
        for b in batches {
            pipe.zcard(self.keys.ready(*b));
        }
        pipe.hvals(&self.keys.dref).hvals(&self.keys.lease);
        let mut replies: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .context("count held items")?;
        let strings = |v: Option<redis::Value>| -> Vec<String> {
            match v {
                Some(redis::Value::Array(values)) => values
                    .into_iter()
                    .filter_map(|v| match v {
                        redis::Value::BulkString(b) => String::from_utf8(b).ok(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let leases = strings(replies.pop()); // "token|worker|batch|rank|position"
        let delayed = strings(replies.pop()); // "batch|rank|position"
        let mut counts = HashMap::with_capacity(batches.len());
        for (b, v) in batches.iter().zip(replies) {
            let n = match v {
                redis::Value::Int(n) => n,
                other => {
                    return Err(QueueError::Reply {
                        context: "count held items",
                        detail: format!("{other:?}"),
                    });
                }
            };
            counts.insert(*b, n);
        }
        let batch_fields = delayed
            .iter()
            .filter_map(|r| r.split('|').next())
            .chain(leases.iter().filter_map(|r| r.split('|').nth(2)));
        for field in batch_fields {
            if let Ok(b) = field.parse::<BatchId>()
                && let Some(n) = counts.get_mut(&b)
            {
                *n += 1;
            }
        }
        Ok(counts)
    }

    /// Leases held per worker: the items each worker has in hand right now.
    pub async fn leases_by_worker(&self) -> Result<HashMap<WorkerId, i64>> {
        let mut conn = self.conn("count leases per worker").await?;
        let values: Vec<String> = conn
            .hvals(&self.keys.lease)
            .await
            .context("count leases per worker")?;
        let mut counts = HashMap::new();
        for v in values {
            // "token|worker|batch|rank|position"
            if let Some(w) = v.split('|').nth(1).and_then(|w| w.parse::<WorkerId>().ok()) {
                *counts.entry(w).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Which of these items hold a lease in Redis.
    pub async fn leased(&self, items: &[ItemId]) -> Result<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn("check leases").await?;
        let ids: Vec<i64> = items.iter().map(|i| i.0).collect();
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(&self.keys.leases)
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .context("check leases")?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }

    pub async fn stats(&self) -> Result<QueueStats> {
        let mut conn = self.conn("read queue stats").await?;
        let mut inv = scripts::STATS.prepare_invoke();
        for key in &self.keys.rotation {
            inv.key(key);
        }
        let v: Vec<i64> = inv
            .key(&self.keys.leases)
            .key(&self.keys.delayed)
            .arg(&self.keys.prefix)
            .invoke_async(&mut conn)
            .await
            .context("read queue stats")?;
        if v.len() != 6 {
            return Err(QueueError::Reply {
                context: "read queue stats",
                detail: format!("{} values", v.len()),
            });
        }
        Ok(QueueStats {
            ready: [v[0], v[1], v[2]],
            leased: v[3],
            delayed: v[4],
            batches_in_rotation: v[5],
        })
    }

    /// Records a tenant's weight and limit on items in flight where claims read them, so they
    /// apply to its queued batches at once.
    pub async fn set_limits(
        &self,
        tenant: &str,
        weight: i32,
        max_in_flight: Option<i32>,
    ) -> Result<()> {
        let mut conn = self.conn("set a tenant's limits").await?;
        scripts::LIMITS
            .key(format!("{}weights", self.keys.prefix))
            .key(format!("{}caps", self.keys.prefix))
            .arg(tenant)
            .arg(weight)
            .arg(max_in_flight.unwrap_or(0))
            .invoke_async::<()>(&mut conn)
            .await
            .context("set a tenant's limits")
    }

    /// Whether a server was found to refuse structured answers for a model (`what`), fleet-wide.
    pub async fn text_only(&self, what: &str) -> Result<bool> {
        let mut conn = self.conn("read a server's answer format").await?;
        let found: bool = redis::cmd("EXISTS")
            .arg(self.keys.text_only(what))
            .query_async(&mut conn)
            .await
            .context("read a server's answer format")?;
        Ok(found)
    }

    /// Remembers for `ttl`, fleet-wide, that a server refuses structured answers for a model.
    pub async fn set_text_only(&self, what: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("remember a server's answer format").await?;
        redis::cmd("SET")
            .arg(self.keys.text_only(what))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("remember a server's answer format")
    }

    /// The YouTube session the fleet shares (JSON), if one is kept.
    pub async fn youtube_session(&self) -> Result<Option<String>> {
        let mut conn = self.conn("read the youtube session").await?;
        redis::cmd("GET")
            .arg(self.keys.youtube_session())
            .query_async(&mut conn)
            .await
            .context("read the youtube session")
    }

    /// Keeps the YouTube session for `ttl` (it is replaced as soon as YouTube refuses it).
    pub async fn set_youtube_session(&self, session: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("keep the youtube session").await?;
        redis::cmd("SET")
            .arg(self.keys.youtube_session())
            .arg(session)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("keep the youtube session")
    }

    /// Quarantines a YouTube proxy for `ttl`, fleet-wide.
    pub async fn quarantine_egress(&self, egress: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("quarantine a proxy").await?;
        redis::cmd("SET")
            .arg(self.keys.egress_quarantine(egress))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("quarantine a proxy")
    }

    /// For each proxy, how much longer it is quarantined (`None`: it is not).
    pub async fn egress_quarantines(&self, egress: &[&str]) -> Result<Vec<Option<Duration>>> {
        let mut conn = self.conn("read proxies' quarantine").await?;
        let mut pipe = redis::pipe();
        for e in egress {
            pipe.cmd("PTTL").arg(self.keys.egress_quarantine(e));
        }
        let ttls: Vec<i64> = pipe
            .query_async(&mut conn)
            .await
            .context("read proxies' quarantine")?;
        Ok(ttls
            .into_iter()
            .map(|ms| u64::try_from(ms).ok().map(Duration::from_millis))
            .collect())
    }

    /// LLM tokens `tenant`'s items have spent on `day` (`YYYYMMDD`, UTC), by this fleet's
    /// count (lost with Redis: the budget is then counted afresh).
    pub async fn tenant_tokens(&self, tenant: &str, day: &str) -> Result<i64> {
        let mut conn = self.conn("read a tenant's tokens").await?;
        let n: Option<i64> = redis::cmd("GET")
            .arg(self.keys.tenant_tokens(tenant, day))
            .query_async(&mut conn)
            .await
            .context("read a tenant's tokens")?;
        Ok(n.unwrap_or(0))
    }

    /// Counts `tokens` more against `tenant`'s `day`; the counter outlives its day by one.
    pub async fn add_tenant_tokens(&self, tenant: &str, day: &str, tokens: u64) -> Result<()> {
        let key = self.keys.tenant_tokens(tenant, day);
        let mut conn = self.conn("count a tenant's tokens").await?;
        redis::pipe()
            .cmd("INCRBY")
            .arg(&key)
            .arg(tokens)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(2 * 24 * 3600)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .context("count a tenant's tokens")
    }

    /// Server-wide counters for benchmarks: memory in use, and command calls and CPU
    /// microseconds summed over every command (`INFO commandstats`).
    /// On a cluster, the sum over its masters (a cluster answers INFO from every one).
    pub async fn server_stats(&self) -> Result<ServerStats> {
        let mut conn = self.conn("read redis server stats").await?;
        let info: redis::Value = redis::cmd("INFO")
            .arg("all")
            .query_async(&mut conn)
            .await
            .context("read redis server stats")?;
        let mut texts = Vec::new();
        collect_text(&info, &mut texts);
        let mut total = ServerStats::default();
        for text in texts {
            let s = ServerStats::parse(&text);
            total.used_memory += s.used_memory;
            total.calls += s.calls;
            total.script_usec += s.script_usec;
            total.cpu_seconds += s.cpu_seconds;
        }
        Ok(total)
    }

    /// Writes the copy of the queue's pause that claim.lua obeys, as of Postgres's
    /// `generation`; false if Redis already held a newer one (this writer read an older state).
    /// Resuming wakes an idle worker.
    pub async fn set_paused(&self, paused: bool, generation: i64) -> Result<bool> {
        let mut conn = self.conn("pause or resume").await?;
        let written: i64 = scripts::PAUSE
            .key(&self.keys.paused)
            .key(&self.keys.pause_generation)
            .key(&self.keys.wake)
            .arg(generation)
            .arg(i64::from(paused))
            .invoke_async(&mut conn)
            .await
            .context("pause or resume")?;
        Ok(written == 1)
    }

    /// Sets the epoch marker; true if it was missing (Redis lost its data, or first run).
    pub async fn mark_epoch(&self) -> Result<bool> {
        let mut conn = self.conn("mark epoch").await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.keys.epoch)
            .arg(Utc::now().timestamp_millis())
            .arg("NX")
            .query_async(&mut conn)
            .await
            .context("mark epoch")?;
        Ok(set.is_some())
    }

    /// Records a reconcile pass's findings, for the fleet gauges: whichever worker reconciled,
    /// the exporter reads the latest from here, so the drift gauge has one source rather than
    /// one stale copy per worker. Not queue state (one plain `HSET`); lost with the rest of
    /// Redis, and written again by the pass that follows such a loss.
    pub async fn record_reconcile(&self, mark: ReconcileMark) -> Result<()> {
        let mut conn = self.conn("record reconcile pass").await?;
        redis::cmd("HSET")
            .arg(&self.keys.reconciled)
            .arg("drift")
            .arg(mark.drift)
            .arg("requeued")
            .arg(mark.requeued)
            .arg("at_ms")
            .arg(mark.at_ms)
            .query_async::<i64>(&mut conn)
            .await
            .context("record reconcile pass")?;
        Ok(())
    }

    /// The last recorded reconcile pass, if any.
    pub async fn last_reconcile(&self) -> Result<Option<ReconcileMark>> {
        let mut conn = self.conn("read last reconcile pass").await?;
        let fields: HashMap<String, i64> = conn
            .hgetall(&self.keys.reconciled)
            .await
            .context("read last reconcile pass")?;
        let Some(at_ms) = fields.get("at_ms").copied() else {
            return Ok(None);
        };
        let get = |k: &str| fields.get(k).copied().unwrap_or(0).max(0) as u64;
        Ok(Some(ReconcileMark {
            drift: get("drift"),
            requeued: get("requeued"),
            at_ms,
        }))
    }

    /// Takes the reconcile turn for `ttl` if nobody holds it: reconciling from one process at
    /// a time saves work (running it from several at once would still be correct).
    pub async fn try_reconcile_turn(&self, worker: WorkerId, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn("take reconcile turn").await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.keys.reconcile_lock)
            .arg(worker.to_string())
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async(&mut conn)
            .await
            .context("take reconcile turn")?;
        Ok(set.is_some())
    }

    /// Takes `cost` from the fleet-wide token bucket `name`, which refills at `per_second` up
    /// to `capacity`, for `owner` (a tenant; `None` for batches of none): while another owner
    /// waits, an owner past its equal share waits too (budget.lua). `None`: taken.
    /// `Some(wait)`: not yet; ask again after `wait`.
    pub async fn take_budget(
        &self,
        name: &str,
        per_second: f64,
        capacity: f64,
        cost: f64,
        owner: Option<&str>,
    ) -> Result<Option<Duration>> {
        let mut conn = self.conn("take from budget").await?;
        let bucket = self.keys.budget(name);
        let wait_ms: i64 = scripts::BUDGET
            .prepare_invoke()
            .key(&bucket)
            .key(format!("{bucket}:owners"))
            .key(format!("{bucket}:waiting"))
            .arg(per_second)
            .arg(capacity)
            .arg(cost)
            .arg(owner.unwrap_or("~"))
            .invoke_async(&mut conn)
            .await
            .context("take from budget")?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// Asks the fleet-wide circuit breaker `name` whether a request may go now. `None`: go
    /// (closed, or this caller holds the half-open probe for `probe`). `Some(wait)`: open.
    pub async fn breaker_pass(&self, name: &str, probe: Duration) -> Result<Option<Duration>> {
        let mut conn = self.conn("ask circuit breaker").await?;
        let wait_ms: i64 = scripts::BREAKER_PASS
            .prepare_invoke()
            .key(self.keys.breaker(name))
            .arg(millis(probe).max(1))
            .invoke_async(&mut conn)
            .await
            .context("ask circuit breaker")?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// Records a request's outcome with the breaker `name`: a success closes it; `threshold`
    /// failures in a row (each within `decay` of the last) open it for `open_for`. Returns true
    /// if this failure opened it.
    pub async fn breaker_report(
        &self,
        name: &str,
        success: bool,
        threshold: u32,
        open_for: Duration,
        decay: Duration,
    ) -> Result<bool> {
        let mut conn = self.conn("report to circuit breaker").await?;
        let opened: i64 = scripts::BREAKER_REPORT
            .prepare_invoke()
            .key(self.keys.breaker(name))
            .arg(if success { 1 } else { 0 })
            .arg(threshold.max(1))
            .arg(millis(open_for).max(1))
            .arg(millis(decay).max(1))
            .invoke_async(&mut conn)
            .await
            .context("report to circuit breaker")?;
        Ok(opened == 1)
    }

    /// Tells API processes that items of these batches changed state (started, finished,
    /// cancelled, retried): one PUBLISH of space-separated ids, whatever the number of items.
    /// A notice carries no state; listeners read it from Postgres. Pub/sub is lossy, so
    /// listeners also re-read now and then.
    pub async fn publish_progress(&self, batches: &[BatchId]) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let message = batches
            .iter()
            .map(BatchId::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut conn = self.conn("publish progress").await?;
        redis::cmd("PUBLISH")
            .arg(&self.keys.progress)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .context("publish progress")?;
        Ok(())
    }

    /// A stream of progress notices (the batches each one names), from the moment it is
    /// subscribed. Ends when the connection drops; the caller re-subscribes and re-reads.
    pub async fn progress_notices(&self) -> Result<impl Stream<Item = Vec<BatchId>> + use<>> {
        let mut pubsub = self
            .connector
            .client()
            .await
            .context("subscribe to progress")?
            .get_async_pubsub()
            .await
            .context("subscribe to progress")?;
        pubsub
            .subscribe(&self.keys.progress)
            .await
            .context("subscribe to progress")?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            Some(
                payload
                    .split_ascii_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect(),
            )
        }))
    }

    /// A stream of cancelled batch ids, from the moment it is subscribed. Ends when the
    /// connection drops; the caller re-subscribes (renewals catch what was missed).
    pub async fn cancellations(&self) -> Result<impl Stream<Item = BatchId> + use<>> {
        let mut pubsub = self
            .connector
            .client()
            .await
            .context("subscribe to cancellations")?
            .get_async_pubsub()
            .await
            .context("subscribe to cancellations")?;
        pubsub
            .subscribe(&self.keys.events)
            .await
            .context("subscribe to cancellations")?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            payload.strip_prefix("cancel ")?.parse().ok()
        }))
    }
}

/// The INFO texts in a reply: one server's, or one per node of a cluster's.
fn collect_text(v: &redis::Value, out: &mut Vec<String>) {
    match v {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        redis::Value::VerbatimString { text, .. } | redis::Value::SimpleString(text) => {
            out.push(text.clone())
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_text(v, out)),
        redis::Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        _ => {}
    }
}

fn push_lease(inv: &mut redis::ScriptInvocation<'_>, l: &LeaseRef) {
    inv.arg(l.item.0)
        .arg(l.token.0)
        .arg(l.batch.to_string())
        .arg(l.priority.rank())
        .arg(l.position);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A claim script's reply: `{ epoch_present, next_due_ms, then item, batch, rank, position
/// per item }` (see `lua/claim.lua`).
fn parse_claim(token: LeaseToken, reply: Vec<String>) -> Result<Claim> {
    let mut reply = reply.into_iter();
    let epoch_present = reply.next().as_deref() == Some("1");
    let next_due = reply
        .next()
        .and_then(|ms| ms.parse::<f64>().ok())
        .filter(|ms| *ms >= 0.0)
        .map(|ms| Duration::from_millis(ms as u64));
    let rest: Vec<String> = reply.collect();
    let items = rest
        .chunks_exact(4)
        .map(|f| {
            Ok(LeaseRef {
                item: parse_item(&f[0])?,
                token,
                batch: parse_batch(&f[1])?,
                priority: parse_rank(&f[2])?,
                position: parse_position(&f[3])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Claim {
        token,
        items,
        epoch_present,
        next_due,
    })
}

fn parse_item(s: &str) -> Result<ItemId> {
    s.parse().map(ItemId).map_err(|_| QueueError::Reply {
        context: "parse item id",
        detail: format!("{s:?}"),
    })
}

fn parse_batch(s: &str) -> Result<BatchId> {
    s.parse().map_err(|_| QueueError::Reply {
        context: "parse batch id",
        detail: format!("{s:?}"),
    })
}

fn parse_rank(s: &str) -> Result<Priority> {
    s.parse::<u8>()
        .ok()
        .and_then(Priority::from_rank)
        .ok_or_else(|| QueueError::Reply {
            context: "parse priority rank",
            detail: format!("{s:?}"),
        })
}

fn parse_position(s: &str) -> Result<i32> {
    // Positions come back as ZSET scores, which Redis may render as "12" or "12.0".
    s.parse::<i32>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i32))
        .ok_or_else(|| QueueError::Reply {
            context: "parse item position",
            detail: format!("{s:?}"),
        })
}

fn parse_taken(reply: &[String], context: &'static str) -> Result<Vec<TakenLease>> {
    reply
        .chunks_exact(6)
        .map(|f| {
            let bad = || QueueError::Reply {
                context,
                detail: format!("{f:?}"),
            };
            Ok(TakenLease {
                lease: LeaseRef {
                    item: parse_item(&f[0])?,
                    token: LeaseToken(f[1].parse().map_err(|_| bad())?),
                    batch: parse_batch(&f[3])?,
                    priority: parse_rank(&f[4])?,
                    position: parse_position(&f[5])?,
                },
                worker: f[2].parse().map_err(|_| bad())?,
            })
        })
        .collect()
}
