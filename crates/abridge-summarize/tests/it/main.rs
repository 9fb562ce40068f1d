//! The summarizer inside the real worker runtime, against real Postgres and Redis and local
//! stand-ins for YouTube and the LLM providers.
//!
//! - `transcripts`: fetching, caching, language preference, every YouTube failure class.
//! - `llm`: both providers, map-reduce with checkpoints, provider failures, keys kept secret.
//! - `egress`: a pool of YouTube proxies, one of them blocked, then all of them.
//! - `fleet`: the Redis token bucket and circuit breaker, fenced checkpoints.
//! - `batch_api`: low-priority items through the providers' batch APIs, and their fallback.
//! - `cost`: answers charged from the price table, a batch's cost budget, a tenant's spend.
//! - `tenants`: the summary cache keeps producer input to its producer; drills are off.

mod batch_api;
mod cost;
mod egress;
mod limits;
mod llm;
mod store_errors;
mod support;
mod tenants;
mod transcripts;
