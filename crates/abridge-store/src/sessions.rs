//! Worker sessions. A session is registered when a worker starts, heartbeats while it runs,
//! and ends either closed by its worker (`shutdown`) or buried by a reaper (`dead: ...`).
//! Liveness is judged on Postgres's clock alone (`now()` on both sides), so skew between
//! worker hosts cannot make a live worker look dead; and only over time Postgres was up: a
//! heartbeat's age counts from the server's start at the earliest, so a stopped Postgres
//! makes no session look dead when it comes back (the liveness rule, ARCHITECTURE.md).

use std::time::Duration;

use abridge_core::WorkerId;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Context, Result, Store};

#[derive(Clone, Debug)]
pub struct NewSession<'a> {
    pub id: WorkerId,
    pub queue: &'a str,
    pub host: &'a str,
    pub pid: u32,
    pub concurrency: usize,
    pub version: &'a str,
}

/// A live session as `abridge stats` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub id: WorkerId,
    pub host: String,
    pub pid: i32,
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Seconds since the last heartbeat, on Postgres's clock.
    pub heartbeat_age_s: f64,
    /// Items this worker holds now. Postgres counts the items it marked running;
    /// `abridge_control::stats` replaces this with the worker's leases in Redis.
    pub items_in_hand: i64,
}

impl Store {
    pub async fn register_session(&self, s: NewSession<'_>) -> Result<()> {
        sqlx::query!(
            "INSERT INTO worker_sessions (id, queue, host, pid, concurrency, version)
             VALUES ($1, $2, $3, $4, $5, $6)",
            s.id.0,
            s.queue,
            s.host,
            i32::try_from(s.pid).unwrap_or(i32::MAX),
            i32::try_from(s.concurrency).unwrap_or(i32::MAX),
            s.version,
        )
        .execute(&self.pool)
        .await
        .context("register worker session")?;
        Ok(())
    }

    /// Records a heartbeat. `false` means the session was buried (declared dead) meanwhile:
    /// the worker must give up everything it holds.
    pub async fn heartbeat_session(&self, id: WorkerId) -> Result<bool> {
        let n = sqlx::query!(
            "UPDATE worker_sessions SET last_seen_at = now() WHERE id = $1 AND stopped_at IS NULL",
            id.0
        )
        .execute(&self.fast_pool)
        .await
        .context("heartbeat worker session")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Closes a session for good.
    pub async fn close_session(&self, id: WorkerId, reason: &str) -> Result<()> {
        sqlx::query!(
            "UPDATE worker_sessions SET stopped_at = now(), stop_reason = $2
             WHERE id = $1 AND stopped_at IS NULL",
            id.0,
            reason
        )
        .execute(&self.pool)
        .await
        .context("close worker session")?;
        Ok(())
    }

    /// Buries every session of `queue` with no heartbeat for `ttl` while Postgres was up, and
    /// returns them. Each is a compare-and-set, so of several reapers exactly one buries a
    /// given session. The caller must itself have seen Postgres for `ttl` (`reaper`).
    pub async fn bury_dead_sessions(&self, queue: &str, ttl: Duration) -> Result<Vec<WorkerId>> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let ids = sqlx::query_scalar!(
            "UPDATE worker_sessions
             SET stopped_at = now(),
                 stop_reason = 'dead: no heartbeat for ' || round(extract(epoch FROM now() - last_seen_at), 1) || 's'
             WHERE queue = $1 AND stopped_at IS NULL
               AND greatest(last_seen_at, pg_postmaster_start_time())
                   < now() - $2 * interval '1 millisecond'
             RETURNING id",
            queue,
            ttl_ms as f64,
        )
        .fetch_all(&self.pool)
        .await
        .context("bury dead worker sessions")?;
        Ok(ids.into_iter().map(WorkerId).collect())
    }

    /// Sessions of `queue` that have not stopped, with their items in hand.
    pub async fn live_sessions(&self, queue: &str) -> Result<Vec<SessionView>> {
        let rows = sqlx::query!(
            r#"SELECT s.id, s.host, s.pid, s.concurrency, s.started_at, s.last_seen_at,
                      extract(epoch FROM now() - s.last_seen_at)::float8 AS "age!",
                      (SELECT count(*) FROM items i WHERE i.worker_id = s.id AND i.status = 'running') AS "in_hand!"
               FROM worker_sessions s
               WHERE s.queue = $1 AND s.stopped_at IS NULL
               ORDER BY s.started_at"#,
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("list live worker sessions")?;
        Ok(rows
            .into_iter()
            .map(|r| SessionView {
                id: WorkerId(r.id),
                host: r.host,
                pid: r.pid,
                concurrency: r.concurrency,
                started_at: r.started_at,
                last_seen_at: r.last_seen_at,
                heartbeat_age_s: r.age,
                items_in_hand: r.in_hand,
            })
            .collect())
    }

    /// How a session ended, if it did (tests and `abridge stats`).
    pub async fn session_stop_reason(&self, id: WorkerId) -> Result<Option<String>> {
        Ok(sqlx::query_scalar!(
            "SELECT stop_reason FROM worker_sessions WHERE id = $1",
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .context("read worker session")?
        .flatten())
    }
}
