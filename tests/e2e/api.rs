//! The producer API as a process (`abridge api`), driven by the CLI's `--api` mode, with a real
//! worker process and the token commands.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use abridge_testkit::{Proc, TestEnv};

use crate::support::*;

/// A free local port (bound and released; the API binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, api: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(api.is_running(), "abridge api exited:\n{}", api.logs());
        assert!(
            Instant::now() < deadline,
            "abridge api is not listening:\n{}",
            api.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_cli_enqueues_waits_and_reads_status_through_the_api() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "50")]).await;

    // A token, printed once, with the tenant's webhook secret.
    let (code, out, err) = fleet.run(&["token", "create", "--tenant", "e2e", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("abr_"));
    assert!(
        made["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let (_, listed, _) = fleet.run(&["token", "list", "--json"], None);
    assert!(!listed.contains(&token), "token list never shows tokens");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut api = Proc::spawn("api", &bin(), &["api", "--listen", &listen], &fleet.vars);
    wait_listening(port, &mut api);
    fleet.spawn_worker(4);
    let url = format!("http://{listen}");

    // Enqueue through the API and wait: the same report as the local command (by line), then
    // the final status once the event stream says the batch completed.
    let input = "\
https://www.youtube.com/watch?v=aaaaaaaaaaa
# a comment
https://www.youtube.com/playlist?list=PLabc
{\"url\": \"bbbbbbbbbbb\", \"title\": \"A talk\", \"transcript\": \"Hello world. More.\"}
{\"url\": 3}
youtu.be/aaaaaaaaaaa
ccccccccccc
";
    let results = tempfile::tempdir().unwrap();
    let (code, out, err) = fleet.run(
        &[
            "enqueue",
            "--api",
            &url,
            "--token",
            &token,
            "--wait",
            "--out",
            results.path().join("via-api").to_str().unwrap(),
            "--json",
            "--name",
            "via api",
            "--length",
            "short",
            "--language",
            "en",
        ],
        Some(input),
    );
    assert_eq!(code, 0, "{err}\n{}", api.logs());
    let mut lines = out.lines();
    let created: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(created["accepted"], 3);
    assert_eq!(created["duplicates"], 1);
    let rejected: Vec<u64> = created["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, [3, 5], "{created}");
    let done: serde_json::Value =
        serde_json::from_str(lines.next().expect("final status")).unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["counts"]["succeeded"], 3);
    assert_eq!(done["progress_percent"], 100.0);
    let id = created["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(done["id"], id.as_str());

    // The batch belongs to the tenant, in Postgres as in the API.
    let b = fleet.batch(id.parse().unwrap()).await;
    assert_eq!(b.tenant.as_deref(), Some("e2e"));
    assert_eq!(b.name.as_deref(), Some("via api"));
    assert_eq!(
        b.options,
        serde_json::json!({"length": "short", "language": "en"}),
        "summary flags travel as the batch's summarizer options"
    );
    let items = fleet.store.items_of(b.id, None, 0, 10).await.unwrap();
    assert_eq!(items[1].title.as_deref(), Some("A talk"));
    assert_eq!(items[1].summary.as_deref(), Some("Hello world."));

    // Status through the API, human and JSON.
    let (code, out, err) = fleet.run(&["status", "--api", &url, "--token", &token, &id], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("completed") && out.contains("3 succeeded") && out.contains("100.0% done"),
        "{out}"
    );
    let (code, out, _) = fleet.run(
        &["status", "--api", &url, "--token", &token, "--json", &id],
        None,
    );
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["counts"]["succeeded"], 3);

    // An idempotency key makes a re-run return the first batch.
    let run_keyed = || {
        fleet.run(
            &[
                "enqueue",
                "--api",
                &url,
                "--token",
                &token,
                "--json",
                "--idempotency-key",
                "nightly-1",
            ],
            Some("ddddddddddd\n"),
        )
    };
    let (code, first, err) = run_keyed();
    assert_eq!(code, 0, "{err}");
    let (_, second, _) = run_keyed();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(first["batch_id"], second["batch_id"]);

    // Nothing valid: the local command's error, and nothing created.
    let (code, _, err) = fleet.run(
        &["enqueue", "--api", &url, "--token", &token],
        Some("nope\n{\"url\": 1}\n"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("line 1: nope") && err.contains("line 2:"),
        "{err}"
    );
    assert!(err.contains("nothing enqueued"), "{err}");

    // Without a token, or with a revoked one, the command says so.
    let (code, _, err) = fleet.run(&["status", "--api", &url, &id], None);
    assert_ne!(code, 0);
    assert!(err.contains("--token"), "{err}");
    let (code, _, err) = fleet.run(&["token", "revoke", made["id"].as_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fleet.run(&["status", "--api", &url, "--token", &token, &id], None);
    assert_ne!(code, 0);
    assert!(err.contains("invalid or revoked token"), "{err}");

    // SIGTERM stops the API cleanly.
    api.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        api.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        api.logs()
    );
}

#[tokio::test]
async fn enqueue_wait_exits_2_when_the_batch_is_cancelled() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let (_, out, _) = fleet.run(&["token", "create", "--tenant", "e2e", "--json"], None);
    let token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut api = Proc::spawn("api", &bin(), &["api", "--listen", &listen], &fleet.vars);
    wait_listening(port, &mut api);
    let url = format!("http://{listen}");
    // No worker: the batch waits until it is cancelled.
    let vars = fleet.vars.clone();
    let (url2, token2) = (url.clone(), token.clone());
    let results = tempfile::tempdir().unwrap();
    let out_dir = results
        .path()
        .join("cancelled")
        .to_str()
        .unwrap()
        .to_owned();
    let waiting = std::thread::spawn(move || {
        run_with(
            &vars,
            &[
                "enqueue", "--api", &url2, "--token", &token2, "--wait", "--out", &out_dir,
                "--json",
            ],
            Some("aaaaaaaaaaa\nbbbbbbbbbbb\n"),
        )
    });
    let store = fleet.store.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let open = store
            .list_batches(Some("e2e"), None, None, 1)
            .await
            .unwrap();
        if let Some(b) = open.first() {
            break b.id;
        }
        assert!(Instant::now() < deadline, "batch not created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = fleet.run(&["cancel", &id.to_string()], None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = waiting.join().unwrap();
    // 2: cancelled (1 is "some items failed"); the folder is written all the same.
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(results.path().join("cancelled/batch.json").exists());
    assert!(err.contains("was cancelled"), "{err}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "cancelled");
    assert_eq!(last["counts"]["cancelled"], 2);
}
