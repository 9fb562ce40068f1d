//! API tenants, the operator's policy for each, and bearer tokens. Only a token's SHA-256 is
//! stored; the token itself is shown once, when it is made.

use abridge_core::{Allowed, Backend, BatchId, Priority};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Context, Result, Store, StoreError};

/// A tenant as `abridge token create` reports it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    /// Signs this tenant's webhooks.
    pub webhook_secret: String,
    /// True when this call made the tenant.
    pub created: bool,
}

/// What the operator lets a tenant do (`abridge tenant set`). `None` is the default: the
/// fleet's configured backend and model only, no other limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TenantPolicy {
    /// Backends the tenant's batches may name.
    pub backends: Option<Vec<Backend>>,
    /// Models the tenant's batches may name.
    pub models: Option<Vec<String>>,
    /// LLM tokens (in + out) its items may spend per UTC day.
    pub daily_tokens: Option<i64>,
    /// Its share of the fleet against other tenants' (1 = an equal share).
    pub weight: i32,
    /// Most of its items in flight at once across the fleet.
    pub max_in_flight: Option<i32>,
    /// Most of its items queued at once.
    pub max_queued: Option<i64>,
    /// Most batches it may create per minute.
    pub max_batches_per_minute: Option<i32>,
    /// The highest priority its batches may ask for (priorities are strict across tenants).
    pub max_priority: Option<Priority>,
    /// Days its finished batches are kept; `None`: the fleet's `retention_days`.
    #[serde(default)]
    pub retention_days: Option<i32>,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            backends: None,
            models: None,
            daily_tokens: None,
            weight: 1,
            max_in_flight: None,
            max_queued: None,
            max_batches_per_minute: None,
            max_priority: None,
            retention_days: None,
        }
    }
}

impl TenantPolicy {
    /// What the tenant's batches may ask for; `default` is the fleet's backend.
    pub fn allowed(&self, default: Backend) -> Allowed {
        Allowed {
            backends: Some(self.backends.clone().unwrap_or_else(|| vec![default])),
            models: Some(self.models.clone().unwrap_or_default()),
        }
    }
}

/// A tenant as `abridge tenant show/list` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct TenantView {
    pub name: String,
    #[serde(flatten)]
    pub policy: TenantPolicy,
    pub created_at: DateTime<Utc>,
}

/// Whom a bearer token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOwner {
    /// The operator: every tenant's batches, the fleet's figures and workers.
    Operator,
    Tenant {
        name: String,
        policy: TenantPolicy,
    },
}

/// A tenant's batches created within a recent window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentBatches {
    pub count: i64,
    /// Seconds until the oldest of them leaves the window (at least 1).
    pub retry_after_s: u64,
}

