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
    use std::io::Write;
    let mut cmd = Command::new(bin());
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
