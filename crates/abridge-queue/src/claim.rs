//! The claim (`claim.lua`): a worker takes up to N ready items under one lease token, in
//! priority order and by fair share; an idle claim loop first waits for a wake-up on its own
//! connection ([`ClaimConnection`]). On a queue of several shards a claim is a round: it takes
//! what it can from one shard after another until it has N, best-looking shard first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_core::{LeaseToken, WorkerId};

use tracing::debug;

use crate::shards::wake_key;
use crate::{
    Context, LeaseRef, Queue, QueueError, Result, ShardId, millis, parse_batch, parse_item,
    parse_position, parse_rank, pool, scripts,
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
    /// Per shard, the highest priority rank its last claim left ready (3: none); a shard not
    /// yet seen counts as 0, so it is looked at early.
    /// Shared with the look that follows a round, which runs beside the next one.
    seen: Arc<Mutex<HashMap<ShardId, u8>>>,
    /// Turns the round's starting point among shards that look alike: it moves on every
    /// `STAY_ROUNDS` rounds, from a random start, so that fleet's claim loops are spread over
    /// the shards and each stays on one for a while (a group of outcomes is then acknowledged
    /// on one shard, in one call, rather than on several).
    turn: usize,
    /// The generation of the shards' notices this loop has applied to `seen`.
    heard: u64,
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
    ///
    /// On a queue of several shards this is a round. An idle loop's wait (and the claim
    /// behind it) is on the first shard, which holds the wake list. Then rank by rank, most
    /// urgent first, each shard that had work of that rank at the last look gives what it has
    /// of it, until `n` are taken; the least urgent rank's pass asks every shard not yet asked
    /// (it promotes each one's due retries), so a round that comes back short has looked
    /// everywhere. A round that fills early looks at the shards it did not ask, so the next
    /// round knows where the most urgent work is: priorities hold across shards to within
    /// one claim. Shards whose notices the process hears ([`Queue::hear_ready_ranks`]) are
    /// not looked at unless their last claim failed: a round goes by what they said since the
    /// last (applied after the wait). A shard that fails (its master is away: a failover) is
    /// skipped for the round; the round fails only if it took nothing, and never after it
    /// took items (their leases would be left to expire). After an error the next call takes
    /// a fresh connection.
    pub async fn claim(
        &mut self,
        worker: WorkerId,
        lease: Duration,
        n: usize,
        wait: Option<Duration>,
    ) -> Result<Claim> {
        let queue = self.queue.clone();
        let token = LeaseToken::random();
        let mut claim = Claim {
            token,
            items: Vec::new(),
            epoch_present: true,
            next_due: None,
        };
        let mut shards = queue.active_shards();
        if shards.len() == 1 {
            let conn = self.conn().await?;
            let part = match wait {
                Some(wait) => {
                    queue
                        .wait_then_claim_on(conn, shards[0], worker, token, lease, n, wait)
                        .await
                }
                None => {
                    queue
                        .claim_on(conn, shards[0], worker, token, lease, n, 2)
                        .await
                }
            };
            if part.is_err() {
                self.conn = None;
            }
            return part.map(|(part, _)| part);
        }
        self.turn = self.turn.wrapping_add(1);
        let count = shards.len();
        shards.rotate_left(self.turn / STAY_ROUNDS % count);
        let mut asked: Vec<ShardId> = Vec::with_capacity(count);
        let mut failure = None;
        if let Some(wait) = wait {
            let part = match self.conn().await {
                Ok(conn) => {
                    queue
                        .wait_then_claim_on(conn, ShardId::FIRST, worker, token, lease, n, wait)
                        .await
                }
                Err(e) => Err(e),
            };
            self.absorb(&mut claim, ShardId::FIRST, part, &mut failure);
            asked.push(ShardId::FIRST);
        }
        // After the wait: what the shards said while this loop waited counts for this round.
        {
            let mut seen = self.seen.lock().expect("seen lock");
            self.heard = queue.shards.heard.apply(self.heard, &mut seen);
        }
        for rank in 0..=2u8 {
            for &shard in &shards {
                if claim.items.len() >= n {
                    break;
                }
                let seen = self.seen(shard).unwrap_or(0);
                let last_pass = rank == 2 && !asked.contains(&shard);
                if seen > rank && !last_pass {
                    continue;
                }
                let want = n - claim.items.len();
                let part = match self.conn().await {
                    Ok(conn) => {
                        queue
                            .claim_on(conn, shard, worker, token, lease, want, rank)
                            .await
                    }
                    Err(e) => Err(e),
                };
                self.absorb(&mut claim, shard, part, &mut failure);
                if !asked.contains(&shard) {
                    asked.push(shard);
                }
            }
        }
        // Shards whose notices are heard say when they get urgent work: no need to look, unless
        // the shard failed (its master came back, or a replica took over, with work listed
        // and nothing to say).
        let covered = queue.shards.heard.covered();
        let unasked: Vec<ShardId> = shards
            .into_iter()
            .filter(|s| {
                !asked.contains(s) && (!covered.contains(s) || self.seen(*s) == Some(FAILED))
            })
            .collect();
        // The look asks only for work more urgent than the least urgent this round took.
        let took = claim.items.iter().map(|l| l.priority.rank()).max();
        let look = took.filter(|t| *t > 0 && !unasked.is_empty());
        // A loop woken from its wait that filled this claim on a shard with work left passes
        // the wake-up on, as the first shard's script does (a busy loop's claims need not:
        // whoever woke the idle ones left a wake-up per item, up to the limit).
        let pass_on = claim.items.last().map(|l| l.shard).filter(|last| {
            wait.is_some()
                && claim.items.len() >= n
                && *last != ShardId::FIRST
                && self.seen(*last).is_some_and(|r| r < 3)
        });
        // Looks and wake-ups are hints: they run beside the caller's work on the claim (and
        // its next round), and a failed one is left to the next round.
        if look.is_some() || pass_on.is_some() {
            let seen = self.seen.clone();
            tokio::spawn(async move {
                let heard = queue.shards.heard.generation();
                if let Some(took) = look
                    && let Ok(tops) = queue.top_ranks(&unasked, took).await
                {
                    // A notice applied meanwhile is newer than the look: the look only lowers.
                    let newer = queue.shards.heard.generation() != heard;
                    let mut seen = seen.lock().expect("seen lock");
                    for (shard, top) in unasked.iter().zip(tops) {
                        let at = seen.entry(*shard).or_insert(top);
                        *at = if newer { (*at).min(top) } else { top };
                    }
                }
                if let Some(last) = pass_on
                    && let Err(e) = async {
                        let mut conn = queue.conn("pass a wake-up on").await?;
                        queue.wake_for(&mut conn, last, 1).await
                    }
                    .await
                {
                    debug!(error = %e, "cannot pass a wake-up on");
                }
            });
        }
        match failure {
            Some(e) if claim.items.is_empty() => Err(e),
            _ => Ok(claim),
        }
    }

    fn seen(&self, shard: ShardId) -> Option<u8> {
        self.seen.lock().expect("seen lock").get(&shard).copied()
    }

    fn note(&self, shard: ShardId, rank: u8) {
        self.seen.lock().expect("seen lock").insert(shard, rank);
    }

    /// Adds one shard's part to a round's claim, or notes its failure (the first is kept).
    fn absorb(
        &mut self,
        claim: &mut Claim,
        shard: ShardId,
        part: Result<(Claim, u8)>,
        failure: &mut Option<QueueError>,
    ) {
        let (part, left) = match part {
            Ok(part) => part,
            Err(e) => {
                self.note(shard, FAILED);
                // The next call gets a fresh connection (a failover may have broken this one).
                self.conn = None;
                failure.get_or_insert(e);
                return;
            }
        };
        self.note(shard, left);
        claim.epoch_present &= part.epoch_present;
        claim.next_due = match (claim.next_due, part.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        claim.items.extend(part.items);
    }
}

/// Rounds a claim loop starts at the same shard (see `ClaimConnection::turn`): each shard is
/// still first for some loop within `STAY_ROUNDS` times the shards' count of rounds.
const STAY_ROUNDS: usize = 4;

/// What a shard that failed counts as seen holding: past every rank, so it is asked again only
/// in a round's last pass.
const FAILED: u8 = 4;

/// Longest a blocking wait for work lasts before the caller looks around again.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// A claim script's reply: `{ epoch_present, next_due_ms, top rank left, then item, batch,
/// rank, position per item }` (see `lua/claim.lua`); with the top rank left.
fn parse_claim(token: LeaseToken, shard: ShardId, reply: Vec<String>) -> Result<(Claim, u8)> {
    let mut reply = reply.into_iter();
    let epoch_present = reply.next().as_deref() == Some("1");
    let next_due = reply
        .next()
        .and_then(|ms| ms.parse::<f64>().ok())
        .filter(|ms| *ms >= 0.0)
        .map(|ms| Duration::from_millis(ms as u64));
    let left = reply.next().and_then(|r| r.parse::<u8>().ok()).unwrap_or(0);
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
                shard,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let claim = Claim {
        token,
        items,
        epoch_present,
        next_due,
    };
    Ok((claim, left))
}

impl Queue {
    /// A dedicated connection for one claim loop (see [`ClaimConnection`]).
    pub fn claim_connection(&self) -> ClaimConnection {
        ClaimConnection {
            queue: self.clone(),
            conn: None,
            seen: Default::default(),
            turn: LeaseToken::random().0 as usize,
            heard: 0,
        }
    }

    /// Leases up to `n` ready items to `worker` under one fresh token.
    pub async fn claim(&self, worker: WorkerId, lease: Duration, n: usize) -> Result<Claim> {
        self.claim_connection().claim(worker, lease, n, None).await
    }

    /// Claims on one shard, items of priority ranks up to `max_rank` only.
    #[allow(clippy::too_many_arguments)]
    async fn claim_on(
        &self,
        conn: &mut pool::Connection,
        shard: ShardId,
        worker: WorkerId,
        token: LeaseToken,
        lease: Duration,
        n: usize,
        max_rank: u8,
    ) -> Result<(Claim, u8)> {
        let reply: Vec<String> = self
            .claim_invocation(shard, worker, token, lease, n, max_rank)
            .invoke_async(conn)
            .await
            .context("claim items")?;
        parse_claim(token, shard, reply)
    }

    /// Blocks on the wake-up list for up to `timeout`, then claims, in one round trip: the
    /// claim is pipelined behind the blocking pop, so Redis runs it the moment a wake-up
    /// arrives (or when the wait times out), instead of the worker hearing of the wake-up and
    /// only then asking. A worker that dies while blocked takes its pipeline with it: Redis
    /// drops a closed client's pending commands, so nothing is leased to it.
    #[allow(clippy::too_many_arguments)]
    async fn wait_then_claim_on(
        &self,
        conn: &mut pool::Connection,
        shard: ShardId,
        worker: WorkerId,
        token: LeaseToken,
        lease: Duration,
        n: usize,
        timeout: Duration,
    ) -> Result<(Claim, u8)> {
        let secs = timeout.min(MAX_WAIT).as_secs_f64().max(0.01);
        let invocation = self.claim_invocation(shard, worker, token, lease, n, 2);
        let mut pipe = redis::pipe();
        pipe.cmd("BLPOP")
            .arg(&self.keys.wake)
            .arg(secs)
            .ignore()
            .invoke_script(&invocation);
        match pipe.query_async::<(Vec<String>,)>(&mut *conn).await {
            Ok((reply,)) => parse_claim(token, shard, reply),
            // The script is not cached (Redis restarted): claim the usual way, which loads it.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.claim_on(conn, shard, worker, token, lease, n, 2).await
            }
            Err(e) => Err(e).context("wait for work, then claim"),
        }
    }

    fn claim_invocation(
        &self,
        shard: ShardId,
        worker: WorkerId,
        token: LeaseToken,
        lease: Duration,
        n: usize,
        max_rank: u8,
    ) -> redis::ScriptInvocation<'static> {
        let keys = self.shard_keys(shard);
        let mut inv = scripts::CLAIM.prepare_invoke();
        for key in &keys.rotation {
            inv.key(key);
        }
        inv.key(&keys.lease_deadlines)
            .key(&keys.lease_holders)
            .key(&keys.delayed)
            .key(&keys.delayed_places)
            .key(&keys.epoch)
            .key(&keys.paused);
        wake_key(&mut inv, &keys, shard);
        inv.arg(&keys.prefix)
            .arg(worker.to_string())
            .arg(token.0)
            .arg(millis(lease))
            .arg(n)
            .arg(max_rank);
        inv
    }

    /// Each shard's highest priority rank with items ready, looking only at ranks more
    /// urgent than `below` (a shard with none of those counts as holding rank `below`, which
    /// a round asks it about in turn). The shards are asked at once, each on a connection of
    /// its own (on a cluster, a pipeline may not cross slots): the look is one round trip.
    async fn top_ranks(&self, shards: &[ShardId], below: u8) -> Result<Vec<u8>> {
        let looks = shards.iter().map(|shard| async move {
            let mut conn = self.conn("look at the shards").await?;
            let mut pipe = redis::pipe();
            for rotation in &self.shard_keys(*shard).rotation[..usize::from(below)] {
                pipe.llen(rotation);
            }
            let lengths: Vec<i64> = pipe
                .query_async(&mut conn)
                .await
                .context("look at the shards")?;
            Ok(lengths
                .iter()
                .position(|l| *l > 0)
                .map_or(below, |r| r as u8))
        });
        futures::future::try_join_all(looks).await
    }
}
