//! The queue's own state: the pause (`pause.lua`), the epoch marker that tells a lost Redis,
//! and the reconciler's turn and record.

use std::collections::HashMap;
use std::time::Duration;

use abridge_core::WorkerId;
use chrono::Utc;
use redis::AsyncCommands;

use crate::shards::wake_key;
use crate::{Context, Queue, Result, millis, scripts};

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

impl Queue {
    /// Writes the copy of the queue's pause that claim.lua obeys, as of Postgres's
    /// `generation`; false if Redis already held a newer one (this writer read an older state).
    /// Resuming wakes an idle worker.
    pub async fn set_paused(&self, paused: bool, generation: i64) -> Result<bool> {
        self.refresh_shards().await?;
        let mut conn = self.conn("pause or resume").await?;
        let mut written_everywhere = true;
        // The first shard last: its call wakes a worker, which should find every shard resumed.
        for shard in self.active_shards().into_iter().rev() {
            let keys = self.shard_keys(shard);
            let mut inv = scripts::PAUSE.prepare_invoke();
            inv.key(&keys.paused).key(&keys.pause_generation);
            wake_key(&mut inv, &keys, shard);
            let written: i64 = inv
                .arg(generation)
                .arg(i64::from(paused))
                .invoke_async(&mut conn)
                .await
                .context("pause or resume")?;
            written_everywhere &= written == 1;
        }
        Ok(written_everywhere)
    }

    /// Sets each shard's epoch marker; true if one was missing (Redis lost that shard's
    /// data, or first run).
    pub async fn mark_epoch(&self) -> Result<bool> {
        let mut conn = self.conn("mark epoch").await?;
        let mut missing = false;
        for shard in self.active_shards() {
            let set: Option<String> = redis::cmd("SET")
                .arg(&self.shard_keys(shard).epoch)
                .arg(Utc::now().timestamp_millis())
                .arg("NX")
                .query_async(&mut conn)
                .await
                .context("mark epoch")?;
            missing |= set.is_some();
        }
        Ok(missing)
    }

    /// Moves what a build before the key renaming left under its names to today's
    /// (`adopt_keys.lua`); the reconciler runs it each pass, so a fleet upgraded while old
    /// processes still write converges. Returns how many entries it moved (0 once done).
    pub async fn adopt_old_keys(&self) -> Result<u64> {
        let mut conn = self.conn("adopt old keys").await?;
        let old = |name: &str| format!("{}{name}", self.keys.prefix);
        let moved: u64 = scripts::ADOPT_KEYS
            .key(old("rr:0"))
            .key(old("rr:1"))
            .key(old("rr:2"))
            .key(&self.keys.rotation[0])
            .key(&self.keys.rotation[1])
            .key(&self.keys.rotation[2])
            .key(old("leases"))
            .key(&self.keys.lease_deadlines)
            .key(old("lease"))
            .key(&self.keys.lease_holders)
            .key(old("dref"))
            .key(&self.keys.delayed_places)
            .arg(&self.keys.prefix)
            .invoke_async(&mut conn)
            .await
            .context("adopt old keys")?;
        Ok(moved)
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
}
