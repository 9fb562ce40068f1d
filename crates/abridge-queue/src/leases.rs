//! Leases after the claim: renewal (`renew.lua`), acknowledgement (`ack.lua`), putting items
//! back (`requeue.lua`), and taking leases from expired or buried holders (`reap.lua`,
//! `release_worker.lua`).

use std::time::Duration;

use abridge_core::{BatchId, ItemId, LeaseToken, Priority, WorkerId};
use chrono::{DateTime, Utc};

use crate::shards::wake_key;
use crate::{
    Context, Keys, Queue, QueueError, Result, ShardId, millis, parse_batch, parse_item,
    parse_position, parse_rank, scripts,
};

/// A lease a worker holds, with what Redis needs to renew, re-create or requeue it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRef {
    pub item: ItemId,
    pub token: LeaseToken,
    pub batch: BatchId,
    pub priority: Priority,
    pub position: i32,
    /// Where it was claimed: its renewal, acknowledgement and retry go there.
    pub shard: ShardId,
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

fn push_lease(inv: &mut redis::ScriptInvocation<'_>, l: &LeaseRef) {
    inv.arg(l.item.0)
        .arg(l.token.0)
        .arg(l.batch.to_string())
        .arg(l.priority.rank())
        .arg(l.position);
}

/// `items` in groups by shard, each item with its index in `items`, shards in first-seen order.
fn by_shard<T>(items: &[T], shard: impl Fn(&T) -> ShardId) -> Vec<(ShardId, Vec<(usize, &T)>)> {
    let mut groups: Vec<(ShardId, Vec<(usize, &T)>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let s = shard(item);
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, group)) => group.push((i, item)),
            None => groups.push((s, vec![(i, item)])),
        }
    }
    groups
}

fn parse_taken(reply: &[String], shard: ShardId, context: &'static str) -> Result<Vec<TakenLease>> {
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
                    shard,
                },
                worker: f[2].parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

