//! End-to-end tests: real `abridge` processes against real Redis and Postgres servers.
//!
//! - `cli`: the commands' input, output and errors.
//! - `api`: `abridge api` as a process, driven by `abridge enqueue/status --api` and the
//!   token commands.
//! - `faults`: the fault drills of the fleet core (SIGKILL, SIGSTOP/SIGCONT, FLUSHALL,
//!   Postgres and Redis restarts, SIGTERM, a poison item). Each asserts that every item
//!   reached a terminal state exactly once, that batch counts equal the rows, and that
//!   nothing was lost.
//! - `summaries`: real summaries from workers against local YouTube and LLM stand-ins: every
//!   URL form, every failure's `error_kind`, and caches that stop refetching.

mod api;
mod cli;
mod faults;
mod summaries;
mod support;
