//! What Redis holds, for the reconciler and the fleet's figures (`held.lua`, `stats.lua`).

use std::collections::HashMap;

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use redis::AsyncCommands;

use crate::{Context, Queue, QueueError, Result, Share, scripts};

/// Queue depth as Redis sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Ready items per priority rank (high, normal, low).
    pub ready: [i64; 3],
    pub leased: i64,
    pub delayed: i64,
    pub batches_in_rotation: i64,
}

impl Queue {
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
        let mut out = vec![false; items.len()];
        for shard in self.active_shards() {
            let keys = self.shard_keys(shard);
            let mut at = 0;
            for chunk in items.chunks(10_000) {
                let mut inv = scripts::HELD.prepare_invoke();
                inv.key(keys.rotation_for(priority))
                    .key(keys.ready(batch))
                    .key(&keys.delayed)
                    .key(&keys.lease_deadlines)
                    .arg(batch.to_string());
                self.share_args(&mut inv, &keys, priority, share);
                for id in chunk {
                    inv.arg(id.0);
                }
                let flags: Vec<i64> = inv
                    .invoke_async(&mut conn)
                    .await
                    .context("check held items")?;
                for (slot, f) in out[at..].iter_mut().zip(flags) {
                    *slot |= f == 1;
                }
                at += chunk.len();
            }
        }
        Ok(out)
    }

    /// Items Redis holds per batch: ready, delayed and leased. In a steady state this equals
    /// the batch's queued plus running items in Postgres.
    pub async fn held_counts(&self, batches: &[BatchId]) -> Result<HashMap<BatchId, i64>> {
        let mut conn = self.conn("count held items").await?;
        let mut counts: HashMap<BatchId, i64> = batches.iter().map(|b| (*b, 0)).collect();
        for shard in self.active_shards() {
            let keys = self.shard_keys(shard);
            let mut pipe = redis::pipe();
            for b in batches {
                pipe.zcard(keys.ready(*b));
            }
            pipe.hvals(&keys.delayed_places).hvals(&keys.lease_holders);
            let mut replies: Vec<redis::Value> = pipe
                .query_async(&mut conn)
                .await
                .context("count held items")?;
            let leases = strings(replies.pop()); // "token|worker|batch|rank|position"
            let delayed = strings(replies.pop()); // "batch|rank|position"
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
                *counts.entry(*b).or_insert(0) += n;
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
        }
        Ok(counts)
    }

    /// Leases held per worker: the items each worker has in hand right now.
    pub async fn leases_by_worker(&self) -> Result<HashMap<WorkerId, i64>> {
        self.refresh_shards_if_stale().await?;
        let mut conn = self.conn("count leases per worker").await?;
        let mut counts = HashMap::new();
        for shard in self.active_shards() {
            let values: Vec<String> = conn
                .hvals(&self.shard_keys(shard).lease_holders)
                .await
                .context("count leases per worker")?;
            for v in values {
                // "token|worker|batch|rank|position"
                if let Some(w) = v.split('|').nth(1).and_then(|w| w.parse::<WorkerId>().ok()) {
                    *counts.entry(w).or_insert(0) += 1;
                }
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
        let mut out = vec![false; items.len()];
        for shard in self.active_shards() {
            let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                .arg(&self.shard_keys(shard).lease_deadlines)
                .arg(&ids)
                .query_async(&mut conn)
                .await
                .context("check leases")?;
            for (slot, s) in out.iter_mut().zip(scores) {
                *slot |= s.is_some();
            }
        }
        Ok(out)
    }

    /// Queue depth over every shard.
    pub async fn stats(&self) -> Result<QueueStats> {
        self.refresh_shards_if_stale().await?;
        let mut conn = self.conn("read queue stats").await?;
        let mut stats = QueueStats::default();
        for shard in self.active_shards() {
            let keys = self.shard_keys(shard);
            let mut inv = scripts::STATS.prepare_invoke();
            for key in &keys.rotation {
                inv.key(key);
            }
            let v: Vec<i64> = inv
                .key(&keys.lease_deadlines)
                .key(&keys.delayed)
                .arg(&keys.prefix)
                .invoke_async(&mut conn)
                .await
                .context("read queue stats")?;
            if v.len() != 6 {
                return Err(QueueError::Reply {
                    context: "read queue stats",
                    detail: format!("{} values", v.len()),
                });
            }
            for (total, ready) in stats.ready.iter_mut().zip(&v) {
                *total += ready;
            }
            stats.leased += v[3];
            stats.delayed += v[4];
            stats.batches_in_rotation += v[5];
        }
        Ok(stats)
    }
}

/// The strings of an array reply (`HVALS`), or none.
fn strings(v: Option<redis::Value>) -> Vec<String> {
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
}
