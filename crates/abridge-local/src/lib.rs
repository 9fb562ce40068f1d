//! Throwaway servers: a `redis-server` and a `postgres` on free ports, with their data in a
//! temporary directory, started and stopped by this process. `abridge up` uses them when no
//! servers are configured; tests and benchmarks use them to own their servers (and to kill,
//! flush and restart them).
//!
//! Children are killed when the owning value is dropped, and also when this process dies
//! (`PR_SET_PDEATHSIG`), so a crashed test run leaves no servers behind.

mod child;
mod cluster;
mod postgres;
mod redis;
mod sentinel;

pub use child::{free_port, spawn_tied};
pub use cluster::LocalRedisCluster;
pub use postgres::LocalPostgres;
pub use redis::LocalRedis;
pub use sentinel::{LocalRedisSentinel, MASTER_NAME};
