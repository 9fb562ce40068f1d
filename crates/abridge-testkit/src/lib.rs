//! Test support. Every test gets real servers and its own slice of them:
//!
//! - Redis and Postgres come from `ABRIDGE_TEST_REDIS_URL` / `ABRIDGE_TEST_DATABASE_URL` when
//!   set, else from throwaway servers this test process starts once (on free ports, run as the
//!   `postgres` user when root).
//! - Each [`TestEnv`] gets a fresh database (cloned from a migrated template) and a fresh Redis
//!   key prefix, so tests run in parallel without seeing each other.
//! - Fault tests that kill, flush or restart a server ask for [`TestEnv::with_own_servers`].
//! - [`processor`] turns a closure into a `Processor` for in-process workers.
//! - [`Proc`] runs `abridge` processes and can SIGKILL, SIGSTOP, SIGCONT and SIGTERM them.

mod poll;
mod process;
mod processors;

use std::sync::{Arc, OnceLock};

use abridge_core::Settings;
use abridge_core::settings::{Secret, SettingsSource};
use abridge_local::{LocalPostgres, LocalRedis};
use abridge_processor::Processor;
use abridge_queue::Queue;
use abridge_store::Store;
use abridge_worker::Worker;

pub use poll::{eventually, until};
pub use process::Proc;
pub use processors::{FnProcessor, ok, processor, succeeded};

/// The template every test database is cloned from: migrated once per server.
const TEMPLATE_DB: &str = "abridge_test_template";

struct SharedServers {
    redis_url: String,
    /// A URL to the server's `postgres` database, for creating test databases.
    admin_url: String,
    /// The databases live on a server someone else owns: drop them after each test.
    external_pg: bool,
    _redis: Option<LocalRedis>,
    _postgres: Option<LocalPostgres>,
}

fn shared() -> &'static SharedServers {
    static SHARED: OnceLock<SharedServers> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (redis_url, redis) = match std::env::var("ABRIDGE_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let r = LocalRedis::start().expect("start a throwaway redis-server for tests");
                (r.url(), Some(r))
            }
        };
        let (admin_url, external_pg, postgres) = match std::env::var("ABRIDGE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => (url, true, None),
            _ => {
                let p = LocalPostgres::start(true).expect("start a throwaway postgres for tests");
                (p.url("postgres"), false, Some(p))
            }
        };
        SharedServers {
            redis_url,
            admin_url,
            external_pg,
            _redis: redis,
            _postgres: postgres,
        }
    })
}

/// Servers owned by one test, which it may kill, flush or restart.
pub struct OwnServers {
    pub redis: LocalRedis,
    pub postgres: LocalPostgres,
}

/// One test's isolated environment.
pub struct TestEnv {
    pub database_url: Secret,
    pub redis_url: Secret,
    /// This test's Redis key prefix.
    pub redis_prefix: String,
    admin_url: Secret,
    db_name: String,
    drop_db: bool,
    own: Option<OwnServers>,
}

impl TestEnv {
    /// A fresh database and Redis prefix on the shared servers.
    pub async fn new() -> Self {
        let s = shared();
        Self::on(&s.admin_url, &s.redis_url, s.external_pg, None).await
    }

    /// Servers of its own (for tests that kill, flush or restart them).
    pub async fn with_own_servers() -> Self {
        let (redis, postgres) = tokio::task::spawn_blocking(|| {
            (
                LocalRedis::start().expect("start redis-server"),
                LocalPostgres::start(true).expect("start postgres"),
            )
        })
        .await
        .expect("start servers");
        let admin = postgres.url("postgres");
        let redis_url = redis.url();
        Self::on(
            &admin,
            &redis_url,
            false,
            Some(OwnServers { redis, postgres }),
        )
        .await
    }

    async fn on(
        admin_url: &str,
        redis_url: &str,
        external_pg: bool,
        own: Option<OwnServers>,
    ) -> Self {
        let admin = Secret::new(admin_url);
        ensure_template(&admin).await;
        let db_name = format!("t_{}", uuid::Uuid::new_v4().simple());
        abridge_store::admin::create_database(&admin, &db_name, Some(TEMPLATE_DB))
            .await
            .expect("create test database");
        let database_url = admin_url
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{db_name}"))
            .expect("admin url has a database");
        Self {
            database_url: Secret::new(database_url),
            redis_url: Secret::new(redis_url),
            redis_prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            admin_url: admin,
            db_name,
            drop_db: external_pg,
            own,
        }
    }

    /// The servers this test owns. Panics for a test on the shared servers.
    pub fn own(&mut self) -> &mut OwnServers {
        self.own
            .as_mut()
            .expect("this TestEnv was made with with_own_servers()")
    }

