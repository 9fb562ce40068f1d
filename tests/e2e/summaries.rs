//! Real summaries end to end: `abridge worker` processes summarize a batch of URLs of every
//! supported form against local stand-ins for YouTube and an LLM provider.

use std::time::Duration;

use abridge_core::ItemStatus;
use abridge_standins::llm::{LlmStandin, Provider};
use abridge_standins::youtube::{Behaviour, Track, Video, YoutubeStandin};
use abridge_testkit::TestEnv;

use crate::support::*;

const TALK: &[&str] = &[
    "Welcome back, today we look at how bread is made at home.",
    "Bread needs only flour, water, salt and yeast to rise well.",
    "Kneading develops gluten, which traps the gas the yeast makes.",
    "A slow first rise in a cool kitchen gives the bread more flavour.",
    "Shaping the dough tightly helps the loaf keep its height in the oven.",
    "Bake the bread in a very hot oven with steam for a crisp crust.",
    "Let the loaf cool completely before slicing so the crumb sets.",
    "Thanks for watching, see you next time.",
];

fn video(id: &str, title: &str) -> Video {
    let lines: Vec<(f64, f64, String)> = TALK
        .iter()
        .enumerate()
        .map(|(i, l)| (i as f64 * 15.0, 15.0, (*l).to_owned()))
        .collect();
    Video::new(
        id,
        title,
        vec![
            Track::new("en", true, lines.clone()),
            Track::new("en", false, lines),
        ],
    )
}

/// Every URL form, each naming another video; the last lines fail in known ways.
fn batch() -> String {
    [
        "https://www.youtube.com/watch?v=e2eWatch001&t=42s",
        "https://m.youtube.com/watch?feature=share&v=e2eMobile01",
        "https://music.youtube.com/watch?v=e2eMusic001&list=RD",
        "https://youtu.be/e2eShort001?si=abc",
        "youtu.be/e2eNoScheme",
        "https://www.youtube.com/shorts/e2eShorts01",
        "https://www.youtube.com/embed/e2eEmbed001?start=3",
        "https://www.youtube-nocookie.com/embed/e2eNocook01",
        "https://www.youtube.com/live/e2eLive0001",
        "https://www.youtube.com/v/e2eV0000001",
        "e2eBareId01",
        "https://www.youtube.com/watch?v=e2eConsent1",
        "https://www.youtube.com/watch?v=e2eLimited1",
        "https://www.youtube.com/watch?v=e2eGone0001",
        "https://www.youtube.com/watch?v=e2eNoCaps01",
        "https://www.youtube.com/watch?v=e2eAgeRest1",
        "https://www.youtube.com/watch?v=e2eBlocked1",
    ]
    .join("\n")
        + "\n"
}

