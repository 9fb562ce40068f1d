//! How a person gets the summaries: `abridge up` keeps its data and hands each finished batch
//! over in a folder (with exit codes that say how it ended), `enqueue --wait` does the same,
//! and `items`, `show` and `export` read a batch, from the databases or through the API.

use std::path::Path;
use std::time::Duration;

use abridge_testkit::{Proc, TestEnv};

use crate::support::{Fleet, bin, http_get, run_in, run_with, wait_for};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A JSON line of a video with its title and transcript (a transcript the `noop` drill
/// summarizer reads: its first sentence is the summary, an `abridge:` line a directive).
fn line(id: &str, title: &str, transcript: &str) -> String {
    serde_json::json!({
        "url": format!("https://youtu.be/{id}"),
        "title": title,
        "transcript": transcript,
    })
    .to_string()
        + "\n"
}

/// What follows `marker` in `text`, up to the next white space.
fn word_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    text[start..].split_whitespace().next()
}

/// The batch id `up` reports enqueueing in `logs`.
fn enqueued_batch(logs: &str) -> String {
    word_after(logs, "enqueued batch ")
        .unwrap_or_else(|| panic!("no batch enqueued: {logs}"))
        .trim_end_matches(':')
        .to_owned()
}

/// What a serving `up` printed: the settings that reach its servers, its API's URL and port,
/// and the operator token of its sign-in URL.
struct Served {
    local: Vec<(String, String)>,
    api: String,
    port: u16,
    token: String,
}

