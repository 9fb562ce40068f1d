//! Per-item stage checkpoints: what earlier attempts finished, loaded once per attempt, and
//! fenced writes of what this attempt finishes.

use std::collections::HashMap;
use std::sync::Arc;

use abridge_core::{ErrorKind, ItemError, ItemId, LeaseToken, WorkerId};
use abridge_processor::Fence;
use abridge_store::Store;

pub struct Checkpoints<'a> {
    store: &'a Store,
    item: ItemId,
    token: LeaseToken,
    /// The claiming worker, under which a refused write is recorded.
    worker: WorkerId,
    /// Checkpoint writes are fenced on the item running under this claim: asked first.
    fence: Arc<dyn Fence>,
    saved: HashMap<String, serde_json::Value>,
}

impl<'a> Checkpoints<'a> {
    pub async fn load(
        store: &'a Store,
        item: ItemId,
        token: LeaseToken,
        worker: WorkerId,
        fence: Arc<dyn Fence>,
    ) -> Result<Self, ItemError> {
        let saved = store
            .checkpoints(item)
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        Ok(Self {
            store,
            item,
            token,
            worker,
            fence,
            saved,
        })
    }

    pub fn get(&self, stage: &str) -> Option<&serde_json::Value> {
        self.saved.get(stage)
    }

    /// Whether an earlier attempt submitted the item to a provider batch whose answer has not
    /// been collected (`llm::through_batch` keeps `batch:RUN` stages).
    pub fn waits_on_provider_batch(&self) -> bool {
        self.saved.iter().any(|(stage, data)| {
            stage.starts_with("batch:") && data["batch_id"].is_string() && data["fallback"] != true
        })
    }

    /// Shows where the item stands in its `result_meta` while it waits (fenced like `put`).
    pub async fn show(&mut self, meta: serde_json::Value) -> Result<(), ItemError> {
        self.ensure_started("stage").await?;
        let written = self
            .store
            .write_stage_meta(self.item, self.token, &meta, self.worker)
            .await
            .map_err(store_error)?;
        if !written {
            return Err(ItemError::transient(
                ErrorKind::from_static("lease_lost"),
                "stage refused: this attempt no longer holds the item",
            ));
        }
        Ok(())
    }

    async fn ensure_started(&self, stage: &str) -> Result<(), ItemError> {
        self.fence.hold(&format!("checkpoint {stage}")).await
    }

    /// Saves a stage's result under this attempt's lease. A refused write means the lease is
    /// gone: the attempt stops (its outcome would be refused too).
    pub async fn put(&mut self, stage: &str, data: serde_json::Value) -> Result<(), ItemError> {
        self.ensure_started(stage).await?;
        let written = self
            .store
            .write_checkpoint(self.item, self.token, stage, &data, self.worker)
            .await
            .map_err(store_error)?;
        if !written {
            return Err(ItemError::transient(
                ErrorKind::from_static("lease_lost"),
                format!("checkpoint {stage} refused: this attempt no longer holds the item"),
            ));
        }
        self.saved.insert(stage.to_owned(), data);
        Ok(())
    }
}

/// A Postgres failure inside the summarizer, by its class: Postgres away or busy is worth
/// another attempt later; a statement Postgres refuses for good (a constraint, a schema that
/// does not match) would be refused on every attempt, so the item fails now.
pub fn store_error(e: abridge_store::StoreError) -> ItemError {
    if e.is_unavailable() {
        ItemError::transient(
            ErrorKind::from_static("database_unavailable"),
            e.to_string(),
        )
    } else if e.is_contention() {
        ItemError::transient(ErrorKind::from_static("database_busy"), e.to_string())
    } else {
        ItemError::permanent(ErrorKind::from_static("database_error"), e.to_string())
    }
}

/// A Redis failure inside the summarizer, by its class: Redis away is worth another attempt
/// later; an answer the code cannot read (a script or a reply out of step with this build)
/// would fail again on every attempt, so the item fails now.
pub fn queue_error(e: abridge_queue::QueueError) -> ItemError {
    if e.is_unavailable() {
        ItemError::transient(ErrorKind::from_static("redis_unavailable"), e.to_string())
    } else {
        ItemError::permanent(ErrorKind::from_static("redis_error"), e.to_string())
    }
}
