//! Live progress over SSE, fed by the workers' Redis notices.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn slow_items(prefix: char, n: usize, ms: u64) -> serde_json::Value {
    json!(
        video_ids(prefix, n)
            .into_iter()
            .map(|id| json!({"url": id, "transcript": format!("abridge:sleep {ms}\nAbout {id}.")}))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn progress_events_follow_the_batch_until_completed_on_any_replica() {
    // No periodic re-read: every event must come from a worker's notice through Redis.
    let refresh = [("ABRIDGE_API_EVENTS_REFRESH_MS", "600000")];
    let mut app = App::start(&refresh).await;
    let replica = Server::start(&app.env, &refresh).await;
    let token = app.token("acme").await;
    let id = app
        .create(&token, json!({"items": slow_items('p', 24, 150)}))
        .await;

    // Watch on the replica that did not create the batch.
    let (status, reader) = EventReader::open(&replica.base, &token, id, None).await;
    assert_eq!(status, 200);
    let mut reader = reader.unwrap();
    let (name, _, first) = reader.next().await.unwrap();
    assert_eq!(name, "progress");
    assert_eq!(
        first["counts"]["queued"], 24,
        "the current state comes first: {first}"
    );

    // Items are marked running at once (not after ABRIDGE_START_AFTER_MS), so starts show.
    app.start_worker_configured(
        std::sync::Arc::new(abridge_summarize::noop::Noop {
            delay: Duration::ZERO,
        }),
        4,
        &[("ABRIDGE_START_AFTER_MS", "0")],
    );
    let events = reader.collect(Duration::from_secs(30)).await;
    let (last_name, last_id, last) = events.last().cloned().expect("a final event");
    assert_eq!(last_name, "completed", "{events:?}");
    assert_eq!(last["counts"]["succeeded"], 24);
    assert_eq!(last["progress_percent"], 100.0);
    assert_eq!(last["eta_seconds"], 0);
    let progress: Vec<_> = events.iter().filter(|(n, _, _)| n == "progress").collect();
    assert!(
        progress.len() >= 2,
        "progress was reported on the way: {events:?}"
    );
    // Coalesced: far fewer events than the 48 item transitions.
    assert!(progress.len() < 30, "{} progress events", progress.len());
    let done: Vec<i64> = progress
        .iter()
        .map(|(_, _, v)| v["counts"]["succeeded"].as_i64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(
        progress
            .iter()
            .any(|(_, _, v)| v["counts"]["running"].as_i64().unwrap() > 0),
        "starts are reported too"
    );
    assert!(
        progress.iter().any(|(_, _, v)| v["eta_seconds"].is_u64()),
        "an ETA appears once items finish: {events:?}"
    );

    // Reconnecting after the end: a client that missed the final event gets it at once...
    let (_, progress_id, _) = progress.last().unwrap();
    let (status, again) =
        EventReader::open(&app.server.base, &token, id, progress_id.as_deref()).await;
    assert_eq!(status, 200);
    let again = again.unwrap().collect(Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0, "completed");
    assert_eq!(again[0].2["counts"]["succeeded"], 24);
    // ...and one that has it is told to stop (204).
    let (status, _) = EventReader::open(&app.server.base, &token, id, last_id.as_deref()).await;
    assert_eq!(status, 204);

    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_reconnect_mid_batch_resumes_with_the_current_state_and_the_end() {
    let mut app = App::start(&[]).await;
    let token = app.token("acme").await;
    let id = app
        .create(&token, json!({"items": slow_items('r', 12, 100)}))
        .await;
    app.start_worker(2);
    let (_, reader) = EventReader::open(&app.server.base, &token, id, None).await;
    let mut reader = reader.unwrap();
    // Read until some items are done, then drop the connection.
    let last_id = loop {
        let (_, eid, v) = reader.next().await.unwrap();
        if v["counts"]["succeeded"].as_i64().unwrap() >= 2 {
            break eid;
        }
    };
    drop(reader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, reader) =
        EventReader::open(&app.server.base, &token, id, last_id.as_deref()).await;
    assert_eq!(status, 200);
    let events = reader.unwrap().collect(Duration::from_secs(30)).await;
    assert_eq!(events.last().unwrap().0, "completed", "{events:?}");
    assert_eq!(events.last().unwrap().2["counts"]["succeeded"], 12);
    assert_ne!(events[0].1, last_id, "the state seen last is not repeated");
    app.stop().await;
}
