//! Pause and resume: the queues an operator paused. A paused queue starts no new item; the
//! claim script reads Redis's copy of this table (kept by `abridge_control` and put back by
//! the reconciler).

use chrono::{DateTime, Utc};

use crate::{Context, Result, Store};

impl Store {
    /// Pauses `queue` (again: no change) and returns since when it is paused.
    pub async fn pause_queue(&self, queue: &str, by: &str) -> Result<DateTime<Utc>> {
        let since = sqlx::query_scalar!(
            r#"INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2)
               ON CONFLICT (queue) DO UPDATE SET queue = EXCLUDED.queue
               RETURNING paused_at AS "paused_at!""#,
            queue,
            by
        )
        .fetch_one(&self.pool)
        .await
        .context("pause the queue")?;
        Ok(since)
    }

    /// Resumes `queue`; false if it was not paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let done = sqlx::query!("DELETE FROM queue_pauses WHERE queue = $1", queue)
            .execute(&self.pool)
            .await
            .context("resume the queue")?;
        Ok(done.rows_affected() > 0)
    }

    /// Since when `queue` is paused; `None` while it runs.
    pub async fn queue_paused(&self, queue: &str) -> Result<Option<DateTime<Utc>>> {
        let since =
            sqlx::query_scalar!("SELECT paused_at FROM queue_pauses WHERE queue = $1", queue)
                .fetch_optional(&self.pool)
                .await
                .context("read whether the queue is paused")?;
        Ok(since)
    }
}
