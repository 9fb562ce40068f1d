//! Transcripts: fetched once, cached per language, chosen by preference, failures classified.

use std::time::{Duration, Instant};

use abridge_core::{Backend, BatchOptions, ItemStatus, SummaryLength};
use abridge_standins::youtube::{Behaviour, Track};

use crate::support::*;

#[tokio::test]
async fn extractive_summaries_from_youtube_are_cached_and_not_refetched() {
    let video = "vid_Ownrshp";
    let s = Setup::new(vec![normal_video(video, "Ownership in Rust")], &[]).await;

    let (batch, items) = s
        .run_batch(
            &format!("https://youtu.be/{video}?t=10\n"),
            BatchOptions::default(),
        )
        .await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let item = &items[0];
    assert_eq!(
        item.title.as_deref(),
        Some("Ownership in Rust"),
        "the title is learned from YouTube"
    );
    let summary = item.summary.as_deref().unwrap();
    let seconds = assert_shape(summary, video, "Ownership in Rust");
    assert!(
        seconds.iter().all(|s| s % 20 == 0 && *s <= 240),
        "stamps are segment starts: {seconds:?}"
    );
    assert!(summary.contains("ownership"), "{summary}");
    let meta = item.result_meta.as_ref().unwrap();
    assert_eq!(meta["backend"], "extractive");
    assert_eq!(meta["model"], "lexrank");
    assert_eq!(meta["length"], "standard");
    assert_eq!(meta["transcript"]["source"], "youtube");
    assert_eq!(meta["transcript"]["language"], "en");
    assert_eq!(
        meta["transcript"]["kind"], "manual",
        "a manual track before the auto-generated one"
    );
    assert_eq!(meta["summary_cache"], "miss");
    assert!(meta["duration_ms"].is_u64());
    assert_eq!(s.youtube.counts(video).total(), 3);

    // Another batch, another length: the transcript comes from the cache.
    let (_, items) = s
        .run_batch(
            &format!("{video}\n"),
            BatchOptions {
                length: Some(SummaryLength::Short),
                ..BatchOptions::default()
            },
        )
        .await;
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(meta["transcript"]["source"], "cache");
    assert_eq!(meta["summary_cache"], "miss");
    let short = assert_shape(
        items[0].summary.as_deref().unwrap(),
        video,
        "Ownership in Rust",
    );
    assert!(
        short.len() < seconds.len(),
        "short has fewer key points: {short:?} vs {seconds:?}"
    );
    assert_eq!(s.youtube.counts(video).total(), 3, "no request to YouTube");

    // The same options again: the summary itself is reused.
    let (_, items) = s
        .run_batch(&format!("{video}\n"), BatchOptions::default())
        .await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["summary_cache"],
        "hit"
    );
    assert_eq!(items[0].summary.as_deref(), Some(summary));
    assert_eq!(s.youtube.counts(video).total(), 3);
}

#[tokio::test]
async fn language_preference_per_batch_fetches_each_language_once() {
    let video = "vid_Langs01";
    let s = Setup::new(
        vec![normal_video(video, "Langs")],
        &[("ABRIDGE_LANGUAGES", "de,en")],
    )
    .await;
    let (_, items) = s
        .run_batch(&format!("{video}\n"), BatchOptions::default())
        .await;
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(
        (&meta["language"], &meta["transcript"]["kind"]),
        (&"de".into(), &"manual".into())
    );
    assert!(items[0].summary.as_deref().unwrap().contains("Auf Deutsch"));

    let options = |l: &str| BatchOptions {
        language: Some(l.into()),
        ..BatchOptions::default()
    };
    let (_, items) = s.run_batch(&format!("{video}\n"), options("es,fr")).await;
    let meta = items[0].result_meta.as_ref().unwrap();
    assert_eq!(
        (&meta["language"], &meta["transcript"]["kind"]),
        (&"fr".into(), &"asr".into())
    );
    assert_eq!(meta["transcript"]["source"], "youtube");
    assert_eq!(
        s.youtube.counts(video).total(),
        5,
        "a second language is a second fetch (player and captions: the session is reused)"
    );

    // Both languages are cached now; a preference for either needs no request.
    let (_, items) = s.run_batch(&format!("{video}\n"), options("fr")).await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["transcript"]["source"],
        "cache"
    );
    let (_, items) = s.run_batch(&format!("{video}\n"), options("de")).await;
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["transcript"]["source"],
        "cache"
    );
    assert_eq!(s.youtube.counts(video).total(), 5);
}

