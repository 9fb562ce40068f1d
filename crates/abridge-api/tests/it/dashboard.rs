//! The dashboard in a real browser: Debian's headless Chromium driven by chromedriver
//! (WebDriver). It signs in with a token, watches a running batch's progress bar move, cancels
//! the batch with its button, retries a failed item from the failed list, opens a summary, and
//! sees the workers and the chart. With `ABRIDGE_TEST_SCREENSHOTS=DIR` it also saves the screenshots
//! README.md shows.

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abridge_core::{BatchId, ErrorKind, ItemError};
use abridge_worker::JobOutput;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use serde_json::{Value, json};

use abridge_testkit::until;

use crate::support::*;

/// How long any one thing on the page may take to show.
const T: Duration = Duration::from_secs(30);

/// chromedriver on a free port, in a process group of its own with the Chromium it starts:
/// dropping it kills the whole group, so a failed test leaves no browser behind.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = abridge_local::free_port().unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = abridge_local::spawn_tied(cmd).unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e:#}): the dashboard test needs Chromium and ChromeDriver \
                 (Debian: apt-get install chromium chromium-driver; or set CHROMEDRIVER)"
            )
        });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    /// A Chromium session that saves downloads into `downloads`.
    async fn browser(&self, downloads: &std::path::Path) -> Client {
        let mut caps = serde_json::Map::new();
        let chrome = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1400,1200"],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Waits for the first element matching `css`.
async fn find(c: &Client, css: &str) -> Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
}

/// How many items the batch's row says are done (`data-done`), if the row is there.
async fn done_in_row(c: &Client, batch: &str) -> Option<i64> {
    let css = format!("tr[data-batch='{batch}'] .progress-text");
    let e = c.find(Locator::Css(&css)).await.ok()?;
    e.attr("data-done").await.ok()??.parse().ok()
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("ABRIDGE_TEST_SCREENSHOTS") {
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(format!("{dir}/{name}.png"), png).expect("write screenshot");
    }
}

#[tokio::test]
async fn the_dashboard_shows_live_progress_and_its_buttons_cancel_and_retry() {
    let mut app = App::start(&[("ABRIDGE_API_DEPTH_SAMPLE_MS", "200")]).await;
    // Slow items (no transcript) take 300 ms (the slow batch would run 30 s); "flaky" ones fail for good the first time.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let processor = abridge_testkit::processor(move |job: abridge_worker::Job| {
        let seen = seen.clone();
        async move {
            match job.transcript.as_deref() {
                None => tokio::time::sleep(Duration::from_millis(300)).await,
                Some("flaky") if seen.lock().unwrap().insert(job.video_id.clone()) => {
                    return Err(ItemError::permanent(
                        ErrorKind::new("unavailable"),
                        "video is private",
                    ));
                }
                Some(_) => {}
            }
            // Markdown as the summarizer writes it, with a title's kind of hostile text and a
            // link that is not a timestamp into this video.
            let id = &job.video_id;
            Ok(JobOutput {
                summary: format!(
                    "Summary of {id}.\n\n## Key points\n\n\
                     - [01:23](https://youtu.be/{id}?t=83) A point <b>in bold</b>.\n\
                     - [00:05] A bare stamp.\n\
                     - [02:00](https://evil.example/x) Not a stamp of ours.\n"
                ),
                ..JobOutput::default()
            })
        }
    });
    app.start_worker_with(processor, 2);
    let token = app.token("acme").await;
    let quick = app
        .create(
            &token,
            json!({"name": "quick", "items": [
                {"url": "q0000000000", "transcript": "flaky"},
                {"url": "q0000000001", "transcript": "fine"},
            ]}),
        )
        .await;
    let slow = app
        .create(&token, json!({"name": "slow", "urls": video_ids('s', 200)}))
        .await;

    let driver = Driver::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let c = driver.browser(downloads.path()).await;
    // Whatever happens, end the browser session (chromedriver then stops Chromium) before
    // the test's verdict.
    // The operator sees the workers; a tenant token would see only its own figures.
    let operator = app.operator_token().await;
    let verdict = AssertUnwindSafe(exercise(&c, &app, &operator, quick, slow, downloads.path()))
        .catch_unwind()
        .await;
    let _ = c.close().await;
    drop(driver);
    app.stop().await;
    if let Err(panic) = verdict {
        std::panic::resume_unwind(panic);
    }
}

