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
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(10_000) {
            let mut inv = scripts::HELD.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(&self.keys.delayed)
                .key(&self.keys.lease_deadlines)
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
        pipe.hvals(&self.keys.delayed_places)
            .hvals(&self.keys.lease_holders);
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
            .hvals(&self.keys.lease_holders)
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
            .arg(&self.keys.lease_deadlines)
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
            .key(&self.keys.lease_deadlines)
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
}