#[tokio::test]
async fn youtube_failures_fail_items_with_their_kind_or_retry() {
    let videos = vec![
        normal_video("vid_Unavail", "x").behaving(Behaviour::Unavailable),
        normal_video("vid_Private", "x").behaving(Behaviour::Private),
        normal_video("vid_NoCapts", "x").behaving(Behaviour::TranscriptsDisabled),
        normal_video("vid_AgeRest", "x").behaving(Behaviour::AgeRestricted),
        normal_video("vid_Consent", "Consent").behaving(Behaviour::Consent),
        normal_video("vid_Limited", "Limited").behaving(Behaviour::RateLimitedFirst(1)),
        normal_video("vid_BotChck", "x").behaving(Behaviour::BotCheck),
        abridge_standins::youtube::Video::new(
            "vid_OnlyJap",
            "x",
            vec![Track::new("ja", false, talk_lines(5.0))],
        ),
    ];
    let s = Setup::new(videos, &[("ABRIDGE_MAX_ATTEMPTS", "3")]).await;
    let lines = "vid_Unavail\nvid_Private\nvid_NoCapts\nvid_AgeRest\nvid_Consent\nvid_Limited\nvid_BotChck\nvid_OnlyJap\n";
    let started = Instant::now();
    let (batch, items) = s.run_batch(lines, BatchOptions::default()).await;
    assert_eq!(batch.counts.succeeded, 2, "{items:#?}");
    let by_id = |id: &str| items.iter().find(|i| i.video_id == id).unwrap();
    for (id, kind) in [
        ("vid_Unavail", "video_unavailable"),
        ("vid_Private", "video_unavailable"),
        ("vid_NoCapts", "transcripts_disabled"),
        ("vid_AgeRest", "age_restricted"),
        ("vid_OnlyJap", "no_transcript"),
    ] {
        let item = by_id(id);
        assert_eq!(item.status, ItemStatus::Failed, "{id}");
        assert_eq!(
            item.error_kind.as_deref(),
            Some(kind),
            "{id}: {:?}",
            item.error_message
        );
        assert_eq!(item.attempts, 1, "{id}: a permanent failure is not retried");
    }
    assert!(
        by_id("vid_OnlyJap")
            .error_message
            .as_deref()
            .unwrap()
            .contains("it has: ja")
    );
    // The consent page is answered; a 429 is retried (after its Retry-After) and succeeds.
    assert_eq!(by_id("vid_Consent").status, ItemStatus::Succeeded);
    let limited = by_id("vid_Limited");
    assert_eq!(
        (limited.status, limited.attempts),
        (ItemStatus::Succeeded, 2)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    // The bot check is transient: retried until the attempts run out.
    let blocked = by_id("vid_BotChck");
    assert_eq!((blocked.status, blocked.attempts), (ItemStatus::Failed, 3));
    assert_eq!(blocked.error_kind.as_deref(), Some("request_blocked"));
}

#[tokio::test]
async fn supplied_transcripts_are_summarized_without_youtube() {
    let s = Setup::new(vec![], &[]).await;
    let transcript = TALK
        .iter()
        .enumerate()
        .map(|(i, l)| format!("[00:{:02}] {l}", i * 4))
        .collect::<Vec<_>>()
        .join("\\n");
    let line = format!(
        "{{\"url\": \"vid_Supplid\", \"title\": \"Given\", \"transcript\": \"{transcript}\"}}\n"
    );
    let (batch, items) = s.run_batch(&line, BatchOptions::default()).await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let seconds = assert_shape(items[0].summary.as_deref().unwrap(), "vid_Supplid", "Given");
    assert!(seconds.iter().all(|s| s % 4 == 0));
    assert_eq!(
        items[0].result_meta.as_ref().unwrap()["transcript"]["source"],
        "supplied"
    );
    assert_eq!(s.youtube.total(), 0);
}

#[tokio::test]
async fn the_youtube_budget_paces_requests() {
    // 7 to 9 requests (3 videos x player and timed text, and a watch page for each that
    // started before the fleet had a session) at 4 per second with a burst of 1 cannot take
    // less than 1.5 seconds.
    let videos = (0..3)
        .map(|i| normal_video(&format!("vid_Budget{i}"), "B"))
        .collect();
    let s = Setup::new(
        videos,
        &[
            ("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND", "4"),
            ("ABRIDGE_YOUTUBE_BURST", "1"),
        ],
    )
    .await;
    let started = Instant::now();
    let (batch, _) = s
        .run_batch(
            "vid_Budget0\nvid_Budget1\nvid_Budget2\n",
            BatchOptions::default(),
        )
        .await;
    assert_eq!(batch.counts.succeeded, 3);
    assert!(
        (7..=9).contains(&s.youtube.total()),
        "{}",
        s.youtube.total()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn nul_from_captions_titles_and_model_answers_never_reaches_postgres() {
    let video = "vid_NulText";
    // Captions with `&#0;` (which decodes to NUL), and a title with NUL in it.
    let lines: Vec<(f64, f64, String)> = talk_lines(20.0)
        .into_iter()
        .map(|(s, d, t)| (s, d, format!("{t} &#0;null&#0;")))
        .collect();
    let s = Setup::new(
        vec![abridge_standins::youtube::Video::new(
            video,
            "Nul\u{0} in the title",
            vec![Track::new("en", false, lines)],
        )],
        &[],
    )
    .await;

    // The captions and title go into the transcript cache and the extractive summary...
    let (batch, items) = s
        .run_batch(&format!("{video}\n"), BatchOptions::default())
        .await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let item = &items[0];
    assert_eq!(item.title.as_deref(), Some("Nul in the title"));
    let summary = item.summary.as_deref().unwrap();
    assert!(
        summary.contains("null") && !summary.contains('\0'),
        "{summary}"
    );
    let cached = s.env.store().cached_transcripts(video).await.unwrap();
    assert_eq!(cached.len(), 1);
    assert!(!cached[0].segments.to_string().contains("\\u0000"));

    // ...and, through a model's answer that repeats them, into the LLM summary and its cache.
    let (batch, items) = s
        .run_batch(
            &format!("{video}\n"),
            BatchOptions {
                backend: Some(Backend::Openai),
                ..BatchOptions::default()
            },
        )
        .await;
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    let summary = items[0].summary.as_deref().unwrap();
    assert!(
        summary.contains("null") && !summary.contains('\0'),
        "{summary}"
    );
}

#[tokio::test]
async fn a_large_transcript_is_summarized_off_the_async_runtime() {
    // A supplied transcript of ~1 MiB: LexRank over it is seconds of CPU in a test build.
    let sentences: String = (0..6_000)
        .map(|i| {
            format!(
                "{} Part {i} adds its own remark number {i}. ",
                TALK[i % TALK.len()]
            )
        })
        .collect();
    let line = serde_json::json!({ "url": "vid_BigTxt1", "transcript": sentences }).to_string();
    let s = Setup::new(vec![], &[]).await;

    // This test's runtime has one thread (`#[tokio::test]`): the worker, its keeper and this
    // ticker share it, so a summarizer that blocked the thread would stop the ticker too.
    let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let ticking = ticking.clone();
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            longest
        })
    };
    let started = Instant::now();
    let (batch, items) = s
        .run_batch(&format!("{line}\n"), BatchOptions::default())
        .await;
    let took = started.elapsed();
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    let longest_gap = ticker.await.unwrap();
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    eprintln!("summarized in {took:?}; the runtime's longest stall {longest_gap:?}");
    assert!(
        longest_gap < Duration::from_millis(250),
        "timers (lease renewal among them) stalled {longest_gap:?} while summarizing"
    );
}
