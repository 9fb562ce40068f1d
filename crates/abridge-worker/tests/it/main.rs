//! The worker runtime against real Redis and Postgres, in process. Each module covers one of
//! the queue's promises; the end-to-end fault drills with real processes live in `tests/e2e`.

mod cancel;
mod concurrency;
mod connections;
mod decoding;
mod engines;
mod failures;
mod fairness;
mod fencing;
mod leases;
mod order;
mod partitions;
mod plans;
mod reaper;
mod reconcile;
mod retention;
mod shutdown;
mod staging;
mod support;
