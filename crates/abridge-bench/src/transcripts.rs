//! Transcripts: requests to YouTube per summarized video, the fleet's real bound under
//! YouTube's limits. A worker in this process (the real summarizer, extractive) summarizes a
//! batch of videos served by the YouTube stand-in; the stand-in counts what it was asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::settings::SettingsSource;
use abridge_core::{BatchOptions, Priority};
use abridge_standins::youtube::{Track, Video, YoutubeStandin};
use abridge_summarize::Summarizer;
use abridge_summarize::config::SummarizeConfig;

use crate::burndown::round;
use crate::servers::{Servers, fresh_queue, wait_batch_finished};
use crate::{BenchOptions, Record};

/// Videos in the batch: enough that the first one's watch page is a rounding error.
const VIDEOS: usize = 300;

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let ids: Vec<String> = (0..VIDEOS).map(|i| format!("t{i:010}")).collect();
    let lines: Vec<(f64, f64, String)> = (0..40)
        .map(|i| {
            (
                f64::from(i) * 6.0,
                6.0,
                format!("Sentence {i} of a talk about queues, leases and fencing tokens."),
            )
        })
        .collect();
    let youtube = YoutubeStandin::start(
        ids.iter()
            .map(|id| Video::new(id, "A talk", vec![Track::new("en", false, lines.clone())]))
            .collect(),
    );
    let queue_name = fresh_queue("transcripts");
    let url = youtube.url();
    let concurrency = opts.concurrency.clamp(1, 64).to_string();
    let source = SettingsSource::from_vars([
        ("ABRIDGE_DATABASE_URL", servers.database_url.expose()),
        ("ABRIDGE_REDIS_URL", servers.redis_url.expose()),
        ("ABRIDGE_REDIS_PREFIX", "abridge-bench"),
        ("ABRIDGE_QUEUE", queue_name.as_str()),
        ("ABRIDGE_SUMMARIZER", "extractive"),
        ("ABRIDGE_YOUTUBE_BASE_URL", url.as_str()),
        ("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND", "0"),
        ("ABRIDGE_CONCURRENCY", concurrency.as_str()),
    ]);
    let settings = abridge_core::Settings::from_source(&source)?;
    let config = SummarizeConfig::from_source(&source, &settings)?;
    let store = servers.store(8)?;
    let queue = servers.queue(&queue_name)?;
    let worker = abridge_worker::Worker {
        processor: Arc::new(Summarizer::new(config, store.clone(), queue.clone())?),
        settings: Arc::new(settings),
        store: store.clone(),
        queue: queue.clone(),
    };
    let offer = abridge_control::Offer::from(&*worker.settings);
    let done = abridge_control::enqueue(
        &store,
        &queue,
        &queue_name,
        BatchInput::from_lines(&(ids.join("\n") + "\n")),
        EnqueueRequest {
            name: Some("transcripts"),
            priority: Priority::Normal,
            options: BatchOptions::default(),
            offer,
        },
    )
    .await?;
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let concurrency = worker.settings.concurrency;
    let running = tokio::spawn(abridge_worker::run(worker, concurrency, async move {
        let _ = stopped.await;
    }));
    let finished = wait_batch_finished(&store, done.batch_id, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.await??;
    anyhow::ensure!(
        finished,
        "the transcripts batch did not finish in 10 minutes"
    );
    let counts = store.counts(done.batch_id).await?;
    anyhow::ensure!(
        counts.succeeded == VIDEOS as i64,
        "{} of {VIDEOS} videos succeeded",
        counts.succeeded
    );
    let requests = youtube.total();
    Ok(vec![
        Record::new("transcripts")
            .set("videos", VIDEOS)
            .set("youtube_requests", requests)
            .set(
                "requests_per_video",
                round(f64::from(requests) / VIDEOS as f64, 3),
            )
            .set("videos_per_s", round(VIDEOS as f64 / seconds, 1)),
    ])
}
