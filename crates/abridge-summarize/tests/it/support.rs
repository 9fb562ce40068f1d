//! A summarizer wired to a test's servers and stand-ins, and a worker running it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::settings::SettingsSource;
use abridge_core::{BatchId, BatchOptions, Priority};
use abridge_standins::llm::{LlmStandin, Provider};
use abridge_standins::youtube::{Track, Video, YoutubeStandin};
use abridge_store::{BatchView, ItemView};
use abridge_summarize::Summarizer;
use abridge_summarize::config::SummarizeConfig;
use abridge_testkit::TestEnv;
use abridge_worker::Worker;
use tokio::sync::oneshot;

pub const OPENAI_KEY: &str = "sk-test-openai-SECRET-4242";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-SECRET-4343";

pub struct Setup {
    pub env: TestEnv,
    pub youtube: YoutubeStandin,
    pub openai: LlmStandin,
    pub anthropic: LlmStandin,
    /// The `ABRIDGE_*` settings of this setup (stand-in URLs, keys, fast retries).
    pub vars: Vec<(String, String)>,
}

impl Setup {
    pub async fn new(videos: Vec<Video>, overrides: &[(&str, &str)]) -> Self {
        let env = TestEnv::new().await;
        let youtube = YoutubeStandin::start(videos);
        let openai = LlmStandin::start(Provider::OpenAi);
        let anthropic = LlmStandin::start(Provider::Anthropic);
        let (yt, oa, an) = (youtube.url(), openai.url(), anthropic.url());
        let mut all: Vec<(&str, &str)> = vec![
            ("ABRIDGE_SUMMARIZER", "extractive"),
            ("ABRIDGE_YOUTUBE_BASE_URL", &yt),
            ("ABRIDGE_OPENAI_BASE_URL", &oa),
            ("ABRIDGE_OPENAI_API_KEY", OPENAI_KEY),
            ("ABRIDGE_ANTHROPIC_BASE_URL", &an),
            ("ABRIDGE_ANTHROPIC_API_KEY", ANTHROPIC_KEY),
            ("ABRIDGE_LLM_RETRY_BASE_MS", "20"),
            ("ABRIDGE_LLM_RETRY_MAX_MS", "100"),
            ("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND", "0"),
        ];
        all.extend_from_slice(overrides);
        let vars = env.vars(&all);
        Self {
            env,
            youtube,
            openai,
            anthropic,
            vars,
        }
    }

