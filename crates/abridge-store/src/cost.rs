//! What model requests cost, per batch, UTC day and model (`llm_spend`). Every answer is
//! charged as it arrives, fenced by nothing: the money is spent whether or not the attempt
//! that asked still holds its item.

use abridge_core::BatchId;
use chrono::NaiveDate;

use crate::{Context, Result, Store};

/// One model answer to charge to a batch, or a correction of an earlier estimate (no request,
/// tokens and cost that may be negative).
#[derive(Clone, Debug)]
pub struct Charge<'a> {
    pub batch: BatchId,
    pub tenant: Option<&'a str>,
    pub provider: &'a str,
    pub model: &'a str,
    /// 1 for an answer, 0 for a correction.
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// `None` when the model has no price.
    pub cost_usd: Option<f64>,
}

/// What a batch has spent so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Spend {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// US dollars, of the models with a price.
    pub cost_usd: f64,
    /// Whether some requests went to a model without a price (their cost is not in `cost_usd`).
    pub unpriced: bool,
}

/// A tenant's spend on one UTC day.
#[derive(Clone, Debug, PartialEq)]
pub struct DaySpend {
    pub day: NaiveDate,
    pub spend: Spend,
}

impl Store {
    /// Adds one answer to its batch's row for today.
    pub async fn charge(&self, c: &Charge<'_>) -> Result<()> {
        sqlx::query!(
            "INSERT INTO llm_spend (batch_id, day, provider, model, tenant, requests,
                                    input_tokens, output_tokens, cost_usd, unpriced_requests)
             VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, $3, $4, $5::int8, $6, $7,
                     coalesce($8::float8, 0)::numeric,
                     CASE WHEN $8::float8 IS NULL THEN $5::int8 ELSE 0 END)
             ON CONFLICT (batch_id, day, provider, model) DO UPDATE SET
                 requests = llm_spend.requests + excluded.requests,
                 input_tokens = llm_spend.input_tokens + excluded.input_tokens,
                 output_tokens = llm_spend.output_tokens + excluded.output_tokens,
                 cost_usd = llm_spend.cost_usd + excluded.cost_usd,
                 unpriced_requests = llm_spend.unpriced_requests + excluded.unpriced_requests",
            c.batch.0,
            c.provider,
            c.model,
            c.tenant,
            c.requests,
            c.input_tokens,
            c.output_tokens,
            c.cost_usd,
        )
        .execute(&self.pool)
        .await
        .context("charge a model answer")?;
        Ok(())
    }

    /// What each of these batches has spent (batches without spend are left out).
    pub async fn batch_spend(&self, ids: &[BatchId]) -> Result<Vec<(BatchId, Spend)>> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|b| b.0).collect();
        let rows = sqlx::query!(
            r#"SELECT batch_id AS "batch_id!", sum(requests)::int8 AS "requests!",
                      sum(input_tokens)::int8 AS "input_tokens!",
                      sum(output_tokens)::int8 AS "output_tokens!",
                      sum(cost_usd)::float8 AS "cost_usd!",
                      sum(unpriced_requests) > 0 AS "unpriced!"
               FROM llm_spend WHERE batch_id = ANY($1) GROUP BY batch_id"#,
            &ids
        )
        .fetch_all(&self.pool)
        .await
        .context("read batch spend")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    BatchId(r.batch_id),
                    Spend {
                        requests: r.requests,
                        input_tokens: r.input_tokens,
                        output_tokens: r.output_tokens,
                        cost_usd: r.cost_usd,
                        unpriced: r.unpriced,
                    },
                )
            })
            .collect())
    }

    /// A tenant's spend per UTC day over the last `days` days, newest first (`None`: the
    /// operator's own batches).
    pub async fn tenant_spend(&self, tenant: Option<&str>, days: u32) -> Result<Vec<DaySpend>> {
        let rows = sqlx::query!(
            r#"SELECT day AS "day!", sum(requests)::int8 AS "requests!",
                      sum(input_tokens)::int8 AS "input_tokens!",
                      sum(output_tokens)::int8 AS "output_tokens!",
                      sum(cost_usd)::float8 AS "cost_usd!",
                      sum(unpriced_requests) > 0 AS "unpriced!"
               FROM llm_spend
               WHERE tenant IS NOT DISTINCT FROM $1
                 AND day > (now() AT TIME ZONE 'UTC')::date - $2::int4
               GROUP BY day ORDER BY day DESC"#,
            tenant,
            i32::try_from(days).unwrap_or(i32::MAX),
        )
        .fetch_all(&self.pool)
        .await
        .context("read tenant spend")?;
        Ok(rows
            .into_iter()
            .map(|r| DaySpend {
                day: r.day,
                spend: Spend {
                    requests: r.requests,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost_usd: r.cost_usd,
                    unpriced: r.unpriced,
                },
            })
            .collect())
    }
}