/// A token as `abridge token list` shows it (never the token itself).
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub id: uuid::Uuid,
    /// `None` for an operator token.
    pub tenant: Option<String>,
    pub operator: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// The tenant `name`, made with `new_secret` as its webhook secret if it did not exist.
    pub async fn ensure_tenant(&self, name: &str, new_secret: &str) -> Result<Tenant> {
        let created = sqlx::query!(
            "INSERT INTO tenants (name, webhook_secret) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            name,
            new_secret
        )
        .execute(&self.pool)
        .await
        .context("create tenant")?
        .rows_affected()
            == 1;
        let webhook_secret =
            sqlx::query_scalar!("SELECT webhook_secret FROM tenants WHERE name = $1", name)
                .fetch_one(&self.pool)
                .await
                .context("read tenant")?;
        Ok(Tenant {
            name: name.to_owned(),
            webhook_secret,
            created,
        })
    }

    /// Stores a token of `tenant`, or an operator token when `tenant` is `None`.
    pub async fn insert_token(
        &self,
        id: uuid::Uuid,
        tenant: Option<&str>,
        token_hash: &[u8],
    ) -> Result<()> {
        sqlx::query!(
            "INSERT INTO api_tokens (id, tenant, operator, token_hash) VALUES ($1, $2, $3, $4)",
            id,
            tenant,
            tenant.is_none(),
            token_hash
        )
        .execute(&self.pool)
        .await
        .context("store api token")?;
        Ok(())
    }

    /// Whom an unrevoked token with this hash speaks for (with the tenant's policy).
    pub async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>> {
        let row = sqlx::query!(
            r#"SELECT k.operator, t.name AS "name?", t.backends, t.models, t.daily_tokens,
                      t.weight AS "weight?", t.max_in_flight, t.max_queued, t.max_batches_per_minute,
                      t.max_priority AS "max_priority: Priority", t.retention_days
               FROM api_tokens k LEFT JOIN tenants t ON t.name = k.tenant
               WHERE k.token_hash = $1 AND k.revoked_at IS NULL"#,
            token_hash
        )
        .fetch_optional(&self.pool)
        .await
        .context("look up api token")?;
        let Some(r) = row else { return Ok(None) };
        if r.operator {
            return Ok(Some(TokenOwner::Operator));
        }
        let Some(name) = r.name else { return Ok(None) };
        Ok(Some(TokenOwner::Tenant {
            name,
            policy: TenantPolicy {
                backends: r
                    .backends
                    .map(|b| parse_backends(&b, "look up api token"))
                    .transpose()?,
                models: r.models,
                daily_tokens: r.daily_tokens,
                weight: r.weight.unwrap_or(1),
                max_in_flight: r.max_in_flight,
                max_queued: r.max_queued,
                max_batches_per_minute: r.max_batches_per_minute,
                max_priority: r.max_priority,
                retention_days: r.retention_days,
            },
        }))
    }

    /// The policy of tenant `name`, if it exists.
    pub async fn tenant(&self, name: &str) -> Result<Option<TenantView>> {
        Ok(self.tenants(Some(name)).await?.pop())
    }

    /// Tenants by name, optionally only `name`.
    pub async fn tenants(&self, name: Option<&str>) -> Result<Vec<TenantView>> {
        let rows = sqlx::query!(
            r#"SELECT name, backends, models, daily_tokens, weight, max_in_flight, max_queued,
                      max_batches_per_minute, max_priority AS "max_priority: Priority",
                      retention_days, created_at
               FROM tenants WHERE ($1::text IS NULL OR name = $1) ORDER BY name"#,
            name
        )
        .fetch_all(&self.pool)
        .await
        .context("read tenants")?;
        rows.into_iter()
            .map(|r| {
                Ok(TenantView {
                    name: r.name,
                    policy: TenantPolicy {
                        backends: r
                            .backends
                            .map(|b| parse_backends(&b, "read tenants"))
                            .transpose()?,
                        models: r.models,
                        daily_tokens: r.daily_tokens,
                        weight: r.weight,
                        max_in_flight: r.max_in_flight,
                        max_queued: r.max_queued,
                        max_batches_per_minute: r.max_batches_per_minute,
                        max_priority: r.max_priority,
                        retention_days: r.retention_days,
                    },
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    /// Replaces tenant `name`'s policy; false if there is no such tenant.
    pub async fn set_tenant_policy(&self, name: &str, p: &TenantPolicy) -> Result<bool> {
        let backends: Option<Vec<String>> = p
            .backends
            .as_ref()
            .map(|b| b.iter().map(|b| b.as_str().to_owned()).collect());
        let n = sqlx::query!(
            "UPDATE tenants SET backends = $2, models = $3, daily_tokens = $4, weight = $5,
                    max_in_flight = $6, max_queued = $7, max_batches_per_minute = $8,
                    max_priority = $9, retention_days = $10
             WHERE name = $1",
            name,
            backends.as_deref(),
            p.models.as_deref(),
            p.daily_tokens,
            p.weight,
            p.max_in_flight,
            p.max_queued,
            p.max_batches_per_minute,
            p.max_priority.map(|p| p.as_str()),
            p.retention_days,
        )
        .execute(&self.pool)
        .await
        .context("set tenant policy")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Revokes a token by id or by hash; false if no unrevoked token matched.
    pub async fn revoke_token(
        &self,
        id: Option<uuid::Uuid>,
        token_hash: Option<&[u8]>,
    ) -> Result<bool> {
        let n = sqlx::query!(
            "UPDATE api_tokens SET revoked_at = now()
             WHERE (id = $1 OR token_hash = $2) AND revoked_at IS NULL",
            id,
            token_hash
        )
        .execute(&self.pool)
        .await
        .context("revoke api token")?
        .rows_affected();
        Ok(n > 0)
    }

    /// Tokens, oldest first, optionally of one tenant.
    pub async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenView>> {
        let rows = sqlx::query!(
            "SELECT id, tenant, operator, created_at, revoked_at FROM api_tokens
             WHERE ($1::text IS NULL OR tenant = $1) ORDER BY created_at, id",
            tenant
        )
        .fetch_all(&self.pool)
        .await
        .context("list api tokens")?;
        Ok(rows
            .into_iter()
            .map(|r| TokenView {
                id: r.id,
                tenant: r.tenant,
                operator: r.operator,
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect())
    }

    /// How many batches `tenant` created in the last `window_s` seconds.
    pub async fn tenant_batches_within(
        &self,
        tenant: &str,
        window_s: i32,
    ) -> Result<RecentBatches> {
        let r = sqlx::query!(
            r#"SELECT count(*) AS "count!",
                      ceil(extract(epoch FROM (min(created_at) + make_interval(secs => $2) - now())))::bigint AS wait_s
               FROM batches
               WHERE tenant = $1 AND created_at > now() - make_interval(secs => $2)"#,
            tenant,
            f64::from(window_s),
        )
        .fetch_one(&self.pool)
        .await
        .context("count a tenant's recent batches")?;
        Ok(RecentBatches {
            count: r.count,
            retry_after_s: r.wait_s.unwrap_or(1).max(1) as u64,
        })
    }

    /// How many of `tenant`'s items are queued (ready or waiting to retry).
    pub async fn tenant_queued_items(&self, tenant: &str) -> Result<i64> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE b.tenant = $1 AND b.status IN ('pending', 'running') AND i.status = 'queued'"#,
            tenant
        )
        .fetch_one(&self.pool)
        .await
        .context("count a tenant's queued items")
    }

    /// The webhook secret of the tenant that owns `batch`.
    pub async fn webhook_secret_for(&self, batch: BatchId) -> Result<Option<String>> {
        sqlx::query_scalar!(
            "SELECT t.webhook_secret FROM batches b JOIN tenants t ON t.name = b.tenant
             WHERE b.id = $1",
            batch.0
        )
        .fetch_optional(&self.pool)
        .await
        .context("read webhook secret")
    }
}

/// Backends as stored; a name this build does not know is an error naming it, never read as
/// allowing more or less than the operator set.
fn parse_backends(names: &[String], context: &'static str) -> Result<Vec<Backend>> {
    names
        .iter()
        .map(|n| {
            n.parse().map_err(|e: String| StoreError::Query {
                context,
                cause: sqlx::Error::Decode(e.into()),
            })
        })
        .collect()
}
