//! Pause and resume: the queues an operator paused. A paused queue starts no new item; the
//! claim script reads Redis's copy of this table (kept by `abridge_control` and put back by
//! the reconciler), written with the row's generation so that an older state never overwrites
//! a newer one.

use chrono::{DateTime, Utc};

use crate::{Context, Result, Store};

/// A queue's pause as Postgres holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseRow {
    /// Since when the queue is paused; `None` while it runs.
    pub paused_at: Option<DateTime<Utc>>,
    /// Moved on by every pause and resume (0: never paused).
    pub generation: i64,
}

impl Store {
    /// Pauses `queue` (a paused queue keeps its start) and returns the new state.
    pub async fn pause_queue(&self, queue: &str, by: &str) -> Result<PauseRow> {
        let row = sqlx::query!(
            r#"INSERT INTO queue_pauses (queue, paused_at, paused_by) VALUES ($1, now(), $2)
               ON CONFLICT (queue) DO UPDATE
                   SET paused_at = coalesce(queue_pauses.paused_at, now()),
                       paused_by = coalesce(queue_pauses.paused_by, EXCLUDED.paused_by),
                       generation = queue_pauses.generation + 1
               RETURNING paused_at, generation"#,
            queue,
            by
        )
        .fetch_one(&self.pool)
        .await
        .context("pause the queue")?;
        Ok(PauseRow {
            paused_at: row.paused_at,
            generation: row.generation,
        })
    }

    /// Resumes `queue` and returns the new state.
    pub async fn resume_queue(&self, queue: &str) -> Result<PauseRow> {
        let generation = sqlx::query_scalar!(
            r#"INSERT INTO queue_pauses (queue, paused_at, paused_by) VALUES ($1, NULL, NULL)
               ON CONFLICT (queue) DO UPDATE
                   SET paused_at = NULL, paused_by = NULL,
                       generation = queue_pauses.generation + 1
               RETURNING generation"#,
            queue
        )
        .fetch_one(&self.pool)
        .await
        .context("resume the queue")?;
        Ok(PauseRow {
            paused_at: None,
            generation,
        })
    }

    /// The queue's pause as Postgres holds it.
    pub async fn queue_pause(&self, queue: &str) -> Result<PauseRow> {
        let row = sqlx::query!(
            "SELECT paused_at, generation FROM queue_pauses WHERE queue = $1",
            queue
        )
        .fetch_optional(&self.pool)
        .await
        .context("read whether the queue is paused")?;
        Ok(row.map_or(
            PauseRow {
                paused_at: None,
                generation: 0,
            },
            |r| PauseRow {
                paused_at: r.paused_at,
                generation: r.generation,
            },
        ))
    }
}