/// The browser's part of the test, on the page of `app`'s server.
async fn exercise(
    c: &Client,
    app: &App,
    token: &str,
    quick: BatchId,
    slow: BatchId,
    downloads: &std::path::Path,
) {
    let c = c.clone();
    c.goto(&app.server.base).await.unwrap();

    // Signing in with a wrong token says so and shows the form again.
    find(&c, "#token")
        .await
        .send_keys("abr_wrong")
        .await
        .unwrap();
    find(&c, "#signin-button").await.click().await.unwrap();
    until(
        T,
        "the refusal of a wrong token",
        async || text(&c, "#signin-error").await,
        |t| t.contains("refused"),
    )
    .await;
    find(&c, "#token").await.send_keys(token).await.unwrap();
    find(&c, "#signin-button").await.click().await.unwrap();

    // The slow batch's progress moves while the page is open (the page is not reloaded).
    let slow_id = slow.to_string();
    let first = until(
        T,
        "the slow batch's row",
        async || done_in_row(&c, &slow_id).await,
        |d| d.is_some(),
    )
    .await
    .unwrap();
    let later = until(
        T,
        "progress of the slow batch",
        async || done_in_row(&c, &slow_id).await,
        |d| d.is_some_and(|d| d >= first + 3),
    )
    .await
    .unwrap();
    assert!(later < 200, "the batch is still running: {later} done");
    // Its progress comes from its event stream: the batch list is not read again meanwhile.
    c.execute("performance.clearResourceTimings()", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = done_in_row(&c, &slow_id).await.unwrap();
    assert!(after > later, "no progress in 3 s: {after} done");
    let lists = c
        .execute(
            "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/v1/batches?limit=')).length",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        lists.as_i64().unwrap() <= 1,
        "the batch list was polled {lists} times in 3 s"
    );

    // The live worker, with its items in hand.
    let workers = until(
        T,
        "the workers table",
        async || text(&c, "#workers tbody").await,
        |t| t.contains(" / 2"),
    )
    .await;
    assert!(
        workers.contains(&std::process::id().to_string()),
        "{workers}"
    );

    // The quick batch failed one item: it is in the failed list; its retry button requeues it.
    let quick_id = quick.to_string();
    let failed_row = "#failed tr[data-item] [data-action='retry-item']";
    until(
        T,
        "the failed item",
        async || text(&c, "#failed tbody").await,
        |t| t.contains("video is private") && t.contains("quick"),
    )
    .await;
    screenshot(&c, "dashboard").await;
    find(&c, failed_row).await.click().await.unwrap();
    // The click's request is in flight: the batch is still `completed` with one failure until
    // the retry lands, so wait for the outcome itself.
    let done = until(
        T,
        "the retried item to succeed",
        async || app.get(token, &format!("/v1/batches/{quick}")).await.1,
        |b| b["counts"]["succeeded"] == 2 && b["status"] == "completed",
    )
    .await;
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    until(
        T,
        "the failed list to empty",
        async || c.find(Locator::Css("#failed tbody tr")).await.is_ok(),
        |present| !present,
    )
    .await;

    // Clicking the quick batch shows its items; clicking an item shows its summary.
    find(&c, &format!("tr[data-batch='{quick_id}'] .name"))
        .await
        .click()
        .await
        .unwrap();
    find(&c, "#items tr[data-item]")
        .await
        .click()
        .await
        .unwrap();
    until(
        T,
        "the summary",
        async || text(&c, "#summary-text").await,
        |t| t.starts_with("Summary of q000000000"),
    )
    .await;
    // Rendered as formatted text: a heading, a list, timestamps as links into the video;
    // markup in the text stays text, and a link that is not such a timestamp is not a link.
    let shown = text(&c, "#summary-text").await;
    assert!(shown.contains("A point <b>in bold</b>."), "{shown}");
    assert!(shown.contains("[02:00](https://evil.example/x)"), "{shown}");
    assert!(c.find(Locator::Css("#summary-text b")).await.is_err());
    find(&c, "#summary-text h5").await;
    let stamps = c.find_all(Locator::Css("#summary-text a")).await.unwrap();
    let mut hrefs = Vec::new();
    for a in &stamps {
        hrefs.push(a.attr("href").await.unwrap().unwrap_or_default());
    }
    assert_eq!(hrefs.len(), 2, "{hrefs:?}");
    assert!(hrefs[0].ends_with("watch?v=q0000000000&t=83s"), "{hrefs:?}");
    assert!(hrefs[1].ends_with("watch?v=q0000000000&t=5s"), "{hrefs:?}");
    c.execute(
        "document.getElementById('summary').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, "dashboard-summary").await;

    // Search finds items by words of their summaries.
    find(&c, "#search-text")
        .await
        .send_keys("bold q0000000001")
        .await
        .unwrap();
    // Items are findable once the indexer has come by (within a second): search again till then.
    until(
        T,
        "the found item",
        async || {
            find(&c, "#search-button").await.click().await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.find_all(Locator::Css("#found tr[data-found]"))
                .await
                .unwrap()
                .len()
        },
        |n| *n == 1,
    )
    .await;
    let found = text(&c, "#found tbody").await;
    assert!(
        found.contains("quick") && found.contains("q0000000001"),
        "{found}"
    );
    // Over every item found, a bulk action says how many it takes: the slow batch is open.
    find(&c, "#search-text").await.clear().await.unwrap();
    find(&c, "#search-text")
        .await
        .send_keys("bold")
        .await
        .unwrap();
    find(&c, "#search-button").await.click().await.unwrap();
    let bulk = until(
        T,
        "the bulk cancel",
        async || text(&c, "[data-action='cancel-found']").await,
        |t| !t.is_empty(),
    )
    .await;
    assert_eq!(bulk, "Cancel 1 batch");

    // The operator is told whose each batch is, and may list one tenant's alone.
    assert!(
        text(&c, &format!("tr[data-batch='{quick_id}'] .tenant"))
            .await
            .contains("tenant acme"),
        "the owner of each batch"
    );
    find(&c, "#tenant-filter option[value='acme']")
        .await
        .click()
        .await
        .unwrap();
    until(
        T,
        "the list of acme's batches",
        async || text(&c, "#batches tbody").await,
        |t| t.contains("quick"),
    )
    .await;
    find(&c, "#tenant-filter option[value='']")
        .await
        .click()
        .await
        .unwrap();

    // Download ZIP: the batch's files, as the export serves them.
    find(
        &c,
        &format!("tr[data-batch='{quick_id}'] [data-action='zip']"),
    )
    .await
    .click()
    .await
    .unwrap();
    let file = downloads.join(format!("batch-{quick_id}.zip"));
    let bytes = until(
        T,
        "the ZIP download",
        async || std::fs::read(&file).ok(),
        |b| b.is_some(),
    )
    .await
    .unwrap();
    let zip = async_zip::base::read::mem::ZipFileReader::new(bytes)
        .await
        .expect("a whole ZIP");
    let mut names: Vec<String> = zip
        .file()
        .entries()
        .iter()
        .map(|e| e.filename().as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "batch.json",
            "index.csv",
            "summaries/0001-q0000000000.md",
            "summaries/0002-q0000000001.md"
        ]
    );

    // Cancel asks for a second click, then cancels the slow batch.
    let cancel = format!("tr[data-batch='{slow_id}'] [data-action='cancel']");
    find(&c, &cancel).await.click().await.unwrap();
    assert_eq!(
        find(&c, &cancel).await.text().await.unwrap(),
        "Confirm cancel"
    );
    let (_, before) = app.get(token, &format!("/v1/batches/{slow}")).await;
    assert_eq!(before["status"], "running", "one click does not cancel");
    find(&c, &cancel).await.click().await.unwrap();
    let v: Value = app
        .wait_finished(token, slow, Duration::from_secs(20))
        .await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(v["counts"]["cancelled"].as_i64().unwrap() > 0, "{v}");
    until(
        T,
        "the slow batch's row to say cancelled",
        async || text(&c, &format!("tr[data-batch='{slow_id}'] .status")).await,
        |t| t == "cancelled",
    )
    .await;
    assert!(
        !find(&c, &cancel).await.is_displayed().await.unwrap(),
        "a cancelled batch has no cancel button"
    );

    // The chart draws the sampled depth and the finished items.
    find(&c, "#chart polyline.depth").await;
    find(&c, "#chart rect.done").await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the bars' width transition
    screenshot(&c, "dashboard-cancelled").await;

    // `abridge up`'s sign-in URL: the token in the fragment signs in, and leaves the address
    // bar at once (the fragment never reaches the server).
    find(&c, "#signout").await.click().await.unwrap();
    find(&c, "#token").await;
    let base = app.server.base.trim_end_matches('/');
    c.goto(&format!("{base}/#token={token}")).await.unwrap();
    until(
        T,
        "signed in from the URL's fragment",
        async || text(&c, "#workers tbody").await,
        |t| t.contains(" / 2"),
    )
    .await;
    let url = c.current_url().await.unwrap();
    assert!(!url.as_str().contains(token), "{url}");
    assert!(find(&c, "#signout").await.is_displayed().await.unwrap());
}

/// The new-batch form: pasted lines and an uploaded CSV file are read by the server (the
/// rejected lines shown with their numbers before and after submit), a playlist is read in
/// its line's place at create, and the batch it creates is the tenant's.
#[tokio::test]
async fn the_new_batch_form_shows_rejected_lines_and_creates_the_batch() {
    let yt = abridge_standins::youtube::YoutubeStandin::start(vec![]);
    yt.add_list(abridge_standins::youtube::lists::StandinList::playlist(
        "PL123",
        "Three talks",
        abridge_standins::youtube::lists::numbered_videos("pp", 3),
    ));
    let mut app = App::start(&[("ABRIDGE_YOUTUBE_BASE_URL", &yt.url())]).await;
    app.start_worker_with(
        abridge_testkit::processor(|job: abridge_worker::Job| async move {
            abridge_testkit::ok(format!("Summary of {}.", job.video_id))
        }),
        2,
    );
    let token = app.token("acme").await;
    let driver = Driver::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let c = driver.browser(downloads.path()).await;
    let csv = downloads.path().join("videos.csv");
    std::fs::write(
        &csv,
        "title,url\nFirst,https://youtu.be/f0000000001\nNo video,https://www.youtube.com/@chan\nSecond,f0000000002\n",
    )
    .unwrap();
    let verdict = AssertUnwindSafe(new_batch(&c, &app, &token, &csv))
        .catch_unwind()
        .await;
    let _ = c.close().await;
    drop(driver);
    app.stop().await;
    if let Err(panic) = verdict {
        std::panic::resume_unwind(panic);
    }
}

async fn new_batch(c: &Client, app: &App, token: &str, csv: &std::path::Path) {
    let c = c.clone();
    let base = app.server.base.trim_end_matches('/');
    c.goto(&format!("{base}/#token={token}")).await.unwrap();
    let lines = "https://youtu.be/p0000000001\n\
                 p0000000002\n\
                 https://www.youtube.com/playlist?list=PL123\n\
                 https://www.youtube.com/watch?v=p0000000003&t=10s\n\
                 https://youtu.be/p0000000004\n\
                 not a video\n\
                 https://www.youtube.com/shorts/p0000000005\n";
    find(&c, "#new-text").await.send_keys(lines).await.unwrap();
    let check = until(
        T,
        "the check of the pasted lines",
        async || text(&c, "#new-check").await,
        |t| t.contains("ready"),
    )
    .await;
    assert_eq!(
        check,
        "5 videos ready, 1 playlist or channel to read, 1 line rejected"
    );
    let rejects = text(&c, "#new-rejects").await;
    assert!(rejects.starts_with("line 6: not a video:"), "{rejects}");
    screenshot(&c, "dashboard-new-batch").await;
    find(&c, "#new-name")
        .await
        .send_keys("pasted")
        .await
        .unwrap();
    find(&c, "#new-submit").await.click().await.unwrap();
    let done = until(
        T,
        "the batch to be created",
        async || text(&c, "#new-check").await,
        |t| t.starts_with("Created batch"),
    )
    .await;
    // The playlist's three videos in its line's place.
    assert!(done.ends_with("with 8 videos; 1 line rejected"), "{done}");
    assert_eq!(
        text(&c, "#new-rejects").await.lines().count(),
        1,
        "the rejected line is still shown after submit"
    );
    let (_, page) = app.get(token, "/v1/batches").await;
    assert_eq!(page["batches"][0]["name"], "pasted", "{page}");
    assert_eq!(page["batches"][0]["total"], 8, "{page}");
    let id = page["batches"][0]["id"].as_str().unwrap().to_owned();
    let (_, items) = app.get(token, &format!("/v1/batches/{id}/items")).await;
    let videos: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["video_id"].as_str().unwrap())
        .collect();
    assert_eq!(&videos[..2], ["p0000000001", "p0000000002"], "{items}");
    assert!(
        items["items"][2]["url"]
            .as_str()
            .unwrap()
            .contains("list=PL123"),
        "the list note: {items}"
    );
    assert_eq!(videos[5], "p0000000003", "{items}");

    // A CSV file with a url column: its lines count the header.
    find(&c, "#new-file")
        .await
        .send_keys(csv.to_str().unwrap())
        .await
        .unwrap();
    let check = until(
        T,
        "the check of the file",
        async || text(&c, "#new-check").await,
        |t| t.contains("ready"),
    )
    .await;
    assert_eq!(check, "2 videos ready, 1 line rejected");
    // A channel with a title in its row: a title belongs to one video.
    assert!(
        text(&c, "#new-rejects").await.starts_with(
            "line 3: https://www.youtube.com/@chan: a playlist or channel cannot carry a title"
        ),
        "{}",
        text(&c, "#new-rejects").await
    );
    find(&c, "#new-submit").await.click().await.unwrap();
    until(
        T,
        "the file's batch",
        async || app.get(token, "/v1/batches").await.1,
        |p| p["batches"][0]["name"] == "videos.csv",
    )
    .await;
    let (_, page) = app.get(token, "/v1/batches").await;
    let id = page["batches"][0]["id"].as_str().unwrap().to_owned();
    let (_, items) = app.get(token, &format!("/v1/batches/{id}/items")).await;
    assert_eq!(items["items"][0]["title"], "First", "{items}");
    assert_eq!(items["items"][1]["video_id"], "f0000000002", "{items}");

    // Another tenant's batch never shows on this tenant's page, and no tenant filter does.
    let other = app.token("other").await;
    let theirs = app
        .create(&other, json!({"name": "theirs", "urls": ["o0000000001"]}))
        .await;
    until(
        T,
        "both of acme's batches listed",
        async || {
            c.find_all(Locator::Css("#batches tbody tr"))
                .await
                .unwrap()
                .len()
        },
        |n| *n == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a refresh or two later
    assert!(
        c.find(Locator::Css(&format!("tr[data-batch='{theirs}']")))
            .await
            .is_err(),
        "a tenant sees another tenant's batch"
    );
    assert!(
        !find(&c, "#tenant-filter")
            .await
            .is_displayed()
            .await
            .unwrap()
    );
    let (_, page) = app.get(token, "/v1/batches?tenant=other").await;
    assert_eq!(page["batches"].as_array().unwrap().len(), 2, "{page}");
}

/// What the dashboard reads, without a browser: `/v1/history` counts finished items per
/// minute and carries the sampled depth; `/v1/failed` lists failures newest first; a retry
/// with `?item=` requeues that item only.
#[tokio::test]
async fn history_failed_list_and_retry_of_one_item() {
    let mut app = App::start(&[("ABRIDGE_API_DEPTH_SAMPLE_MS", "100")]).await;
    let token = app.token("acme").await;
    // Three items fail for good; nothing runs yet, so the sampler sees them queued.
    let items: Vec<_> = video_ids('h', 5)
        .into_iter()
        .enumerate()
        .map(|(i, id)| json!({"url": id, "transcript": if i < 3 { "bad" } else { "good" }}))
        .collect();
    let id = app
        .create(&token, json!({"name": "h", "items": items}))
        .await;
    // The queue's depth is the fleet's: the operator's to see.
    let operator = app.operator_token().await;
    until(
        T,
        "a depth sample with the five queued items",
        async || app.get(&operator, "/v1/history?minutes=5").await.1,
        |h| {
            h["minutes"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["ready"] == 5))
        },
    )
    .await;
    let fail_bad = abridge_testkit::processor(|job: abridge_worker::Job| async move {
        if job.transcript.as_deref() == Some("bad") {
            return Err(ItemError::permanent(ErrorKind::new("unavailable"), "gone"));
        }
        Ok(JobOutput {
            summary: "ok".into(),
            ..JobOutput::default()
        })
    });
    app.start_worker_with(fail_bad, 4);
    app.wait_finished(&token, id, Duration::from_secs(20)).await;

    let (status, h) = app.get(&token, "/v1/history?minutes=5").await;
    assert_eq!(status, 200, "{h}");
    let minutes = h["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 5, "one entry per minute: {h}");
    let sum = |k: &str| minutes.iter().map(|m| m[k].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("succeeded"), sum("failed")), (2, 3), "{h}");

    let (status, failed) = app.get(&token, "/v1/failed").await;
    assert_eq!(status, 200, "{failed}");
    let failed = failed["items"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|i| i["batch_id"] == id.to_string()));
    // A tenant reads the stable message of the error's kind, not the processor's text.
    assert!(
        failed
            .iter()
            .all(|i| i["error_message"] == "The item failed.")
    );
    // Another tenant sees none of them.
    let other = app.token("other").await;
    assert_eq!(app.get(&other, "/v1/failed").await.1["items"], json!([]));

    // Retry one item: only it is requeued (it fails again: still "bad").
    let one = failed[0]["id"].as_i64().unwrap();
    let (status, r) = app
        .post(
            &token,
            &format!("/v1/batches/{id}/retry?item={one}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["requeued"], 1, "{r}");
    // An item that is not a failed item of this batch: nothing to do.
    let (status, r) = app
        .post(
            &token,
            &format!("/v1/batches/{id}/retry?item=999999999"),
            json!({}),
        )
        .await;
    assert_eq!((status, r["requeued"].as_i64()), (200, Some(0)), "{r}");
    let finished = |v: &Value, item: i64| {
        v["items"]
            .as_array()
            .and_then(|i| i.iter().find(|i| i["id"] == item))
            .map(|i| i["finished_at"].clone())
    };
    let before: Vec<_> = failed
        .iter()
        .map(|i| (i["id"].as_i64().unwrap(), i["finished_at"].clone()))
        .collect();
    let after = until(
        T,
        "the retried item to fail again",
        async || {
            app.get(&token, &format!("/v1/batches/{id}/items?status=failed"))
                .await
                .1
        },
        |v| {
            finished(v, one)
                .is_some_and(|f| Some(&f) != before.iter().find(|b| b.0 == one).map(|b| &b.1))
        },
    )
    .await;
    for (item, at) in &before {
        if *item != one {
            assert_eq!(
                finished(&after, *item).as_ref(),
                Some(at),
                "only the one item ran again: {after}"
            );
        }
    }
    app.stop().await;
}