const GOOD: [&str; 13] = [
    "e2eWatch001",
    "e2eMobile01",
    "e2eMusic001",
    "e2eShort001",
    "e2eNoScheme",
    "e2eShorts01",
    "e2eEmbed001",
    "e2eNocook01",
    "e2eLive0001",
    "e2eV0000001",
    "e2eBareId01",
    "e2eConsent1",
    "e2eLimited1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_summarize_every_url_form_and_the_cache_stops_refetching() {
    let mut videos: Vec<Video> = GOOD
        .iter()
        .map(|id| video(id, &format!("Bread {id}")))
        .collect();
    let behave = |id: &str, b: Behaviour| video(id, "x").behaving(b);
    videos[11] = video("e2eConsent1", "Bread e2eConsent1").behaving(Behaviour::Consent);
    videos[12] = video("e2eLimited1", "Bread e2eLimited1").behaving(Behaviour::RateLimitedFirst(1));
    videos.extend([
        behave("e2eGone0001", Behaviour::Unavailable),
        behave("e2eNoCaps01", Behaviour::TranscriptsDisabled),
        behave("e2eAgeRest1", Behaviour::AgeRestricted),
        behave("e2eBlocked1", Behaviour::BotCheck),
    ]);
    let youtube = YoutubeStandin::start(videos);
    let openai = LlmStandin::start(Provider::OpenAi);
    let (yt, oa) = (youtube.url(), openai.url());
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            ("ABRIDGE_SUMMARIZER", "extractive"),
            ("ABRIDGE_YOUTUBE_BASE_URL", &yt),
            ("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND", "50"),
            ("ABRIDGE_OPENAI_BASE_URL", &oa),
            ("ABRIDGE_OPENAI_API_KEY", "sk-e2e-secret-value"),
            ("ABRIDGE_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    fleet.spawn_worker(4);
    fleet.spawn_worker(4);

    let lines = batch();
    let first = fleet.enqueue(&lines);
    fleet.wait_finished(first, Duration::from_secs(90)).await;
    fleet.assert_exactly_once(first, 17).await;
    let items = fleet.store.items_of(first, None, 0, 100).await.unwrap();
    for item in &items {
        if GOOD.contains(&item.video_id.as_str()) {
            assert_eq!(
                item.status,
                ItemStatus::Succeeded,
                "{}: {:?}",
                item.video_id,
                item.error_message
            );
            let summary = item.summary.as_deref().unwrap();
            let title = format!("Bread {}", item.video_id);
            assert!(
                summary.starts_with(&format!("# {title}\n\n**TL;DR:** ")),
                "{summary}"
            );
            assert!(summary.contains("\n## Key points\n\n- ["), "{summary}");
            assert!(
                summary.contains(&format!("](https://youtu.be/{}?t=", item.video_id)),
                "{summary}"
            );
            assert_eq!(item.title.as_deref(), Some(title.as_str()));
            assert_eq!(
                item.result_meta.as_ref().unwrap()["transcript"]["kind"],
                "manual"
            );
        }
    }
    let kind = |id: &str| {
        let item = items.iter().find(|i| i.video_id == id).unwrap();
        assert_eq!(item.status, ItemStatus::Failed, "{id}");
        (item.error_kind.clone().unwrap(), item.attempts)
    };
    assert_eq!(kind("e2eGone0001"), ("video_unavailable".into(), 1));
    assert_eq!(kind("e2eNoCaps01"), ("transcripts_disabled".into(), 1));
    assert_eq!(kind("e2eAgeRest1"), ("age_restricted".into(), 1));
    assert_eq!(
        kind("e2eBlocked1"),
        ("request_blocked".into(), 3),
        "transient: retried, then failed"
    );
    let limited = items.iter().find(|i| i.video_id == "e2eLimited1").unwrap();
    assert_eq!(limited.attempts, 2, "429 then success");

    // A second batch of the same videos, with an LLM backend: no YouTube request at all.
    let before = youtube.total();
    let good_lines: String = GOOD.iter().map(|id| format!("{id}\n")).collect();
    let (code, out, err) = fleet.run(
        &[
            "enqueue",
            "--json",
            "--summarizer",
            "openai",
            "--length",
            "short",
            "-",
        ],
        Some(&good_lines),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let second = v["batch_id"].as_str().unwrap().parse().unwrap();
    fleet.wait_finished(second, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(second, GOOD.len()).await;
    let items = fleet.store.items_of(second, None, 0, 100).await.unwrap();
    for item in &items {
        assert_eq!(
            item.status,
            ItemStatus::Succeeded,
            "{:?}",
            item.error_message
        );
        let meta = item.result_meta.as_ref().unwrap();
        assert_eq!(
            (&meta["backend"], &meta["length"]),
            (&"openai".into(), &"short".into())
        );
        assert_eq!(meta["transcript"]["source"], "cache");
        assert!(
            item.summary
                .as_deref()
                .unwrap()
                .contains(&format!("](https://youtu.be/{}?t=", item.video_id))
        );
    }
    assert_eq!(
        youtube.total(),
        before,
        "the transcript cache stopped every refetch"
    );
    assert_eq!(openai.requests(), GOOD.len());

    // And a third, like the first: summaries come from the summary cache.
    let third = fleet.enqueue(&good_lines);
    fleet.wait_finished(third, Duration::from_secs(60)).await;
    let items = fleet.store.items_of(third, None, 0, 100).await.unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.result_meta.as_ref().unwrap()["summary_cache"] == "hit")
    );
    assert_eq!(youtube.total(), before);
}
