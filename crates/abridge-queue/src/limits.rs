//! Fleet-wide limits and shared state: per-tenant caps (`limits.lua`), request budgets
//! (`budget.lua`), circuit breakers (`breaker_pass.lua`, `breaker_report.lua`), tenants' daily
//! tokens, and what the YouTube client shares across workers.

use std::time::Duration;

use crate::{Context, Queue, Result, millis, scripts};

impl Queue {
    /// Records a tenant's weight and limit on items in flight where claims read them, so they
    /// apply to its queued batches at once.
    pub async fn set_limits(
        &self,
        tenant: &str,
        weight: i32,
        max_in_flight: Option<i32>,
    ) -> Result<()> {
        self.refresh_shards().await?;
        let mut conn = self.conn("set a tenant's limits").await?;
        for shard in self.active_shards() {
            let keys = self.shard_keys(shard);
            scripts::LIMITS
                .key(format!("{}weights", keys.prefix))
                .key(format!("{}caps", keys.prefix))
                .arg(tenant)
                .arg(weight)
                .arg(self.shard_cap(max_in_flight))
                .invoke_async::<()>(&mut conn)
                .await
                .context("set a tenant's limits")?;
        }
        Ok(())
    }

    /// Whether a server was found to refuse structured answers for a model (`what`), fleet-wide.
    pub async fn text_only(&self, what: &str) -> Result<bool> {
        let mut conn = self.conn("read a server's answer format").await?;
        let found: bool = redis::cmd("EXISTS")
            .arg(self.keys.text_only(what))
            .query_async(&mut conn)
            .await
            .context("read a server's answer format")?;
        Ok(found)
    }

    /// Remembers for `ttl`, fleet-wide, that a server refuses structured answers for a model.
    pub async fn set_text_only(&self, what: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("remember a server's answer format").await?;
        redis::cmd("SET")
            .arg(self.keys.text_only(what))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("remember a server's answer format")
    }

    /// The YouTube session the fleet shares (JSON), if one is kept.
    pub async fn youtube_session(&self) -> Result<Option<String>> {
        let mut conn = self.conn("read the youtube session").await?;
        redis::cmd("GET")
            .arg(self.keys.youtube_session())
            .query_async(&mut conn)
            .await
            .context("read the youtube session")
    }

    /// Keeps the YouTube session for `ttl` (it is replaced as soon as YouTube refuses it).
    pub async fn set_youtube_session(&self, session: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("keep the youtube session").await?;
        redis::cmd("SET")
            .arg(self.keys.youtube_session())
            .arg(session)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("keep the youtube session")
    }

    /// Quarantines a YouTube proxy for `ttl`, fleet-wide.
    pub async fn quarantine_egress(&self, egress: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn("quarantine a proxy").await?;
        redis::cmd("SET")
            .arg(self.keys.egress_quarantine(egress))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .context("quarantine a proxy")
    }

    /// For each proxy, how much longer it is quarantined (`None`: it is not).
    pub async fn egress_quarantines(&self, egress: &[&str]) -> Result<Vec<Option<Duration>>> {
        let mut conn = self.conn("read proxies' quarantine").await?;
        let mut pipe = redis::pipe();
        for e in egress {
            pipe.cmd("PTTL").arg(self.keys.egress_quarantine(e));
        }
        let ttls: Vec<i64> = pipe
            .query_async(&mut conn)
            .await
            .context("read proxies' quarantine")?;
        Ok(ttls
            .into_iter()
            .map(|ms| u64::try_from(ms).ok().map(Duration::from_millis))
            .collect())
    }

    /// LLM tokens `tenant`'s items have spent on `day` (`YYYYMMDD`, UTC), by this fleet's
    /// count (lost with Redis: the budget is then counted afresh).
    pub async fn tenant_tokens(&self, tenant: &str, day: &str) -> Result<i64> {
        let mut conn = self.conn("read a tenant's tokens").await?;
        let n: Option<i64> = redis::cmd("GET")
            .arg(self.keys.tenant_tokens(tenant, day))
            .query_async(&mut conn)
            .await
            .context("read a tenant's tokens")?;
        Ok(n.unwrap_or(0))
    }

    /// Counts `tokens` more against `tenant`'s `day`; the counter outlives its day by one.
    pub async fn add_tenant_tokens(&self, tenant: &str, day: &str, tokens: u64) -> Result<()> {
        let key = self.keys.tenant_tokens(tenant, day);
        let mut conn = self.conn("count a tenant's tokens").await?;
        redis::pipe()
            .cmd("INCRBY")
            .arg(&key)
            .arg(tokens)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(2 * 24 * 3600)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .context("count a tenant's tokens")
    }

    /// Takes `cost` from the fleet-wide token bucket `name`, which refills at `per_second` up
    /// to `capacity`, for `owner` (a tenant; `None` for batches of none): while another owner
    /// waits, an owner past its equal share waits too (budget.lua). `None`: taken.
    /// `Some(wait)`: not yet; ask again after `wait`.
    pub async fn take_budget(
        &self,
        name: &str,
        per_second: f64,
        capacity: f64,
        cost: f64,
        owner: Option<&str>,
    ) -> Result<Option<Duration>> {
        let mut conn = self.conn("take from budget").await?;
        let bucket = self.keys.budget(name);
        let wait_ms: i64 = scripts::BUDGET
            .prepare_invoke()
            .key(&bucket)
            .key(format!("{bucket}:owners"))
            .key(format!("{bucket}:waiting"))
            .arg(per_second)
            .arg(capacity)
            .arg(cost)
            .arg(owner.unwrap_or("~"))
            .invoke_async(&mut conn)
            .await
            .context("take from budget")?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// Asks the fleet-wide circuit breaker `name` whether a request may go now. `None`: go
    /// (closed, or this caller holds the half-open probe for `probe`). `Some(wait)`: open.
    pub async fn breaker_pass(&self, name: &str, probe: Duration) -> Result<Option<Duration>> {
        let mut conn = self.conn("ask circuit breaker").await?;
        let wait_ms: i64 = scripts::BREAKER_PASS
            .prepare_invoke()
            .key(self.keys.breaker(name))
            .arg(millis(probe).max(1))
            .invoke_async(&mut conn)
            .await
            .context("ask circuit breaker")?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// Records a request's outcome with the breaker `name`: a success closes it; `threshold`
    /// failures in a row (each within `decay` of the last) open it for `open_for`. Returns true
    /// if this failure opened it.
    pub async fn breaker_report(
        &self,
        name: &str,
        success: bool,
        threshold: u32,
        open_for: Duration,
        decay: Duration,
    ) -> Result<bool> {
        let mut conn = self.conn("report to circuit breaker").await?;
        let opened: i64 = scripts::BREAKER_REPORT
            .prepare_invoke()
            .key(self.keys.breaker(name))
            .arg(if success { 1 } else { 0 })
            .arg(threshold.max(1))
            .arg(millis(open_for).max(1))
            .arg(millis(decay).max(1))
            .invoke_async(&mut conn)
            .await
            .context("report to circuit breaker")?;
        Ok(opened == 1)
    }
}