    /// `ABRIDGE_*` variables pointing at this environment, with timings short enough for
    /// tests (3 s leases, 2 s session TTL, fast retries) and the `noop` summarizer (the
    /// fleet's default, `extractive`, would fetch from YouTube) with drills on (the operator's
    /// switch that offers it), then `overrides`.
    pub fn vars(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("ABRIDGE_DATABASE_URL", self.database_url.expose()),
            ("ABRIDGE_REDIS_URL", self.redis_url.expose()),
            ("ABRIDGE_REDIS_PREFIX", self.redis_prefix.as_str()),
            ("ABRIDGE_LEASE_MS", "3000"),
            ("ABRIDGE_HEARTBEAT_MS", "500"),
            ("ABRIDGE_SESSION_TTL_MS", "2000"),
            ("ABRIDGE_REAP_MS", "200"),
            ("ABRIDGE_RECONCILE_MS", "1000"),
            ("ABRIDGE_RETRY_BASE_MS", "50"),
            ("ABRIDGE_RETRY_MAX_MS", "400"),
            ("ABRIDGE_SHUTDOWN_GRACE_MS", "5000"),
            ("ABRIDGE_SUMMARIZER", "noop"),
            ("ABRIDGE_DRILLS", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in overrides {
            vars.retain(|(name, _)| name != k);
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        vars
    }

    pub fn settings(&self, overrides: &[(&str, &str)]) -> Settings {
        let vars = self.vars(overrides);
        let src = SettingsSource::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Settings::from_source(&src).expect("test settings are valid")
    }

    pub fn store(&self) -> Store {
        Store::connect_lazy(&self.database_url, 8).expect("test database url")
    }

    pub fn queue(&self, settings: &Settings) -> Queue {
        Queue::connect(&self.redis_url, &settings.redis_prefix, &settings.queue, 8)
            .expect("test redis url")
            .with_shards(settings.queue_shards)
    }

    /// A plain connection to the test's Redis, for what a test does behind the queue's back
    /// (a lost key, a killed subscriber, an older build's names).
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.expose())
            .expect("test redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis")
    }

    /// The test settings, changed in code: a misspelt field does not compile, where a
    /// misspelt variable in [`TestEnv::settings`] fails at run time.
    pub fn settings_with(&self, change: impl FnOnce(&mut Settings)) -> Settings {
        let mut settings = self.settings(&[]);
        change(&mut settings);
        settings
    }

    /// An in-process worker with `processor` and the test settings plus `overrides`.
    pub fn worker(&self, processor: Arc<dyn Processor>, overrides: &[(&str, &str)]) -> Worker {
        self.worker_from(processor, self.settings(overrides))
    }

    /// An in-process worker with `processor` and the test settings, changed in code.
    pub fn worker_with(
        &self,
        processor: Arc<dyn Processor>,
        change: impl FnOnce(&mut Settings),
    ) -> Worker {
        self.worker_from(processor, self.settings_with(change))
    }

    fn worker_from(&self, processor: Arc<dyn Processor>, settings: Settings) -> Worker {
        Worker {
            queue: self.queue(&settings),
            store: self.store(),
            settings: Arc::new(settings),
            processor,
        }
    }
}

impl TestEnv {
    /// For fault drills: records every transition of an item into a terminal state, so a
    /// test can prove each item reached one exactly once. (Test-only SQL; the product's SQL
    /// all lives in abridge-store.)
    pub async fn install_terminal_audit(&self) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(
            "CREATE TABLE terminal_audit (item_id bigint NOT NULL, status text NOT NULL,
                                          worker_id uuid, at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE FUNCTION audit_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO terminal_audit (item_id, status, worker_id) VALUES (NEW.id, NEW.status, NEW.worker_id);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER audit_terminal AFTER UPDATE OF status ON items FOR EACH ROW
                 WHEN (OLD.status IN ('queued', 'running') AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
                 EXECUTE FUNCTION audit_terminal();",
        )
        .execute(&mut conn)
        .await
        .expect("install terminal audit");
    }

    /// How many times each item entered a terminal state (see `install_terminal_audit`).
    pub async fn terminal_writes(&self) -> std::collections::HashMap<i64, i64> {
        let mut conn = self.connect().await;
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT item_id, count(*) FROM terminal_audit GROUP BY item_id",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read terminal audit")
        .into_iter()
        .collect()
    }

    async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(self.database_url.expose())
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.drop_db {
            return; // throwaway servers vanish with their data
        }
        let admin = self.admin_url.clone();
        let name = self.db_name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(abridge_store::admin::drop_database(&admin, &name));
            }
        })
        .join();
    }
}

/// Creates and migrates the template database once per server.
async fn ensure_template(admin: &Secret) {
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let key = admin.expose().to_owned();
    if DONE.lock().unwrap().contains(&key) {
        return;
    }
    let _guard = INIT.lock().await;
    if DONE.lock().unwrap().contains(&key) {
        return;
    }
    // A fresh template each run: an old one may predate the current migrations.
    abridge_store::admin::drop_database(admin, TEMPLATE_DB)
        .await
        .expect("drop old template database");
    abridge_store::admin::create_database(admin, TEMPLATE_DB, None)
        .await
        .expect("create template database");
    let url = key
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{TEMPLATE_DB}"))
        .expect("admin url");
    let store = Store::connect_lazy(&Secret::new(url), 1).expect("template url");
    store.migrate().await.expect("migrate template database");
    store.close().await;
    DONE.lock().unwrap().push(key);
}