    pub fn source(&self) -> SettingsSource {
        SettingsSource::from_vars(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn worker(&self) -> Worker {
        let settings = abridge_core::Settings::from_source(&self.source()).unwrap();
        let config = SummarizeConfig::from_source(&self.source(), &settings).unwrap();
        let store = self.env.store();
        let queue = self.env.queue(&settings);
        let summarizer = Summarizer::new(config, store.clone(), queue.clone()).unwrap();
        Worker {
            settings: Arc::new(settings),
            store,
            queue,
            processor: Arc::new(summarizer),
        }
    }

    /// Enqueues `lines` with `options`, runs a worker until the batch is finished, and
    /// returns the batch and its items.
    pub async fn run_batch(
        &self,
        lines: &str,
        options: BatchOptions,
    ) -> (BatchView, Vec<ItemView>) {
        self.run_batch_as(None, lines, options).await
    }

    /// [`Setup::run_batch`] for a batch of API tenant `tenant` (made if new); `None` is the
    /// operator's (a CLI batch).
    pub async fn run_batch_as(
        &self,
        tenant: Option<&str>,
        lines: &str,
        options: BatchOptions,
    ) -> (BatchView, Vec<ItemView>) {
        let worker = self.worker();
        let offer = abridge_control::Offer::from(&*worker.settings);
        let id = enqueue_as(&worker, tenant, lines, options, offer)
            .await
            .expect("enqueue");
        let store = worker.store.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(abridge_worker::run(worker, 4, async move {
            let _ = stopped.await;
        }));
        let batch = wait_finished(&store, id, Duration::from_secs(60)).await;
        let _ = stop.send(());
        running.await.unwrap().unwrap();
        let items = store.items_of(id, None, 0, 1000).await.unwrap();
        (batch, items)
    }
}

/// Enqueues `lines` as API tenant `tenant` (made if new; `None`: a CLI batch), with what
/// `offer` says the enqueuing process offers.
pub async fn enqueue_as(
    worker: &Worker,
    tenant: Option<&str>,
    lines: &str,
    options: BatchOptions,
    offer: abridge_control::Offer,
) -> Result<BatchId, abridge_control::ControlError> {
    if let Some(t) = tenant {
        worker.store.ensure_tenant(t, "whsec_test").await.unwrap();
    }
    let done = abridge_control::enqueue_once(
        &worker.store,
        &worker.queue,
        &worker.settings.queue,
        BatchInput::from_lines(lines),
        EnqueueRequest {
            name: None,
            priority: Priority::Normal,
            options,
            offer,
        },
        tenant.map(|t| abridge_control::Owner {
            tenant: Some(t),
            policy: None,
            webhook_url: None,
            idempotency: None,
        }),
    )
    .await?;
    let (abridge_control::EnqueueOnce::Created(done)
    | abridge_control::EnqueueOnce::Replayed { done, .. }) = done;
    Ok(done.batch_id)
}

pub async fn wait_finished(
    store: &abridge_store::Store,
    id: BatchId,
    timeout: Duration,
) -> BatchView {
    let deadline = Instant::now() + timeout;
    loop {
        let b = store.batch(id).await.unwrap().unwrap();
        if b.status.is_finished() {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "batch not finished: {:?}",
            b.counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sentences of a talk, one caption line each, `step` seconds apart.
pub fn talk_lines(step: f64) -> Vec<(f64, f64, String)> {
    TALK.iter()
        .enumerate()
        .map(|(i, l)| (i as f64 * step, step, (*l).to_owned()))
        .collect()
}

pub const TALK: &[&str] = &[
    "Welcome back to the channel, today we look at ownership in Rust.",
    "Ownership is the rule that every value in Rust has exactly one owner at a time.",
    "When the owner goes out of scope the value is dropped and its memory is freed.",
    "Borrowing lets code use a value through a reference without taking ownership of it.",
    "A mutable borrow is exclusive, so no other reference to the value can exist meanwhile.",
    "The borrow checker enforces these ownership rules at compile time with no runtime cost.",
    "Lifetimes describe how long a reference stays valid relative to the owner of the value.",
    "Most lifetimes are inferred, so you rarely write lifetime annotations yourself.",
    "Moving a value transfers ownership, and the old variable can no longer be used.",
    "Types that implement Copy are duplicated instead of moved when assigned.",
    "Smart pointers like Rc allow shared ownership when one owner is not enough.",
    "To sum up, ownership and borrowing give memory safety without a garbage collector.",
    "Thanks for watching, and see you in the next video about traits.",
];

/// A normal video: manual and auto-generated English, manual German (json3), auto French.
pub fn normal_video(id: &str, title: &str) -> Video {
    let de: Vec<(f64, f64, String)> = talk_lines(20.0)
        .into_iter()
        .map(|(s, d, t)| (s, d, format!("Auf Deutsch: {t}")))
        .collect();
    let fr: Vec<(f64, f64, String)> = talk_lines(20.0)
        .into_iter()
        .map(|(s, d, t)| (s, d, format!("En français: {t}")))
        .collect();
    Video::new(
        id,
        title,
        vec![
            Track::new("en", true, talk_lines(20.0)),
            Track::new("en", false, talk_lines(20.0)),
            Track::new("de", false, de).json3(),
            Track::new("fr", true, fr),
        ],
    )
}

/// Asserts the shared summary shape for `video`: title, TL;DR paragraph, timestamped key
/// points linking to the video at their second. Returns the key points' seconds.
pub fn assert_shape(summary: &str, video: &str, title: &str) -> Vec<u64> {
    let mut lines = summary.lines();
    assert_eq!(
        lines.next(),
        Some(format!("# {title}").as_str()),
        "{summary}"
    );
    assert_eq!(lines.next(), Some(""), "{summary}");
    let tldr = lines.next().unwrap();
    assert!(
        tldr.starts_with("**TL;DR:** ") && tldr.len() > 20,
        "{summary}"
    );
    assert_eq!(lines.next(), Some(""));
    assert_eq!(lines.next(), Some("## Key points"));
    assert_eq!(lines.next(), Some(""));
    let mut seconds = Vec::new();
    for point in lines {
        let rest = point
            .strip_prefix("- [")
            .unwrap_or_else(|| panic!("{point:?} in {summary}"));
        let (stamp, rest) = rest.split_once("](").unwrap();
        let (url, text) = rest.split_once(") ").unwrap();
        let secs: u64 = url
            .strip_prefix(&format!("https://youtu.be/{video}?t="))
            .unwrap_or_else(|| panic!("{url}"))
            .parse()
            .unwrap();
        assert_eq!(
            stamp,
            format!("{:02}:{:02}", secs / 60, secs % 60),
            "{point}"
        );
        assert!(!text.trim().is_empty());
        seconds.push(secs);
    }
    assert!(!seconds.is_empty(), "no key points: {summary}");
    seconds
}