impl Queue {
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
        let mut out = vec![Renewal::Lost; leases.len()];
        for (shard, group) in by_shard(leases, |l| l.shard) {
            let keys = self.shard_keys(shard);
            let mut inv = scripts::RENEW.prepare_invoke();
            inv.key(&keys.lease_deadlines)
                .key(&keys.lease_holders)
                .key(&keys.delayed)
                .key(&keys.taken)
                .arg(&keys.prefix)
                .arg(worker.to_string())
                .arg(millis(lease));
            for (_, l) in &group {
                push_lease(&mut inv, l);
            }
            let codes: Vec<i64> = inv.invoke_async(&mut conn).await.context("renew leases")?;
            if codes.len() != group.len() {
                return Err(QueueError::Reply {
                    context: "renew leases",
                    detail: format!("{} codes for {} leases", codes.len(), group.len()),
                });
            }
            for ((i, _), c) in group.iter().zip(codes) {
                out[*i] = match c {
                    1 => Renewal::Renewed,
                    2 => Renewal::Cancelled,
                    3 => Renewal::Recreated,
                    _ => Renewal::Lost,
                };
            }
        }
        Ok(out)
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
        let mut groups = by_shard(acks, |(l, _)| l.shard);
        if groups.is_empty() {
            groups.push((ShardId::FIRST, Vec::new()));
        }
        // The shards at once, each on a connection of its own (a pipeline may not cross
        // slots on a cluster). Ready counts are summed: a batch with none ready on the shards
        // asked may still have some elsewhere, which the caller's check in Postgres settles.
        let each = groups.into_iter().map(|(shard, group)| {
            let group: Vec<&(LeaseRef, AfterAck)> = group.into_iter().map(|(_, a)| a).collect();
            self.ack_on(shard, group, report)
        });
        for (removed, ready) in futures::future::try_join_all(each).await? {
            acked.removed += removed;
            for (slot, v) in acked.ready.iter_mut().zip(ready) {
                *slot += v;
            }
        }
        Ok(acked)
    }

    /// [`Queue::ack`] on one shard: leases removed, and the ready counts of `report`.
    async fn ack_on(
        &self,
        shard: ShardId,
        group: Vec<&(LeaseRef, AfterAck)>,
        report: &[BatchId],
    ) -> Result<(i64, Vec<i64>)> {
        let mut conn = self.conn("acknowledge leases").await?;
        let keys = self.shard_keys(shard);
        let chunks: Vec<&[&(LeaseRef, AfterAck)]> = if group.is_empty() {
            vec![&[]]
        } else {
            group.chunks(5_000).collect()
        };
        let last = chunks.len() - 1;
        let (mut removed, mut ready) = (0, Vec::new());
        for (n, chunk) in chunks.into_iter().enumerate() {
            // Ready counts are read once, after the last chunk.
            let reported: &[BatchId] = if n == last { report } else { &[] };
            let mut inv = scripts::ACK.prepare_invoke();
            inv.key(&keys.lease_deadlines)
                .key(&keys.lease_holders)
                .key(&keys.delayed)
                .key(&keys.delayed_places);
            wake_key(&mut inv, &keys, shard);
            inv.arg(&keys.prefix).arg(reported.len());
            for b in reported {
                inv.arg(b.to_string());
            }
            let mut readied = 0;
            for (l, after) in chunk {
                push_lease(&mut inv, l);
                if *after == AfterAck::Ready {
                    readied += 1;
                }
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
            removed += reply.first().copied().unwrap_or(0);
            if n == last {
                ready = reply.into_iter().skip(1).collect();
            }
            self.wake_for(&mut conn, shard, readied).await?;
        }
        Ok((removed, ready))
    }

    /// Puts items back where Postgres says they belong (ready, or delayed until `due`).
    /// Items someone holds a lease on, and items of cancelled batches, are skipped.
    pub async fn requeue(&self, placements: &[Placement]) -> Result<i64> {
        self.ensure_recorded().await?;
        let mut conn = self.conn("requeue items").await?;
        let mut placed = 0;
        for (shard, group) in by_shard(placements, |p| self.placement_shard(p.batch, p.position)) {
            let keys = self.shard_keys(shard);
            for chunk in group.chunks(5_000) {
                let mut inv = scripts::REQUEUE.prepare_invoke();
                inv.key(&keys.lease_deadlines)
                    .key(&keys.delayed)
                    .key(&keys.delayed_places);
                wake_key(&mut inv, &keys, shard);
                inv.arg(&keys.prefix);
                for (_, p) in chunk {
                    inv.arg(p.item.0)
                        .arg(p.batch.to_string())
                        .arg(p.priority.rank())
                        .arg(p.position)
                        .arg(p.due.map(|d| d.timestamp_millis().max(0)).unwrap_or(0));
                }
                let n = inv
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .context("requeue items")?;
                self.wake_for(&mut conn, shard, n).await?;
                placed += n;
            }
        }
        Ok(placed)
    }

    /// Removes up to `max` expired leases of each shard and returns them; of several
    /// reapers, exactly one gets each. A shard that cannot be reached is left for the next
    /// pass: what the others gave is returned all the same (those leases are gone from Redis).
    pub async fn take_expired(&self, max: usize) -> Result<Vec<TakenLease>> {
        self.take_from_every_shard("take expired leases", |keys| {
            let mut inv = scripts::REAP.prepare_invoke();
            inv.key(&keys.lease_deadlines)
                .key(&keys.lease_holders)
                .key(&keys.taken)
                .arg(max);
            inv
        })
        .await
    }

    /// Removes every lease `worker` holds and returns them (as [`Queue::take_expired`], a
    /// shard that cannot be reached is left for the next call).
    pub async fn take_worker_leases(&self, worker: WorkerId) -> Result<Vec<TakenLease>> {
        self.take_from_every_shard("take a worker's leases", |keys| {
            let mut inv = scripts::RELEASE_WORKER.prepare_invoke();
            inv.key(&keys.lease_deadlines)
                .key(&keys.lease_holders)
                .key(&keys.taken)
                .arg(worker.to_string());
            inv
        })
        .await
    }

    /// Runs a script that takes leases on every shard; fails only if no shard answered.
    async fn take_from_every_shard(
        &self,
        context: &'static str,
        invocation: impl Fn(&Keys) -> redis::ScriptInvocation<'static>,
    ) -> Result<Vec<TakenLease>> {
        let mut conn = self.conn(context).await?;
        let mut taken = Vec::new();
        let mut failure = None;
        let mut answered = 0;
        for shard in self.active_shards() {
            let reply: Result<Vec<String>> = invocation(&self.shard_keys(shard))
                .invoke_async(&mut conn)
                .await
                .context(context);
            match reply {
                Ok(reply) => {
                    answered += 1;
                    taken.extend(parse_taken(&reply, shard, context)?);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if answered == 0 => Err(e),
            _ => Ok(taken),
        }
    }
}
