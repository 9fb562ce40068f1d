//! A fleet of `abridge` processes on a test's servers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use abridge_core::BatchId;
use abridge_store::{BatchView, Store};
use abridge_testkit::{Proc, TestEnv};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abridge"))
}

/// `n` distinct video lines whose noop summaries take the configured delay.
pub fn video_lines(prefix: char, n: usize) -> String {
    (0..n)
        .map(|i| format!("https://youtu.be/{prefix}{i:010}\n"))
        .collect()
}

pub struct Fleet {
    pub env: TestEnv,
    pub store: Store,
    /// Extra `ABRIDGE_*` settings every process of this fleet gets.
    pub vars: Vec<(String, String)>,
    pub workers: Vec<Proc>,
}

impl Fleet {
    pub async fn new(env: TestEnv, overrides: &[(&str, &str)]) -> Self {
        env.install_terminal_audit().await;
        let vars = env.vars(overrides);
        let store = env.store();
        Self {
            env,
            store,
            vars,
            workers: Vec::new(),
        }
    }

    /// Runs `abridge args...` to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        run_with(&self.vars, args, stdin)
    }

    pub fn spawn_worker(&mut self, concurrency: usize) -> usize {
        let n = self.workers.len();
        let c = concurrency.to_string();
        self.workers.push(Proc::spawn(
            &format!("worker-{n}"),
            &bin(),
            &["worker", "--concurrency", &c],
            &self.vars,
        ));
        n
    }

    pub fn enqueue(&self, lines: &str) -> BatchId {
        let (code, out, err) = self.run(&["enqueue", "--json"], Some(lines));
        assert_eq!(code, 0, "enqueue failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("enqueue --json prints JSON");
        v["batch_id"]
            .as_str()
            .expect("batch_id")
            .parse()
            .expect("a batch id")
    }

    pub async fn batch(&self, id: BatchId) -> BatchView {
        self.store
            .batch(id)
            .await
            .expect("read batch")
            .expect("batch exists")
    }

    pub async fn wait_finished(&self, id: BatchId, timeout: Duration) -> BatchView {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.batch(id).await;
            if b.status.is_finished() {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "batch not finished in {timeout:?}: {:?}",
                b.counts
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The fault drills' common verdict: the batch completed, every item reached a terminal
    /// state exactly once, the reported counts equal the rows, and no item was lost.
    pub async fn assert_exactly_once(&self, id: BatchId, total: usize) {
        let b = self.batch(id).await;
        assert_eq!(
            b.status,
            abridge_core::BatchStatus::Completed,
            "{:?}",
            b.counts
        );
        assert_eq!(b.total, total as i64);
        assert_eq!(
            b.counts.total(),
            total as i64,
            "counts do not add up to the rows: {:?}",
            b.counts
        );
        assert_eq!(
            b.counts.terminal(),
            total as i64,
            "items not terminal: {:?}",
            b.counts
        );
        let items = self
            .store
            .items_of(id, None, 0, total as i64 + 1)
            .await
            .unwrap();
        assert_eq!(items.len(), total, "items lost");
        let writes = self.env.terminal_writes().await;
        for item in &items {
            assert_eq!(
                writes.get(&item.id.0).copied().unwrap_or(0),
                1,
                "item {} reached a terminal state {} times",
                item.id,
                writes.get(&item.id.0).copied().unwrap_or(0)
            );
        }
        // And `abridge status --json` reports the same numbers.
        let (code, out, _) = self.run(&["status", "--json", &id.to_string()], None);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["counts"]["succeeded"].as_i64().unwrap() + v["counts"]["failed"].as_i64().unwrap(),
            b.counts.succeeded + b.counts.failed
        );
    }
}

pub fn run_with(
    vars: &[(String, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    run_in(None, vars, args, stdin)
}

/// [`run_with`] in the working directory `cwd`.
pub fn run_in(
    cwd: Option<&std::path::Path>,
    vars: &[(String, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(bin());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("ABRIDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run abridge");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait for abridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Fleet {
    /// Starts `abridge args...` with this fleet's settings plus `extra` variables.
    pub fn spawn(&mut self, name: &str, args: &[&str], extra: &[(&str, &str)]) -> usize {
        let mut vars = self.vars.clone();
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        self.workers.push(Proc::spawn(name, &bin(), args, &vars));
        self.workers.len() - 1
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Waits until `f` says yes, failing the test after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET http://127.0.0.1:{port}{path}`: (status, body), or `None` if nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    abridge_telemetry::http::probe(
        &format!("http://127.0.0.1:{port}{path}"),
        Duration::from_secs(5),
    )
    .await
    .ok()
    .map(|r| (r.status, r.body))
}

/// Waits for `/healthz` on `port` to answer 200.
pub async fn wait_healthy(port: u16) {
    wait_for(Duration::from_secs(30), "/healthz to answer", || async {
        matches!(http_get(port, "/healthz").await, Some((200, _)))
    })
    .await;
}

/// One scrape, parsed and checked by `promtool check metrics`.
pub async fn scrape(port: u16) -> Scrape {
    let (status, body) = http_get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    promtool_check_metrics(&body);
    Scrape::parse(&body)
}

/// Runs `promtool check metrics` (Debian package `prometheus`; `.ci/run` installs it) on a
/// scrape, failing the test with promtool's complaints.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus text scrape: families with their types, and samples.
#[derive(Debug, Default)]
pub struct Scrape {
    pub types: std::collections::BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                scrape.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("label");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            scrape.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        scrape
    }

    /// The value of the one sample of `name` with exactly these labels (for histograms, also
    /// the `le` label where given).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], failing the test when the sample is missing.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape: {self:#?}"))
    }

    pub fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }
}
