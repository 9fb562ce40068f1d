//! The API end to end, in process: real Redis and Postgres (a fresh database and key prefix
//! per test), real workers (`abridge_worker::run`), the API on port 0, and a real HTTP client.
//!
//! - `create`: creation, normalisation and dedup, idempotent retries, lists and pagination.
//! - `bad_input`: every kind of bad request gets a 4xx with a message that names the problem.
//! - `progress`: SSE progress until completion, across replicas, reconnects with Last-Event-ID.
//! - `lifecycle`: cancel mid-batch, retry failed items.
//! - `export`: the ZIP, unzipped and checked file by file.
//! - `tenancy`: another tenant's batch is a 404 everywhere; revoked tokens.
//! - `retention`: a pruned batch is a 404 like an unknown one; a tenant's own retention.
//! - `roles`: drills off, the operator's policy per tenant, tenant and operator views.
//! - `webhooks`: signed deliveries retried until a 2xx; SSRF refusal.
//! - `dashboard`: the web dashboard in headless Chromium (WebDriver): live progress, cancel,
//!   retry, summaries, workers, chart.
//! - `health`: `/healthz`, `/readyz`, `/openapi.json`.

mod bad_input;
mod create;
mod dashboard;
mod export;
mod health;
mod lifecycle;
mod lists;
mod progress;
mod retention;
mod roles;
mod search;
mod support;
mod tenancy;
mod webhooks;
