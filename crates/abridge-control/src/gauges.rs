//! The fleet gauges: what the queue looks like, read from Redis and Postgres at scrape time.
//!
//! Workers never report these: each would report its own copy (N workers, N series to
//! deduplicate), and a copy set by whichever worker last ran the reconciler goes stale
//! silently. Instead one process, `abridge exporter`, computes them fresh at every scrape
//! with [`fleet_gauges`] and serves them with [`FleetMetrics`] (a
//! [`ScrapeSource`](abridge_telemetry::http::ScrapeSource) for the `/metrics` router). A
//! source that cannot be read drops its gauges from that scrape and reports
//! `abridge_fleet_source_up{source=...} 0`: a missing gauge is honest, a stale one is not.
//!
//! Redis gives depth per priority, delayed retries, active leases, and the last reconcile
//! pass (drift); Postgres gives the oldest ready item, live workers, and items and batches per
//! state.

use std::time::Duration;

use abridge_queue::{Queue, QueueStats, ReconcileMark};
use abridge_store::{FleetSnapshot, Store};
use abridge_telemetry::exposition::Exposition;
use abridge_telemetry::http::ScrapeSource;
use abridge_telemetry::metrics::{self as m, def};
use futures::future::BoxFuture;
use serde::Serialize;

/// One reading of the fleet gauges. `None` where the source could not be read.
#[derive(Clone, Debug, Serialize)]
pub struct FleetGauges {
    pub queue: String,
    pub redis: Option<RedisGauges>,
    pub postgres: Option<FleetSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RedisGauges {
    pub stats: QueueStats,
    /// The last reconcile pass, if one is recorded since Redis last lost its data.
    pub reconciled: Option<ReconcileMark>,
}

/// Reads the fleet gauges of `queue_name`. Never fails: an unreadable source is logged and
/// left out. `session_ttl` decides which workers count as alive.
pub async fn fleet_gauges(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    session_ttl: Duration,
) -> FleetGauges {
    let redis = async {
        let stats = queue.stats().await?;
        let reconciled = queue.last_reconcile().await?;
        Ok::<_, abridge_queue::QueueError>(RedisGauges { stats, reconciled })
    };
    let postgres = store.fleet_snapshot(queue_name, session_ttl);
    let (redis, postgres) = futures::join!(redis, postgres);
    FleetGauges {
        queue: queue_name.to_owned(),
        redis: redis
            .map_err(|e| tracing::warn!(error = %e, "fleet gauges: cannot read redis"))
            .ok(),
        postgres: postgres
            .map_err(|e| tracing::warn!(error = %e, "fleet gauges: cannot read postgres"))
            .ok(),
    }
}

/// The gauges in Prometheus text format.
pub fn render(g: &FleetGauges) -> String {
    let q = g.queue.as_str();
    let mut e = Exposition::new();
    let up = |ok: bool| if ok { 1.0 } else { 0.0 };
    e.family(def(m::FLEET_SOURCE_UP).expect("catalogued"))
        .sample(
            m::FLEET_SOURCE_UP,
            &[("source", "redis")],
            up(g.redis.is_some()),
        )
        .sample(
            m::FLEET_SOURCE_UP,
            &[("source", "postgres")],
            up(g.postgres.is_some()),
        );
    if let Some(r) = &g.redis {
        e.family(def(m::QUEUE_DEPTH).expect("catalogued"));
        for (priority, n) in ["high", "normal", "low"].iter().zip(r.stats.ready) {
            e.sample(
                m::QUEUE_DEPTH,
                &[("queue", q), ("priority", priority)],
                n as f64,
            );
        }
        e.family(def(m::QUEUE_DELAYED).expect("catalogued")).sample(
            m::QUEUE_DELAYED,
            &[("queue", q)],
            r.stats.delayed as f64,
        );
        e.family(def(m::LEASES_ACTIVE).expect("catalogued")).sample(
            m::LEASES_ACTIVE,
            &[("queue", q)],
            r.stats.leased as f64,
        );
        if let Some(mark) = &r.reconciled {
            e.family(def(m::DRIFT).expect("catalogued")).sample(
                m::DRIFT,
                &[("queue", q)],
                mark.drift as f64,
            );
        }
        e.family(def(m::RECONCILE_LAST_RUN).expect("catalogued"))
            .sample(
                m::RECONCILE_LAST_RUN,
                &[("queue", q)],
                r.reconciled.map_or(0.0, |m| m.at_ms as f64 / 1000.0),
            );
    }
    if let Some(p) = &g.postgres {
        e.family(def(m::OLDEST_ITEM_AGE).expect("catalogued"))
            .sample(m::OLDEST_ITEM_AGE, &[("queue", q)], p.oldest_ready_age_s);
        e.family(def(m::WORKERS_ALIVE).expect("catalogued")).sample(
            m::WORKERS_ALIVE,
            &[("queue", q)],
            p.workers_alive as f64,
        );
        let c = &p.items;
        e.family(def(m::BATCH_ITEMS).expect("catalogued"));
        for (state, n) in [
            ("queued", c.queued),
            ("running", c.running),
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
        ] {
            e.sample(m::BATCH_ITEMS, &[("queue", q), ("state", state)], n as f64);
        }
        e.family(def(m::BATCHES_OPEN).expect("catalogued"))
            .sample(
                m::BATCHES_OPEN,
                &[("queue", q), ("state", "pending")],
                p.batches_pending as f64,
            )
            .sample(
                m::BATCHES_OPEN,
                &[("queue", q), ("state", "running")],
                p.batches_running as f64,
            );
    }
    e.finish()
}

/// The fleet gauges as a `/metrics` scrape source.
#[derive(Clone, Debug)]
pub struct FleetMetrics {
    pub store: Store,
    pub queue: Queue,
    pub queue_name: String,
    pub session_ttl: Duration,
}

impl ScrapeSource for FleetMetrics {
    fn render(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            render(
                &fleet_gauges(&self.store, &self.queue, &self.queue_name, self.session_ttl).await,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_source_drops_its_gauges_and_says_so() {
        let g = FleetGauges {
            queue: "default".into(),
            redis: None,
            postgres: Some(FleetSnapshot {
                workers_alive: 3,
                ..FleetSnapshot::default()
            }),
        };
        let text = render(&g);
        assert!(text.contains("abridge_fleet_source_up{source=\"redis\"} 0\n"));
        assert!(text.contains("abridge_fleet_source_up{source=\"postgres\"} 1\n"));
        assert!(text.contains("abridge_workers_alive{queue=\"default\"} 3\n"));
        assert!(!text.contains("abridge_queue_depth"));
        assert!(!text.contains("abridge_redis_postgres_drift"));
    }
}
