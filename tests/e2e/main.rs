//! End-to-end tests: real `abridge` processes against real Redis and Postgres servers.
//!
//! - `bench`: `abridge bench`, small: every scenario runs and reports its figures.
//! - `cli`: the commands' input, output and errors.
//! - `contract`: the API against its OpenAPI document: the document validated, the server
//!   fuzzed with Schemathesis (`--checks all`, fixed seed), no finding allowed.
//! - `api`: `abridge api` as a process, driven by `abridge enqueue/status --api` and the
//!   token commands.
//! - `faults`: the fault drills of the fleet core (SIGKILL, SIGSTOP/SIGCONT, FLUSHALL,
//!   Postgres and Redis restarts, SIGTERM, a poison item). Each asserts that every item
//!   reached a terminal state exactly once, that batch counts equal the rows, and that
//!   nothing was lost.
//! - `operating`: `/metrics` on workers and on the exporter (checked by promtool and against
//!   the metric catalogue), JSON logs, `abridge top`.
//! - `deploy`: docker-compose.yml, the Dockerfile, Prometheus rules and alerts, the Grafana
//!   dashboard and the Kubernetes manifests, checked without Docker or a cluster.
//! - `traces`: trace propagation from enqueue to outcome write, with an in-test OTLP receiver.
//! - `results`: how a person gets the summaries: `abridge up`'s data directory, sign-in URL and
//!   results folder with its exit codes, `enqueue --wait`, and `items`/`show`/`export`, local
//!   and through the API.
//! - `summaries`: real summaries from workers against local YouTube and LLM stand-ins: every
//!   URL form, every failure's `error_kind`, and caches that stop refetching.

mod api;
mod bench;
mod cli;
mod contract;
mod deploy;
mod faults;
mod operating;
mod results;
mod summaries;
mod support;
mod traces;
