//! The ZIP export, unzipped and checked file by file.

use std::collections::HashMap;
use std::time::Duration;

use async_zip::base::read::mem::ZipFileReader;
use futures::AsyncReadExt;
use serde_json::{Value, json};

use crate::support::*;

/// Items 0..n: every 7th fails permanently, every 5th has a title (some with commas and
/// quotes), the rest are titled by their video id.
fn items(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = format!("e{i:010}");
            let transcript = if i % 7 == 3 {
                "abridge:fail permanent video_unavailable".to_owned()
            } else {
                format!("Point number {i}. Then more.")
            };
            let mut item = json!({"url": id, "transcript": transcript});
            if i % 5 == 0 {
                item["title"] = json!(format!("Talk {i}, \"live\" / part {i}"));
            }
            item
        })
        .collect()
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn export_zip_holds_every_summary_an_index_and_the_batch() {
    let n = 600; // several pages of the export's reads
    let mut app = App::start(&[]).await;
    app.start_worker(64);
    let token = app.token("acme").await;
    let id = app
        .create(&token, json!({"name": "export me", "items": items(n)}))
        .await;
    let b = app.wait_finished(&token, id, Duration::from_secs(60)).await;
    let failed = (0..n).filter(|i| i % 7 == 3).count();
    assert_eq!(b["counts"]["failed"].as_u64(), Some(failed as u64), "{b}");

    let response = app
        .http
        .get(app.url(&format!("/v1/batches/{id}/export")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("batch-{id}.zip"))
    );
    let bytes = response.bytes().await.unwrap().to_vec();

    // Where available, the system's unzip agrees that the archive is sound.
    if std::path::Path::new("/usr/bin/unzip").exists() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let out = std::process::Command::new("/usr/bin/unzip")
            .arg("-tq")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unzip -t: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let zip = ZipFileReader::new(bytes).await.expect("a valid zip");
    let mut files: HashMap<String, String> = HashMap::new();
    for i in 0..zip.file().entries().len() {
        let name = zip.file().entries()[i]
            .filename()
            .as_str()
            .unwrap()
            .to_owned();
        let mut reader = zip.reader_without_entry(i).await.unwrap();
        let mut text = String::new();
        reader.read_to_string(&mut text).await.unwrap();
        assert!(
            files.insert(name.clone(), text).is_none(),
            "duplicate entry {name}"
        );
    }
    assert_eq!(
        files.len(),
        n - failed + 2,
        "one summary per succeeded item, index.csv, batch.json"
    );

    // index.csv: a header and every item, in order.
    let rows = parse_csv(&files["index.csv"]);
    assert_eq!(
        rows[0],
        [
            "position",
            "video_id",
            "url",
            "title",
            "status",
            "attempts",
            "error_kind",
            "error_message",
            "finished_at",
            "file"
        ]
    );
    assert_eq!(rows.len(), n + 1);
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], i.to_string());
        assert_eq!(row[1], format!("e{i:010}"));
        assert_eq!(row[2], format!("https://www.youtube.com/watch?v=e{i:010}"));
        if i % 5 == 0 {
            assert_eq!(row[3], format!("Talk {i}, \"live\" / part {i}"));
        }
        if i % 7 == 3 {
            assert_eq!(
                (row[4].as_str(), row[6].as_str(), row[9].as_str()),
                ("failed", "video_unavailable", "")
            );
            // A tenant's export holds the kind's stable message, not the processor's text.
            assert!(row[7].starts_with("The video is unavailable"), "{row:?}");
        } else {
            assert_eq!(row[4], "succeeded");
            assert_eq!(row[6], "");
            // Its summary file exists and says what the item's summary says.
            let md = files
                .get(&row[9])
                .unwrap_or_else(|| panic!("no file {:?}", row[9]));
            let title = if i % 5 == 0 {
                row[3].clone()
            } else {
                row[1].clone()
            };
            assert_eq!(
                md,
                &format!("# {title}\n\n<{}>\n\nPoint number {i}.\n", row[2]),
                "{}",
                row[9]
            );
            assert!(
                row[9].starts_with(&format!("summaries/{:04}-", i + 1)),
                "{}",
                row[9]
            );
        }
    }
    assert_eq!(
        rows[1][9], "summaries/0001-Talk-0-live-part-0.md",
        "named by position and title"
    );

    // batch.json: the batch and every item.
    let batch: Value = serde_json::from_str(&files["batch.json"]).expect("batch.json is JSON");
    assert_eq!(batch["batch"]["id"], id.to_string());
    assert_eq!(batch["batch"]["name"], "export me");
    assert_eq!(batch["batch"]["status"], "completed");
    let items = batch["items"].as_array().unwrap();
    assert_eq!(items.len(), n);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["position"], i);
        if i % 7 == 3 {
            assert_eq!(
                (item["status"].as_str(), item["error_kind"].as_str()),
                (Some("failed"), Some("video_unavailable"))
            );
            assert!(item["file"].is_null());
        } else {
            assert_eq!(item["status"], "succeeded");
            assert_eq!(item["file"].as_str(), Some(rows[i + 1][9].as_str()));
        }
    }
    app.stop().await;
}
