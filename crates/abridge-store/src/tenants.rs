//! API tenants and their bearer tokens. Only a token's SHA-256 is stored; the token itself is
//! shown once, when it is made.

use abridge_core::BatchId;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Context, Result, Store};

/// A tenant as `abridge token create` reports it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    /// Signs this tenant's webhooks.
    pub webhook_secret: String,
    /// True when this call made the tenant.
    pub created: bool,
}

/// A token as `abridge token list` shows it (never the token itself).
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub id: uuid::Uuid,
    pub tenant: String,
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

    pub async fn insert_token(
        &self,
        id: uuid::Uuid,
        tenant: &str,
        token_hash: &[u8],
    ) -> Result<()> {
        sqlx::query!(
            "INSERT INTO api_tokens (id, tenant, token_hash) VALUES ($1, $2, $3)",
            id,
            tenant,
            token_hash
        )
        .execute(&self.pool)
        .await
        .context("store api token")?;
        Ok(())
    }

    /// The tenant of an unrevoked token with this hash.
    pub async fn tenant_for_token(&self, token_hash: &[u8]) -> Result<Option<String>> {
        sqlx::query_scalar!(
            "SELECT tenant FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
            token_hash
        )
        .fetch_optional(&self.pool)
        .await
        .context("look up api token")
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
            "SELECT id, tenant, created_at, revoked_at FROM api_tokens
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
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect())
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
