//! Webhook deliveries. A batch with a `webhook_url` gets one delivery row when it is created;
//! it becomes due when the batch finishes. Dispatchers (in every `abridge api` process) claim
//! due rows with `FOR UPDATE SKIP LOCKED`, push their next attempt into the future while the
//! request is in flight (no transaction is held across the HTTP call), and record the result
//! fenced by their claim. A claim takes at most one delivery per tenant, and none of a tenant
//! that has one in flight, so one tenant's dead endpoint holds one attempt at a time. A
//! delivery that has failed for the give-up bound is recorded as given up. A retry of the
//! batch's failed items re-arms the row with a new event.

use std::time::Duration;

use abridge_core::BatchId;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Context, Result, Store};

/// A delivery a dispatcher has claimed for one attempt.
#[derive(Clone, Debug)]
pub struct ClaimedWebhook {
    pub batch_id: BatchId,
    pub url: String,
    pub event_id: uuid::Uuid,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// When the current event's first attempt was made (the give-up bound counts from it).
    pub first_attempt_at: DateTime<Utc>,
    /// The claim the result write must present.
    pub claim: uuid::Uuid,
}

/// Where a batch's webhook stands.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryView {
    pub url: String,
    pub event_id: uuid::Uuid,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Set when the delivery gave up (failed for the whole give-up bound).
    pub gave_up_at: Option<DateTime<Utc>>,
    /// An attempt is under way now.
    pub in_flight: bool,
}

impl Store {
    /// Claims up to `limit` due deliveries of finished batches for one attempt each; a claimed
    /// row is not due again for `hold` (longer than a request may take), so a dispatcher that
    /// dies mid-attempt only delays the delivery.
    pub async fn claim_due_webhooks(
        &self,
        limit: i64,
        hold: Duration,
    ) -> Result<Vec<ClaimedWebhook>> {
        let claim = uuid::Uuid::new_v4();
        let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX) as f64;
        let rows = sqlx::query!(
            r#"WITH ready AS (
                 SELECT d.batch_id,
                        row_number() OVER (PARTITION BY b.tenant ORDER BY d.next_attempt_at) AS turn
                 FROM webhook_deliveries d JOIN batches b ON b.id = d.batch_id
                 WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL AND d.next_attempt_at <= now()
                   AND b.status IN ('completed', 'cancelled')
                   AND coalesce(b.tenant, '') NOT IN (
                       SELECT coalesce(ob.tenant, '')
                       FROM webhook_deliveries o JOIN batches ob ON ob.id = o.batch_id
                       WHERE o.claim IS NOT NULL AND o.delivered_at IS NULL
                         AND o.gave_up_at IS NULL AND o.next_attempt_at > now())
             ),
             due AS (
                 -- The due conditions again: they are checked anew on a row another
                 -- dispatcher claimed while this one waited for its lock.
                 SELECT d.batch_id FROM webhook_deliveries d
                 WHERE d.batch_id IN (SELECT batch_id FROM ready WHERE turn = 1)
                   AND d.delivered_at IS NULL AND d.gave_up_at IS NULL
                   AND d.next_attempt_at <= now()
                 ORDER BY d.next_attempt_at
                 LIMIT $1
                 FOR UPDATE OF d SKIP LOCKED
             )
             UPDATE webhook_deliveries d
             SET claim = $2, attempts = d.attempts + 1, last_attempt_at = now(),
                 first_attempt_at = coalesce(d.first_attempt_at, now()),
                 next_attempt_at = now() + $3 * interval '1 millisecond'
             FROM due WHERE d.batch_id = due.batch_id
             RETURNING d.batch_id, d.url, d.event_id, d.attempts,
                       d.first_attempt_at AS "first_attempt_at!""#,
            limit,
            claim,
            hold_ms,
        )
        .fetch_all(&self.pool)
        .await
        .context("claim due webhooks")?;
        Ok(rows
            .into_iter()
            .map(|r| ClaimedWebhook {
                batch_id: BatchId(r.batch_id),
                url: r.url,
                event_id: r.event_id,
                attempt: r.attempts,
                first_attempt_at: r.first_attempt_at,
                claim,
            })
            .collect())
    }

    /// Records a delivered webhook (a 2xx answer). False if the claim was superseded (the
    /// delivery was re-armed meanwhile).
    pub async fn webhook_delivered(&self, w: &ClaimedWebhook, status: u16) -> Result<bool> {
        let n = sqlx::query!(
            "UPDATE webhook_deliveries
             SET delivered_at = now(), last_status = $3, last_error = NULL, claim = NULL
             WHERE batch_id = $1 AND claim = $2",
            w.batch_id.0,
            w.claim,
            i32::from(status),
        )
        .execute(&self.pool)
        .await
        .context("record webhook delivery")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Records a failed attempt and when to try again.
    pub async fn webhook_failed(
        &self,
        w: &ClaimedWebhook,
        status: Option<u16>,
        error: &str,
        retry_in: Duration,
    ) -> Result<()> {
        let retry_ms = i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX) as f64;
        sqlx::query!(
            "UPDATE webhook_deliveries
             SET last_status = $3, last_error = $4, claim = NULL,
                 next_attempt_at = now() + $5 * interval '1 millisecond'
             WHERE batch_id = $1 AND claim = $2",
            w.batch_id.0,
            w.claim,
            status.map(i32::from),
            error,
            retry_ms,
        )
        .execute(&self.pool)
        .await
        .context("record webhook failure")?;
        Ok(())
    }

    /// Records a failed attempt after which the delivery gives up (never tried again, unless a
    /// retry of the batch re-arms it).
    pub async fn webhook_gave_up(
        &self,
        w: &ClaimedWebhook,
        status: Option<u16>,
        error: &str,
    ) -> Result<()> {
        sqlx::query!(
            "UPDATE webhook_deliveries
             SET last_status = $3, last_error = $4, claim = NULL, gave_up_at = now()
             WHERE batch_id = $1 AND claim = $2",
            w.batch_id.0,
            w.claim,
            status.map(i32::from),
            error,
        )
        .execute(&self.pool)
        .await
        .context("record webhook give-up")?;
        Ok(())
    }

    /// The delivery of a batch's webhook, if it has one.
    pub async fn webhook_delivery(&self, batch: BatchId) -> Result<Option<DeliveryView>> {
        let row = sqlx::query!(
            r#"SELECT url, event_id, attempts, last_status, last_error, last_attempt_at,
                      next_attempt_at, delivered_at, gave_up_at,
                      (claim IS NOT NULL AND next_attempt_at > now()) AS "in_flight!"
               FROM webhook_deliveries WHERE batch_id = $1"#,
            batch.0
        )
        .fetch_optional(&self.pool)
        .await
        .context("read webhook delivery")?;
        Ok(row.map(|r| DeliveryView {
            url: r.url,
            event_id: r.event_id,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            last_attempt_at: r.last_attempt_at,
            next_attempt_at: r.next_attempt_at,
            delivered_at: r.delivered_at,
            gave_up_at: r.gave_up_at,
            in_flight: r.in_flight,
        }))
    }
}