/// Waits for `up` to serve, and reads what it printed.
async fn served(up: &Proc) -> Served {
    wait_for(Duration::from_secs(60), "up to serve", || {
        let logs = up.logs();
        async move { logs.contains("#token=") || logs.contains("error") }
    })
    .await;
    let logs = up.logs();
    let printed = |marker: &str| {
        word_after(&logs, marker)
            .unwrap_or_else(|| panic!("{marker:?} not printed: {logs}"))
            .to_owned()
    };
    let api = printed("(signed in as the operator): ")
        .split('#')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    Served {
        local: vars(&[
            ("ABRIDGE_DATABASE_URL", &printed("ABRIDGE_DATABASE_URL=")),
            ("ABRIDGE_REDIS_URL", &printed("ABRIDGE_REDIS_URL=")),
        ]),
        port: api.rsplit(':').next().unwrap().parse().unwrap(),
        api,
        token: printed("#token="),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn summary_files(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder.join("summaries"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn up_keeps_its_data_and_hands_each_finished_batch_over_in_a_folder() {
    let data = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let input = line("aaaaaaaaaa1", "First talk", "Hello there. More words.")
        + &line(
            "aaaaaaaaaa2",
            "Second talk",
            "General Kenobi! You are a bold one.",
        )
        + &line(
            "aaaaaaaaaa3",
            "Third talk",
            "abridge:fail permanent transcript_unavailable",
        );
    std::fs::write(cwd.path().join("talks.txt"), input).unwrap();
    let up_vars = vars(&[
        ("ABRIDGE_SHUTDOWN_GRACE_MS", "2000"),
        ("ABRIDGE_SUMMARIZER", "noop"),
        ("ABRIDGE_DRILLS", "1"),
    ]);
    let data_dir = data.path().to_str().unwrap();
    let (code, _, err) = run_in(
        Some(cwd.path()),
        &up_vars,
        &[
            "up",
            "--workers",
            "1",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
            "--exit-when-done",
            "talks.txt",
        ],
        None,
    );
    // Exit 1: some items failed; the message says how many and where to look.
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("1 of 3 items failed"), "{err}");
    let id = enqueued_batch(&err);
    assert!(
        err.contains(&format!("see `abridge items {id} --status failed`")),
        "{err}"
    );
    let token = word_after(&err, "#token=")
        .expect("a sign-in URL")
        .to_owned();
    assert!(token.starts_with("abr_"), "{err}");
    assert!(
        err.contains("dashboard (signed in as the operator): http://127.0.0.1:"),
        "{err}"
    );

    // The folder: one summary per succeeded video, index.csv and batch.json.
    let folder = cwd.path().join("abridge-summaries/talks-txt");
    assert!(
        err.contains("results: abridge-summaries/talks-txt"),
        "{err}"
    );
    assert_eq!(
        summary_files(&folder),
        ["0001-First-talk.md", "0002-Second-talk.md"]
    );
    let first = read(&folder.join("summaries/0001-First-talk.md"));
    assert!(
        first.starts_with("# First talk\n\n<https://www.youtube.com/watch?v=aaaaaaaaaa1>\n\n"),
        "{first}"
    );
    assert!(first.contains("Hello there."), "{first}");
    let index = read(&folder.join("index.csv"));
    let rows: Vec<&str> = index.lines().collect();
    assert_eq!(rows.len(), 4, "{index}");
    assert!(
        rows[3].contains("failed") && rows[3].contains("transcript_unavailable"),
        "{index}"
    );
    let batch: serde_json::Value = serde_json::from_str(&read(&folder.join("batch.json"))).unwrap();
    assert_eq!(batch["batch"]["id"], id.as_str());
    assert_eq!(batch["items"].as_array().unwrap().len(), 3);
    // The short table names each item.
    assert!(
        err.contains("transcript_unavailable") && err.contains("Second talk"),
        "{err}"
    );

    // A second `up` on the same data directory: the first batch is still there, and the
    // saved operator token still signs in.
    let mut up = Proc::spawn(
        "up",
        &bin(),
        &[
            "up",
            "--workers",
            "1",
            "--data-dir",
            data_dir,
            "--listen",
            "127.0.0.1:0",
        ],
        &up_vars,
    );
    let Served {
        local,
        api,
        port,
        token: again,
    } = served(&up).await;
    assert_eq!(again, token, "the saved token signs in again");
    let remote = |args: &[&str]| -> (i32, String, String) {
        let mut all = args.to_vec();
        all.extend(["--api", &api, "--token", &token]);
        run_with(&[], &all, None)
    };

    // `items`, local and through the API.
    let (code, out, err) = run_with(&local, &["items", &id], None);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(listed.len(), 3, "{out}");
    assert!(
        listed[2].trim_start().starts_with("3  aaaaaaaaaa3  failed"),
        "{out}"
    );
    assert!(listed[2].contains("transcript_unavailable"), "{out}");
    let (code, out, err) = remote(&["items", &id, "--status", "succeeded", "--json"]);
    assert_eq!(code, 0, "{err}");
    let items: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 2, "{out}");
    assert_eq!(items[1]["position"], 1);
    assert_eq!(items[1]["title"], "Second talk");

    // `show`: the same text as the file, local and through the API.
    let (code, out, err) = run_with(&local, &["show", &id, "1"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, first);
    let (code, out, err) = remote(&["show", &id, "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, read(&folder.join("summaries/0002-Second-talk.md")));

    // `export`: the API's ZIP unpacked is the same folder; a ZIP file is a ZIP.
    let via_api = cwd.path().join("via-api");
    let (code, out, err) = remote(&["export", &id, "--out", via_api.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), via_api.to_str().unwrap());
    assert_eq!(summary_files(&via_api), summary_files(&folder));
    assert_eq!(
        read(&via_api.join("summaries/0001-First-talk.md")),
        first,
        "the API's files are the local ones"
    );
    let zip = cwd.path().join("talks.zip");
    let (code, _, err) = run_with(
        &local,
        &["export", &id, "--zip", zip.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&zip).unwrap().starts_with(b"PK\x03\x04"));
    // Exporting again into the same folder replaces it; not once a person put a file there.
    let (code, _, err) = remote(&["export", &id, "--out", via_api.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(via_api.join("my-notes.txt"), "mine").unwrap();
    let (code, _, err) = remote(&["export", &id, "--out", via_api.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("already holds other files"), "{err}");
    assert_eq!(read(&via_api.join("my-notes.txt")), "mine");

    // Each names what was wrong.
    let (code, _, err) = run_with(&local, &["show", &id, "3"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "item 3 of batch {id} (aaaaaaaaaa3) has no summary: it is failed: transcript_unavailable"
        )),
        "{err}"
    );
    let (code, _, err) = remote(&["show", &id, "4"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("batch {id} has no item 4 (its items are 1 to 3)")),
        "{err}"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    let (code, _, err) = run_with(&local, &["items", &unknown], None);
    assert_ne!(code, 0);
    assert!(err.contains(&format!("no batch {unknown}")), "{err}");
    let (code, _, err) = remote(&["export", &unknown]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("no batch {unknown}")) && err.contains("404"),
        "{err}"
    );
    let (code, _, err) = run_with(&local, &["export", &id, "--out", data_dir], None);
    assert_ne!(code, 0);
    assert!(err.contains("already holds other files"), "{err}");
    let (code, _, err) = run_with(&local, &["show", "not-a-batch", "1"], None);
    assert_ne!(code, 0);
    assert!(err.contains("\"not-a-batch\" is not a batch id"), "{err}");

    // The dashboard is served beside the API.
    let (status, page) = http_get(port, "/").await.expect("the dashboard answers");
    assert_eq!(status, 200);
    assert!(page.contains("dashboard.js"), "{page}");

    up.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(
        up.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        up.logs()
    );
    // Stopped cleanly: another `up` may take the data directory at once.
    assert!(!data.path().join("postgres/data/postmaster.pid").exists());
}

#[tokio::test]
async fn a_cancelled_batch_exits_2_and_enqueue_wait_hands_over_too() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let cwd = tempfile::tempdir().unwrap();
    fleet.spawn_worker(4);

    // `enqueue --wait` (local): every item succeeded, exit 0, the folder written.
    let out = cwd.path().join("waited");
    let (code, _, err) = run_in(
        Some(cwd.path()),
        &fleet.vars,
        &["enqueue", "--wait", "--out", out.to_str().unwrap()],
        Some(&(line("bbbbbbbbbb1", "One", "One sentence.") + &line("bbbbbbbbbb2", "Two", "Two."))),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary_files(&out), ["0001-One.md", "0002-Two.md"]);

    // `up --exit-when-done` on the fleet's own servers, its batch cancelled: exit 2.
    let file = cwd.path().join("slow.txt");
    std::fs::write(
        &file,
        (1..=3)
            .map(|i| line(&format!("ccccccccc{i:02}"), "Slow", "abridge:sleep 60000"))
            .collect::<String>(),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let folder = cwd.path().join("slow");
    let mut up = Proc::spawn(
        "up",
        &bin(),
        &[
            "up",
            "--workers",
            "1",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--exit-when-done",
            "--out",
            folder.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        &fleet.vars,
    );
    wait_for(Duration::from_secs(60), "up to enqueue", || {
        let logs = up.logs();
        async move { logs.contains("enqueued batch ") }
    })
    .await;
    let id = enqueued_batch(&up.logs());
    let (code, _, err) = fleet.run(&["cancel", &id], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        up.wait_exit(Duration::from_secs(60)),
        Some(2),
        "{}",
        up.logs()
    );
    assert!(up.logs().contains(&format!("batch {id} was cancelled")));
    let batch: serde_json::Value = serde_json::from_str(&read(&folder.join("batch.json"))).unwrap();
    assert_eq!(batch["batch"]["status"], "cancelled");
}

/// A data directory left by a SIGKILLed `up` starts again: Postgres recovers its log, the
/// batches are still there.
#[tokio::test]
async fn up_starts_again_on_the_data_a_killed_up_left() {
    let data = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("one.txt"),
        line("kkkkkkkkkk1", "Kept", "Hello there. More words."),
    )
    .unwrap();
    let up_vars = vars(&[
        ("ABRIDGE_SHUTDOWN_GRACE_MS", "1000"),
        ("ABRIDGE_SUMMARIZER", "noop"),
        ("ABRIDGE_DRILLS", "1"),
    ]);
    let data_dir = data.path().to_str().unwrap();
    let file = cwd.path().join("one.txt");
    let out = cwd.path().join("out");
    let args = [
        "up",
        "--workers",
        "1",
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
        "--out",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    let mut first = Proc::spawn("up", &bin(), &args, &up_vars);
    wait_for(Duration::from_secs(60), "the batch handed over", || {
        let logs = first.logs();
        async move { logs.contains("results: ") }
    })
    .await;
    let id = enqueued_batch(&first.logs());
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));

    let again = Proc::spawn("up-again", &bin(), &args[..7], &up_vars);
    let local = served(&again).await.local;
    let (code, out, err) = run_with(&local, &["items", &id], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kkkkkkkkkk1  succeeded"), "{out}");
}
