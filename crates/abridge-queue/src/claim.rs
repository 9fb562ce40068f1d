//! The claim (`claim.lua`): a worker takes up to N ready items under one lease token, in
//! priority order and by fair share; an idle claim loop first waits for a wake-up on its own
//! connection ([`ClaimConnection`]).

use std::time::Duration;

use abridge_core::{LeaseToken, WorkerId};

use crate::{
    Context, LeaseRef, Queue, Result, millis, parse_batch, parse_item, parse_position, parse_rank,
    pool, scripts,
};

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

/// Longest a blocking wait for work lasts before the caller looks around again.
const MAX_WAIT: Duration = Duration::from_secs(5);

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

impl Queue {
    /// A dedicated connection for one claim loop (see [`ClaimConnection`]).
    pub fn claim_connection(&self) -> ClaimConnection {
        ClaimConnection {
            queue: self.clone(),
            conn: None,
        }
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
        inv.key(&self.keys.lease_deadlines)
            .key(&self.keys.lease_holders)
            .key(&self.keys.delayed)
            .key(&self.keys.delayed_places)
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
}
