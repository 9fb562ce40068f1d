//! The YouTube client against a local stand-in that speaks YouTube's formats (no network).

mod lists;

use std::sync::Arc;
use std::time::{Duration, Instant};

use abridge_standins::youtube::{API_KEY, Behaviour, Track, Video, YoutubeStandin};
use abridge_youtube::{
    Segment, Session, SharedState, TrackKind, YoutubeClient, YoutubeConfig, YoutubeError,
};

const VIDEO: &str = "vid_Normal1";

fn lines(prefix: &str) -> Vec<(f64, f64, String)> {
    vec![
        (0.0, 2.5, format!("{prefix} welcome &amp;amp; hello")),
        (
            2.5,
            3.0,
            format!("{prefix} it&amp;#39;s &lt;b&gt;bold&lt;/b&gt;"),
        ),
        (65.25, 2.0, format!("{prefix} a minute in")),
    ]
}

fn normal(id: &str) -> Video {
    Video::new(
        id,
        "A \"normal\" video & more",
        vec![
            Track::new("en", true, lines("asr-en")),
            Track::new("en", false, lines("manual-en")),
            Track::new("de", false, lines("manual-de")).json3(),
            Track::new("fr", true, lines("asr-fr")),
        ],
    )
}

fn client(base: &str) -> YoutubeClient {
    YoutubeClient::new(&YoutubeConfig {
        base_url: base.parse().unwrap(),
        proxy: None,
        proxies: Vec::new(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn langs(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn fetches_the_preferred_track_manual_before_auto_generated() {
    let yt = YoutubeStandin::start(vec![normal(VIDEO)]);
    let c = client(&yt.url());

    let t = c.fetch_transcript(VIDEO, &langs(&["en"])).await.unwrap();
    assert_eq!((t.language.as_str(), t.kind), ("en", TrackKind::Manual));
    assert_eq!(t.title.as_deref(), Some("A \"normal\" video & more"));
    assert_eq!(t.channel.as_deref(), Some("Stand-in Channel"));
    assert_eq!(t.duration_s, Some(68));
    assert_eq!(
        t.segments,
        vec![
            Segment {
                start_ms: 0,
                dur_ms: 2500,
                text: "manual-en welcome & hello".into()
            },
            Segment {
                start_ms: 2500,
                dur_ms: 3000,
                text: "manual-en it's bold".into()
            },
            Segment {
                start_ms: 65250,
                dur_ms: 2000,
                text: "manual-en a minute in".into()
            },
        ]
    );
    assert_eq!(t.tracks.len(), 4);
    assert_eq!(
        yt.counts(VIDEO).total(),
        3,
        "watch page, player, timed text"
    );
    assert!(
        yt.bad_player_requests().is_empty(),
        "{:?}",
        yt.bad_player_requests()
    );

    // Preference order across languages; asr when a language has no manual track; json3.
    let t = c
        .fetch_transcript(VIDEO, &langs(&["fr", "de"]))
        .await
        .unwrap();
    assert_eq!((t.language.as_str(), t.kind), ("fr", TrackKind::Asr));
    let t = c
        .fetch_transcript(VIDEO, &langs(&["es", "de"]))
        .await
        .unwrap();
    assert_eq!((t.language.as_str(), t.kind), ("de", TrackKind::Manual));
    assert_eq!(t.segments[1].text, "manual-de it's bold");
}

#[tokio::test]
async fn answers_the_consent_page() {
    let yt = YoutubeStandin::start(vec![normal(VIDEO).behaving(Behaviour::Consent)]);
    let t = client(&yt.url())
        .fetch_transcript(VIDEO, &langs(&["en"]))
        .await
        .unwrap();
    assert_eq!(t.segments.len(), 3);
    assert_eq!(
        yt.counts(VIDEO).watch,
        2,
        "consent page, then the page with the cookie"
    );
}

#[tokio::test]
async fn classifies_permanent_failures() {
    let yt = YoutubeStandin::start(vec![
        normal("vid_Unavail").behaving(Behaviour::Unavailable),
        normal("vid_Private").behaving(Behaviour::Private),
        normal("vid_NoCapts").behaving(Behaviour::TranscriptsDisabled),
        normal("vid_AgeRest").behaving(Behaviour::AgeRestricted),
        normal(VIDEO),
    ]);
    let c = client(&yt.url());
    let cases = [
        ("vid_Unavail", &["en"][..], "video_unavailable"),
        ("vid_Private", &["en"][..], "video_unavailable"),
        ("vid_Missing", &["en"][..], "video_unavailable"),
        ("vid_NoCapts", &["en"][..], "transcripts_disabled"),
        ("vid_AgeRest", &["en"][..], "age_restricted"),
        (VIDEO, &["es", "it"][..], "no_transcript"),
        ("not-an-id", &["en"][..], "invalid_video"),
    ];
    for (video, wanted, kind) in cases {
        let e = c.fetch_transcript(video, &langs(wanted)).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{video}: {e}");
        assert!(!e.is_transient(), "{video}: {e}");
    }
    let e = c
        .fetch_transcript(VIDEO, &langs(&["es"]))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "video vid_Normal1 has no transcript in es; it has: en (auto-generated), en, de, fr (auto-generated)"
    );
    assert_eq!(
        yt.counts("not-an-id").total(),
        0,
        "an invalid id is never requested"
    );
}

#[tokio::test]
async fn classifies_transient_failures() {
    let yt = YoutubeStandin::start(vec![
        normal("vid_Limited").behaving(Behaviour::RateLimitedFirst(1)),
        normal("vid_BotChck").behaving(Behaviour::BotCheck),
        normal("vid_Captcha").behaving(Behaviour::Recaptcha),
        normal("vid_Down503").behaving(Behaviour::ServerError),
    ]);
    let c = client(&yt.url());
    let en = langs(&["en"]);

    let e = c.fetch_transcript("vid_Limited", &en).await.unwrap_err();
    assert_eq!(
        e,
        YoutubeError::RateLimited {
            what: "watch page",
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(e.is_transient());
    // 429 then success.
    assert_eq!(
        c.fetch_transcript("vid_Limited", &en)
            .await
            .unwrap()
            .segments
            .len(),
        3
    );

    for (video, kind) in [
        ("vid_BotChck", "request_blocked"),
        ("vid_Captcha", "request_blocked"),
        ("vid_Down503", "youtube_unavailable"),
    ] {
        // A fresh client (a fresh worker) has no session: it starts at the watch page.
        let e = client(&yt.url())
            .fetch_transcript(video, &en)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{video}: {e}");
        assert!(e.is_transient(), "{video}");
    }

    // Nothing listening: a connection error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = client(&url).fetch_transcript(VIDEO, &en).await.unwrap_err();
    assert_eq!(e.kind(), "connection_failed", "{e}");
    assert!(e.is_transient());

    // A server that accepts but never answers: a timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = YoutubeClient::new(&YoutubeConfig {
        base_url: format!("http://{}", silent.local_addr().unwrap())
            .parse()
            .unwrap(),
        proxy: None,
        proxies: Vec::new(),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    let started = Instant::now();
    let e = c.fetch_transcript(VIDEO, &en).await.unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn goes_through_an_explicit_proxy() {
    // The base URL's host does not resolve; only the proxy (the stand-in) can answer.
    let yt = YoutubeStandin::start(vec![normal(VIDEO)]);
    let c = YoutubeClient::new(&YoutubeConfig {
        base_url: "http://youtube.abridge-test.invalid".parse().unwrap(),
        proxy: Some(yt.url()),
        proxies: Vec::new(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let t = c.fetch_transcript(VIDEO, &langs(&["en"])).await.unwrap();
    assert_eq!(t.segments.len(), 3);
    assert_eq!(yt.counts(VIDEO).total(), 3);
}

/// The fleet's shared state, in memory (Redis in the worker).
#[derive(Default)]
struct MemoryShared {
    session: std::sync::Mutex<Option<Session>>,
    quarantined: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

#[async_trait::async_trait]
impl SharedState for MemoryShared {
    async fn session(&self) -> Option<Session> {
        self.session.lock().unwrap().clone()
    }
    async fn save_session(&self, session: &Session) {
        *self.session.lock().unwrap() = Some(session.clone());
    }
    async fn quarantined(&self, egress: &[&str]) -> Vec<Option<Duration>> {
        let q = self.quarantined.lock().unwrap();
        egress
            .iter()
            .map(|e| {
                q.get(*e)
                    .and_then(|until| until.checked_duration_since(Instant::now()))
            })
            .collect()
    }
    fn quarantine_for(&self) -> Duration {
        Duration::from_secs(60)
    }
    async fn quarantine(&self, egress: &str, _why: &YoutubeError) {
        self.quarantined
            .lock()
            .unwrap()
            .insert(egress.to_owned(), Instant::now() + Duration::from_secs(60));
    }
}

#[tokio::test]
async fn reuses_the_session_so_a_video_takes_two_requests_until_youtube_refuses_it() {
    let ids = ["vid_Session", "vid_Sessio2", "vid_Sessio3", "vid_Sessio4"];
    let yt = YoutubeStandin::start(ids.iter().map(|id| normal(id)).collect());
    let shared = Arc::new(MemoryShared::default());
    let c = client(&yt.url()).with_shared(shared.clone());
    let en = langs(&["en"]);

    let t = c.fetch_transcript(ids[0], &en).await.unwrap();
    assert_eq!(
        t.requests, 3,
        "the first video: watch page, player, captions"
    );
    assert_eq!(shared.session().await.unwrap().api_key, API_KEY);
    // Another worker (a new client) with the fleet's session skips the watch page.
    let other = client(&yt.url()).with_shared(shared.clone());
    let t = other.fetch_transcript(ids[1], &en).await.unwrap();
    assert_eq!(
        (t.requests, t.title.as_deref()),
        (2, Some("A \"normal\" video & more"))
    );
    assert_eq!(yt.counts(ids[1]).watch, 0);

    // YouTube rotates its key: the refused player call renews the session once.
    yt.rotate_api_key("AIzaSyRotatedKey_9876543210");
    let t = c.fetch_transcript(ids[2], &en).await.unwrap();
    assert_eq!(
        t.requests, 4,
        "player refused, watch page, player, captions"
    );
    assert_eq!(
        shared.session().await.unwrap().api_key,
        "AIzaSyRotatedKey_9876543210"
    );
    let t = other.fetch_transcript(ids[3], &en).await.unwrap();
    assert_eq!(
        t.requests, 3,
        "this worker's stale copy is refused once too"
    );
    let t = other.fetch_transcript(ids[0], &en).await.unwrap();
    assert_eq!(t.requests, 2);
    assert!(yt.bad_player_requests().is_empty());
}

#[tokio::test]
async fn reuses_the_consent_cookie_when_the_session_is_renewed() {
    let ids = ["vid_Consen1", "vid_Consen2"];
    let yt = YoutubeStandin::start(
        ids.iter()
            .map(|id| normal(id).behaving(Behaviour::Consent))
            .collect(),
    );
    let c = client(&yt.url()).with_shared(Arc::new(MemoryShared::default()));
    let en = langs(&["en"]);
    let t = c.fetch_transcript(ids[0], &en).await.unwrap();
    assert_eq!((t.requests, yt.counts(ids[0]).watch), (4, 2));
    yt.rotate_api_key("AIzaSyRotatedKey_9876543210");
    let t = c.fetch_transcript(ids[1], &en).await.unwrap();
    assert_eq!(
        yt.counts(ids[1]).watch,
        1,
        "the kept cookie passes the consent page at once"
    );
    assert_eq!(t.requests, 4);
}

#[tokio::test]
async fn a_blocked_proxy_is_quarantined_and_the_video_moves_to_the_next() {
    // Three stand-ins act as proxies (they serve absolute-form requests themselves); the
    // base URL does not resolve, so every request went through one of them.
    let videos = || vec![normal(VIDEO), normal("vid_Other01")];
    let (a, b, blocking) = (
        YoutubeStandin::start(videos()),
        YoutubeStandin::start(videos()),
        YoutubeStandin::start(videos()),
    );
    blocking.block(true);
    let shared = Arc::new(MemoryShared::default());
    let pool = |proxies: Vec<String>| {
        YoutubeClient::new(&YoutubeConfig {
            base_url: "http://youtube.abridge-test.invalid".parse().unwrap(),
            proxy: None,
            proxies,
            timeout: Duration::from_secs(5),
        })
        .unwrap()
        .with_shared(shared.clone())
    };
    let c = pool(vec![blocking.url(), a.url(), b.url()]);
    let ids = c.egress_ids();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter()
            .all(|id| id.starts_with("proxy-") && !id.contains("127.0.0.1"))
    );
    let en = langs(&["en"]);
    for video in [VIDEO, "vid_Other01", VIDEO, "vid_Other01"] {
        let t = c.fetch_transcript(video, &en).await.unwrap();
        assert_eq!(t.segments.len(), 3);
    }
    // The blocking proxy was tried at most once, then left alone while quarantined.
    assert!(blocking.total() <= 1, "{}", blocking.total());
    assert_eq!(
        shared.quarantined(&[ids[0].as_str()]).await[0].is_some(),
        blocking.total() == 1
    );
    assert!(a.total() + b.total() >= 8);

    // Every proxy blocked: the fetch waits for the first to come back, not a failure.
    a.block(true);
    b.block(true);
    let e = c.fetch_transcript("vid_Other01", &en).await.unwrap_err();
    let YoutubeError::EgressBlocked { wait } = e else {
        panic!("{e}")
    };
    assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
    let item: abridge_core::ItemError = YoutubeError::EgressBlocked { wait }.into();
    assert!(item.is_deferred());
    assert_eq!(item.kind().as_str(), "egress_blocked");
}
