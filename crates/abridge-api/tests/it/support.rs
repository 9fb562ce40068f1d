//! An API server, workers and a client on one test's servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abridge_api::{ApiSettings, ApiState};
use abridge_core::BatchId;
use abridge_core::settings::SettingsSource;
use abridge_store::Store;
use abridge_summarize::noop::Noop;
use abridge_testkit::TestEnv;
use abridge_worker::{Processor, RunReport};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One API server on port 0.
pub struct Server {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(env: &TestEnv, overrides: &[(&str, &str)]) -> Self {
        let vars = env.vars(overrides);
        let src = SettingsSource::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let settings = env.settings(overrides);
        let api = ApiSettings::from_source(&src).expect("api settings");
        let state = ApiState::new(env.store(), env.queue(&settings), &settings, api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(abridge_api::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server; it must shut down promptly even with event streams open.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("api stops within 10 s")
                .expect("api task")
                .expect("api serve");
        }
    }
}

/// A worker running in this process until stopped.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<RunReport>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

/// The API, its servers, and workers started on demand.
pub struct App {
    pub env: TestEnv,
    pub server: Server,
    pub store: Store,
    pub http: reqwest::Client,
    pub workers: Vec<Running>,
}

impl App {
    /// The API with webhooks to local receivers allowed, then `overrides`.
    pub async fn start(overrides: &[(&str, &str)]) -> Self {
        let env = TestEnv::new().await;
        let mut all = vec![
            ("ABRIDGE_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("ABRIDGE_WEBHOOK_POLL_MS", "100"),
            ("ABRIDGE_WEBHOOK_RETRY_BASE_MS", "50"),
            ("ABRIDGE_WEBHOOK_RETRY_MAX_MS", "200"),
        ];
        all.extend_from_slice(overrides);
        let server = Server::start(&env, &all).await;
        let store = env.store();
        Self {
            env,
            server,
            store,
            http: crate::support::http(),
            workers: Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    /// A new token for `tenant` (made like `abridge token create` does).
    pub async fn token(&self, tenant: &str) -> String {
        abridge_api::auth::create_token(&self.store, Some(tenant))
            .await
            .expect("create token")
            .token
    }

    /// A new operator token (made like `abridge token create --operator` does).
    pub async fn operator_token(&self) -> String {
        abridge_api::auth::create_token(&self.store, None)
            .await
            .expect("create operator token")
            .token
    }

    /// Starts an in-process worker with the `noop` summarizer.
    pub fn start_worker(&mut self, concurrency: usize) {
        self.start_worker_with(
            Arc::new(Noop {
                delay: Duration::ZERO,
            }),
            concurrency,
        );
    }

    pub fn start_worker_with(&mut self, processor: Arc<dyn Processor>, concurrency: usize) {
        self.start_worker_configured(processor, concurrency, &[]);
    }

    /// A worker with settings `overrides` (such as `ABRIDGE_START_AFTER_MS`).
    pub fn start_worker_configured(
        &mut self,
        processor: Arc<dyn Processor>,
        concurrency: usize,
        overrides: &[(&str, &str)],
    ) {
        let worker = self.env.worker(processor, overrides);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(abridge_worker::run(worker, concurrency, async move {
            let _ = rx.await;
        }));
        self.workers.push(Running {
            stop: Some(tx),
            handle,
        });
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a batch and returns its id (asserting 201).
    pub async fn create(&self, token: &str, body: Value) -> BatchId {
        let (status, v) = self.post(token, "/v1/batches", body).await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().parse().unwrap()
    }

    /// Polls `GET /v1/batches/{id}` until it is completed or cancelled.
    pub async fn wait_finished(&self, token: &str, id: BatchId, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, v) = self.get(token, &format!("/v1/batches/{id}")).await;
            assert_eq!(status, 200, "{v}");
            if matches!(v["status"].as_str(), Some("completed" | "cancelled")) {
                return v;
            }
            assert!(Instant::now() < deadline, "batch not finished: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        for w in self.workers {
            w.stop().await;
        }
        self.server.stop().await;
    }
}

/// `n` distinct video ids, `prefix` (1 char) + 10 digits.
pub fn video_ids(prefix: char, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:010}")).collect()
}

pub use abridge_testkit::eventually;

pub use abridge_testkit::FnProcessor;

/// Server-Sent Events read from a response, as (event name, id, data).
pub struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    pub async fn open(
        app_base: &str,
        token: &str,
        id: BatchId,
        last_event_id: Option<&str>,
    ) -> (u16, Option<Self>) {
        let mut request = crate::support::http()
            .get(format!("{app_base}/v1/batches/{id}/events"))
            .bearer_auth(token);
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        (
            status,
            Some(Self {
                response,
                buffer: String::new(),
            }),
        )
    }

    /// The next event with data, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<(String, Option<String>, Value)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(e) = abridge_api::client::parse_event(&block) {
                    return Some((e.name, e.id, serde_json::from_str(&e.data).unwrap()));
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every remaining event until the stream ends (bounded by `timeout`).
    pub async fn collect(&mut self, timeout: Duration) -> Vec<(String, Option<String>, Value)> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return events,
                Err(_) => panic!("event stream did not end in {timeout:?}; got {events:?}"),
            }
        }
    }
}

/// An HTTP client (with rustls's ring provider installed, as the API's own clients do).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
