//! The queue's scripts on a real Redis, without workers or Postgres: each test runs the
//! scripts in the order a race would, so `cargo test -p abridge-queue` after editing a
//! script tests it.

mod claim;
mod leases;
mod notices;
mod shards;
mod upgrade;
