//! YouTube captions without an API key, fetched the way working open-source clients do:
//!
//! 1. the watch page (`GET /watch?v=ID`), answering the cookie-consent interstitial, for the
//!    `INNERTUBE_API_KEY` and the title; the key (and the consent cookie) is then reused for
//!    later videos (a [`Session`], shared through [`SharedState`]) until the player refuses it,
//!    so the common path is two requests a video;
//! 2. the innertube player (`POST /youtubei/v1/player?key=KEY`, ANDROID client context) for
//!    `playabilityStatus`, `videoDetails` and the caption tracks;
//! 3. the chosen track's `baseUrl`: timed-text XML (`<transcript><text start= dur=>`), or json3.
//!
//! Every failure is classified ([`YoutubeError`]): permanent ones (the video is unavailable,
//! has no captions in the wanted languages, ...) fail an item at once, transient ones (429, the
//! bot check, 5xx, timeouts) are retried by the worker runtime.
//!
//! - [`page`]: reading the watch page (consent form, API key, title, recaptcha).
//! - [`player`]: the player response: playability, video details, caption tracks, track choice.
//! - [`timedtext`]: the transcript formats, and HTML entities.
//! - [`browse`]: playlists and channels' videos (innertube `browse` and its continuations),
//!   for expanding a batch's list lines at enqueue.
//!
//! This crate is the only one that talks to YouTube. It knows nothing of caches or budgets: a
//! [`Throttle`] is asked before every request, so the caller can share a fleet-wide budget,
//! and a [`SharedState`] keeps what the fleet shares (the session, quarantined proxies).
//!
//! With a pool of proxies, each video's requests go out through one proxy; a proxy that
//! answers with a block (429, the bot check, a captcha, or cannot be reached) is quarantined
//! and the video is fetched again through the next one, within the same attempt. When every
//! proxy is quarantined the fetch fails with [`YoutubeError::EgressBlocked`] (the item waits).

pub mod browse;
mod config;
pub mod page;
pub mod player;
pub mod timedtext;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_core::{ErrorKind, ItemError};
use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use url::Url;

pub use player::{CaptionTrack, TrackKind, choose_track};
pub use timedtext::Segment;

/// The innertube client we present ourselves as: the ANDROID client's caption tracks are
/// served without the proof-of-origin token the web client now needs.
const INNERTUBE_CLIENT_NAME: &str = "ANDROID";
const INNERTUBE_CLIENT_VERSION: &str = "20.10.38";
const BROWSER_USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// How a [`YoutubeClient`] reaches YouTube.
#[derive(Clone, Debug)]
pub struct YoutubeConfig {
    /// `https://www.youtube.com`, or a stand-in / mirror.
    pub base_url: Url,
    /// An explicit HTTP(S) proxy for every YouTube request. Without one, the usual
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` variables apply.
    pub proxy: Option<String>,
    /// A pool of proxies (instead of `proxy`): blocks quarantine a proxy and move the video
    /// to another.
    pub proxies: Vec<String>,
    /// Per request (connect, send, read the body).
    pub timeout: Duration,
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        Self {
            base_url: Url::parse("https://www.youtube.com").expect("valid url"),
            proxy: None,
            proxies: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Asked before every request to YouTube (the fleet-wide request budget). It may wait; an error
/// stops the fetch.
#[async_trait]
pub trait Throttle: Send + Sync {
    /// `egress` is the way out the request takes ([`DIRECT`], or a proxy's id).
    async fn before_request(&self, egress: &str) -> Result<(), YoutubeError>;
}

/// The egress id of requests that go out without a pool.
pub const DIRECT: &str = "direct";

/// What one watch page gives that later videos reuse until YouTube refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// innertube's `INNERTUBE_API_KEY`.
    pub api_key: String,
    /// `CONSENT=YES+...`, once a consent page was answered: sent with later watch pages.
    pub consent_cookie: Option<String>,
}

/// What the fleet shares about reaching YouTube, kept by the caller (in Redis). Failing to
/// read or write it costs requests, never a video: implementations fail open.
#[async_trait]
pub trait SharedState: Send + Sync {
    async fn session(&self) -> Option<Session>;
    async fn save_session(&self, session: &Session);
    /// For each of `egress`: how much longer it stays quarantined (`None`: usable now).
    async fn quarantined(&self, egress: &[&str]) -> Vec<Option<Duration>>;
    /// Takes a proxy out of use: it answered with a block.
    async fn quarantine(&self, egress: &str, why: &YoutubeError);
    /// How long a quarantine lasts: the wait of a video that found every proxy blocked when
    /// the quarantine cannot be read back.
    fn quarantine_for(&self) -> Duration;
}

/// One way out to YouTube: directly, or through one proxy of the pool.
#[derive(Clone)]
struct Egress {
    /// [`DIRECT`], or `proxy-` and a short hash of the proxy's URL (the URL may hold
    /// credentials, and is never printed).
    id: String,
    http: reqwest::Client,
}

/// A video's details and caption tracks, as the player reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub video_id: String,
    pub title: Option<String>,
    /// The channel's name.
    pub channel: Option<String>,
    pub duration_s: Option<i32>,
    pub tracks: Vec<CaptionTrack>,
}

/// One video's transcript in one language, with the details that came with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub video_id: String,
    pub title: Option<String>,
    pub channel: Option<String>,
    pub duration_s: Option<i32>,
    /// The track's language code (`en`, `pt-BR`).
    pub language: String,
    pub kind: TrackKind,
    pub segments: Vec<Segment>,
    /// Every track the video offers (so a cached transcript can answer a later preference).
    pub tracks: Vec<CaptionTrack>,
    /// Requests this fetch made to YouTube (blocked ones through other proxies included).
    #[serde(skip)]
    pub requests: u32,
}

/// Why a fetch failed. [`YoutubeError::kind`] is the item's `error_kind`;
/// [`YoutubeError::is_transient`] decides retry or fail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YoutubeError {
    #[error("video {video} is unavailable: {reason}")]
    VideoUnavailable { video: String, reason: String },
    #[error("video {video} has transcripts disabled")]
    TranscriptsDisabled { video: String },
    #[error("video {video} has no transcript in {wanted}; it has: {available}")]
    NoTranscript {
        video: String,
        wanted: String,
        available: String,
    },
    #[error("video {video} is age-restricted: {reason}")]
    AgeRestricted { video: String, reason: String },
    #[error("{video:?} is not a valid YouTube video: {reason}")]
    InvalidVideo { video: String, reason: String },
    #[error("youtube rate-limited the request ({what}, HTTP 429)")]
    RateLimited {
        what: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("youtube blocked the request ({what}): {reason}")]
    RequestBlocked { what: &'static str, reason: String },
    #[error("youtube answered HTTP {status} ({what})")]
    Server { what: &'static str, status: u16 },
    #[error("youtube did not answer in time ({what})")]
    Timeout { what: &'static str },
    #[error("reach youtube ({what}): {cause}")]
    Connection { what: &'static str, cause: String },
    #[error("youtube answered something unexpected ({what}): {detail}")]
    Unexpected { what: &'static str, detail: String },
    /// The caller's [`Throttle`] refused or could not decide.
    #[error("youtube request budget: {0}")]
    Budget(String),
    /// Every proxy of the pool is quarantined; the soonest is back after `wait`.
    #[error("every youtube proxy is quarantined after blocks; the first is back in {} s", wait.as_secs())]
    EgressBlocked { wait: Duration },
}

impl YoutubeError {
    /// The item's `error_kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::VideoUnavailable { .. } => "video_unavailable",
            Self::TranscriptsDisabled { .. } => "transcripts_disabled",
            Self::NoTranscript { .. } => "no_transcript",
            Self::AgeRestricted { .. } => "age_restricted",
            Self::InvalidVideo { .. } => "invalid_video",
            Self::RateLimited { .. } => "rate_limited",
            Self::RequestBlocked { .. } => "request_blocked",
            Self::Server { .. } => "youtube_unavailable",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection_failed",
            Self::Unexpected { .. } => "youtube_unexpected",
            Self::Budget(_) => "budget_unavailable",
            Self::EgressBlocked { .. } => "egress_blocked",
        }
    }

    /// Worth retrying later: rate limits, bot checks, 5xx, timeouts, connection errors, and
    /// answers we could not read (YouTube changes; a retry often gets a normal page).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::VideoUnavailable { .. }
                | Self::TranscriptsDisabled { .. }
                | Self::NoTranscript { .. }
                | Self::AgeRestricted { .. }
                | Self::InvalidVideo { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// YouTube refused this way out, not the video: through a pool, another proxy may pass.
    /// A proxy that cannot be reached counts too.
    pub fn is_block(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::RequestBlocked { .. } | Self::Connection { .. }
        )
    }
}

impl From<YoutubeError> for ItemError {
    fn from(e: YoutubeError) -> Self {
        let kind = ErrorKind::from_static(e.kind());
        if let YoutubeError::Budget(_) = &e {
            // The fleet is pacing itself: wait without using up an attempt.
            return ItemError::deferred(
                ErrorKind::from_static("budget_exhausted"),
                e.to_string(),
                Duration::from_secs(1),
            );
        }
        if let YoutubeError::EgressBlocked { wait } = &e {
            // Not the video's fault: it waits for a proxy, without using up an attempt.
            return ItemError::deferred(kind, e.to_string(), *wait);
        }
        if e.is_transient() {
            ItemError::Transient {
                kind,
                retry_after: e.retry_after(),
                message: e.to_string(),
            }
        } else {
            ItemError::permanent(kind, e.to_string())
        }
    }
}

/// A YouTube client. Cheap to clone.
#[derive(Clone)]
pub struct YoutubeClient {
    egress: Arc<[Egress]>,
    /// Whether `egress` is a pool: a block quarantines the proxy and moves on.
    pool: bool,
    base: Url,
    throttle: Option<Arc<dyn Throttle>>,
    shared: Option<Arc<dyn SharedState>>,
    /// This process's copy of the session (read from `shared` when empty).
    session: Arc<Mutex<Option<Session>>>,
}

impl std::fmt::Debug for YoutubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoutubeClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// The client could not be built (a bad proxy URL, TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("build youtube client: {0}")]
pub struct BuildError(String);

impl YoutubeClient {
    pub fn new(config: &YoutubeConfig) -> Result<Self, BuildError> {
        // reqwest is built without a default TLS provider (see the workspace manifest).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |proxy: Option<&str>| -> Result<reqwest::Client, BuildError> {
            let mut builder = reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.timeout.min(Duration::from_secs(10)))
                .user_agent(BROWSER_USER_AGENT);
            if let Some(proxy) = proxy {
                let proxy = reqwest::Proxy::all(proxy)
                    .map_err(|e| BuildError(format!("proxy: {}", e.without_url())))?;
                builder = builder.proxy(proxy);
            }
            builder.build().map_err(|e| BuildError(e.to_string()))
        };
        let egress: Vec<Egress> = if config.proxies.is_empty() {
            vec![Egress {
                id: DIRECT.to_owned(),
                http: build(config.proxy.as_deref())?,
            }]
        } else {
            config
                .proxies
                .iter()
                .map(|p| {
                    Ok(Egress {
                        id: egress_id(p),
                        http: build(Some(p))?,
                    })
                })
                .collect::<Result<_, BuildError>>()?
        };
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            pool: !config.proxies.is_empty(),
            egress: egress.into(),
            base,
            throttle: None,
            shared: None,
            session: Arc::default(),
        })
    }

    /// Shares the session and the proxies' quarantine through `shared`.
    pub fn with_shared(mut self, shared: Arc<dyn SharedState>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The ids of the ways out, in the pool's order (for metrics and tests).
    pub fn egress_ids(&self) -> Vec<String> {
        self.egress.iter().map(|e| e.id.clone()).collect()
    }

    /// Asks `throttle` before every request.
    pub fn with_throttle(mut self, throttle: Arc<dyn Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// The transcript in the first of `languages` the video has (manual tracks before
    /// auto-generated ones for each language). Through a pool, a blocked proxy is quarantined
    /// and the fetch starts again through the next one (starting from a proxy chosen by the
    /// video id, so videos spread over the pool).
    pub async fn fetch_transcript(
        &self,
        video_id: &str,
        languages: &[String],
    ) -> Result<Transcript, YoutubeError> {
        if !is_video_id(video_id) {
            return Err(YoutubeError::InvalidVideo {
                video: video_id.to_owned(),
                reason: "a video id is 11 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
            });
        }
        let mut requests = 0;
        if !self.pool {
            let mut t = self
                .fetch_through(&self.egress[0], video_id, languages, &mut requests)
                .await?;
            t.requests = requests;
            return Ok(t);
        }
        let n = self.egress.len();
        let first = video_id.bytes().map(usize::from).sum::<usize>() % n;
        let order: Vec<&Egress> = (0..n).map(|i| &self.egress[(first + i) % n]).collect();
        let quarantined = match &self.shared {
            Some(shared) => {
                let ids: Vec<&str> = order.iter().map(|e| e.id.as_str()).collect();
                shared.quarantined(&ids).await
            }
            None => vec![None; n],
        };
        let mut soonest: Option<Duration> = None;
        for (egress, quarantine) in order.into_iter().zip(quarantined) {
            if let Some(wait) = quarantine {
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                continue;
            }
            match self
                .fetch_through(egress, video_id, languages, &mut requests)
                .await
            {
                Err(e) if e.is_block() => {
                    tracing::info!(egress = %egress.id, error = %e, "youtube blocked a proxy; quarantining it and trying the next");
                    if let Some(shared) = &self.shared {
                        shared.quarantine(&egress.id, &e).await;
                    }
                }
                Ok(mut t) => {
                    t.requests = requests;
                    return Ok(t);
                }
                Err(e) => return Err(e),
            }
        }
        if soonest.is_none()
            && let Some(shared) = &self.shared
        {
            // Every proxy was blocked just now: the first back is the first quarantined.
            let ids: Vec<&str> = self.egress.iter().map(|e| e.id.as_str()).collect();
            soonest = shared.quarantined(&ids).await.into_iter().flatten().min();
            soonest = soonest.or(Some(shared.quarantine_for()));
        }
        Err(YoutubeError::EgressBlocked {
            wait: soonest.unwrap_or(Duration::from_secs(60)),
        })
    }

    async fn fetch_through(
        &self,
        egress: &Egress,
        video_id: &str,
        languages: &[String],
        requests: &mut u32,
    ) -> Result<Transcript, YoutubeError> {
        let info = self.video_info(egress, video_id, requests).await?;
        let track = choose_track(&info.tracks, languages)
            .ok_or_else(|| no_transcript(&info, languages))?
            .clone();
        let segments = self.fetch_track(egress, video_id, &track, requests).await?;
        Ok(Transcript {
            video_id: info.video_id,
            title: info.title,
            channel: info.channel,
            duration_s: info.duration_s,
            language: track.language,
            kind: track.kind,
            segments,
            tracks: info.tracks,
            requests: 0,
        })
    }

    /// The video's details and caption tracks: the player with the session's key, or the
    /// watch page (for a key) first when there is no session or the player refused its key.
    async fn video_info(
        &self,
        egress: &Egress,
        video_id: &str,
        requests: &mut u32,
    ) -> Result<VideoInfo, YoutubeError> {
        let mut session = self.current_session().await;
        let mut refused: Option<Session> = None;
        while let Some(s) = session.take() {
            if let Some(response) = self.player(egress, video_id, &s.api_key, requests).await? {
                return player::read_player(video_id, &response);
            }
            // Refused: another worker may have renewed the session already.
            session = self
                .shared_session()
                .await
                .filter(|fresh| fresh.api_key != s.api_key && refused.is_none());
            refused = Some(s);
        }
        // No session, or the player refused its key: a watch page for a fresh one.
        let cookie = refused.as_ref().and_then(|s| s.consent_cookie.clone());
        let (watch, consent_cookie) = self.watch_page(egress, video_id, cookie, requests).await?;
        let refused_same_key = refused.as_ref().is_some_and(|s| s.api_key == watch.api_key);
        self.keep_session(Session {
            api_key: watch.api_key.clone(),
            consent_cookie,
        })
        .await;
        let response = if refused_same_key {
            // The key is the one just refused: the player refused the video, not the key.
            None
        } else {
            self.player(egress, video_id, &watch.api_key, requests)
                .await?
        };
        let Some(response) = response else {
            // innertube answers 400 INVALID_ARGUMENT for ids it cannot parse.
            return Err(YoutubeError::InvalidVideo {
                video: video_id.to_owned(),
                reason: "the player refused the video id (HTTP 400)".into(),
            });
        };
        let mut info = player::read_player(video_id, &response)?;
        if info.title.is_none() {
            info.title = watch.title;
        }
        Ok(info)
    }

    /// This process's session, else the fleet's.
    async fn current_session(&self) -> Option<Session> {
        let held = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if held.is_some() {
            return held;
        }
        self.shared_session().await
    }

    /// The fleet's session, kept as this process's too.
    async fn shared_session(&self) -> Option<Session> {
        let shared = self.shared.as_ref()?.session().await?;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(shared.clone());
        Some(shared)
    }

    async fn keep_session(&self, session: Session) {
        let changed = {
            let mut held = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let changed = held.as_ref() != Some(&session);
            *held = Some(session.clone());
            changed
        };
        if changed && let Some(shared) = &self.shared {
            shared.save_session(&session).await;
        }
    }

    /// One track's segments.
    async fn fetch_track(
        &self,
        egress: &Egress,
        video_id: &str,
        track: &CaptionTrack,
        requests: &mut u32,
    ) -> Result<Vec<Segment>, YoutubeError> {
        const WHAT: &str = "timed text";
        let url = self.track_url(&track.base_url)?;
        self.wait_for_budget(egress, requests).await?;
        let response = egress
            .http
            .get(url)
            .header(ACCEPT_LANGUAGE, "en-US,en;q=0.9")
            .send()
            .await
            .map_err(|e| request_error(WHAT, &e))?;
        let body = read_ok(WHAT, response).await?;
        if body.trim().is_empty() {
            return Err(YoutubeError::RequestBlocked {
                what: WHAT,
                reason: "the caption track came back empty (YouTube withholds captions from \
                         clients it does not trust)"
                    .into(),
            });
        }
        let segments = timedtext::parse(&body)
            .map_err(|detail| YoutubeError::Unexpected { what: WHAT, detail })?;
        if segments.is_empty() {
            return Err(YoutubeError::NoTranscript {
                video: video_id.to_owned(),
                wanted: track.language.clone(),
                available: format!("an empty {} track", track.language),
            });
        }
        Ok(segments)
    }

    /// Asks the budget for one request through `egress`, and counts it.
    async fn wait_for_budget(
        &self,
        egress: &Egress,
        requests: &mut u32,
    ) -> Result<(), YoutubeError> {
        if let Some(t) = &self.throttle {
            t.before_request(&egress.id).await?;
        }
        *requests += 1;
        Ok(())
    }

    /// The watch page, past the consent interstitial if YouTube shows one (a consent
    /// cookie from an earlier page is sent at once); returns the cookie it sent, if any.
    async fn watch_page(
        &self,
        egress: &Egress,
        video_id: &str,
        mut consent_cookie: Option<String>,
        requests: &mut u32,
    ) -> Result<(page::WatchPage, Option<String>), YoutubeError> {
        const WHAT: &str = "watch page";
        let mut url = self.base.join("watch").expect("valid path");
        url.query_pairs_mut().append_pair("v", video_id);
        let mut answered = false;
        for _ in 0..2 {
            self.wait_for_budget(egress, requests).await?;
            let mut request = egress
                .http
                .get(url.clone())
                .header(ACCEPT_LANGUAGE, "en-US,en;q=0.9");
            if let Some(cookie) = &consent_cookie {
                request = request.header(COOKIE, cookie);
            }
            let response = request.send().await.map_err(|e| request_error(WHAT, &e))?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(YoutubeError::VideoUnavailable {
                    video: video_id.to_owned(),
                    reason: "the watch page does not exist (HTTP 404)".into(),
                });
            }
            let html = read_ok(WHAT, response).await?;
            match page::read_watch_page(&html) {
                page::PageRead::Page(page) => return Ok((page, consent_cookie)),
                page::PageRead::Consent { value } if !answered => {
                    tracing::debug!(video = video_id, "answering youtube's consent page");
                    consent_cookie = Some(format!("CONSENT=YES+{value}"));
                    answered = true;
                }
                page::PageRead::Consent { .. } => {
                    return Err(YoutubeError::RequestBlocked {
                        what: WHAT,
                        reason: "the cookie consent page came back after answering it".into(),
                    });
                }
                page::PageRead::Recaptcha => {
                    return Err(YoutubeError::RequestBlocked {
                        what: WHAT,
                        reason: "YouTube asks for a captcha (too many requests from this IP \
                                 address; route through a proxy with ABRIDGE_YOUTUBE_PROXY)"
                            .into(),
                    });
                }
                page::PageRead::Unreadable(detail) => {
                    return Err(YoutubeError::Unexpected { what: WHAT, detail });
                }
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The player's response; `None` when it answers 400 (it refuses the key or the id).
    async fn player(
        &self,
        egress: &Egress,
        video_id: &str,
        api_key: &str,
        requests: &mut u32,
    ) -> Result<Option<serde_json::Value>, YoutubeError> {
        const WHAT: &str = "innertube player";
        let mut url = self.base.join("youtubei/v1/player").expect("valid path");
        url.query_pairs_mut().append_pair("key", api_key);
        let body = serde_json::json!({
            "context": { "client": {
                "clientName": INNERTUBE_CLIENT_NAME,
                "clientVersion": INNERTUBE_CLIENT_VERSION,
            } },
            "videoId": video_id,
        });
        let response = self
            .post_innertube(egress, url, &body, WHAT, requests)
            .await?;
        if response.status() == StatusCode::BAD_REQUEST {
            return Ok(None);
        }
        let text = read_ok(WHAT, response).await?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| YoutubeError::Unexpected {
                what: WHAT,
                detail: format!("not JSON: {e}"),
            })
    }

    /// One innertube call (`POST /youtubei/v1/...` with a JSON body) through `egress`, after
    /// its budget; the response whatever its status.
    async fn post_innertube(
        &self,
        egress: &Egress,
        url: Url,
        body: &serde_json::Value,
        what: &'static str,
        requests: &mut u32,
    ) -> Result<reqwest::Response, YoutubeError> {
        self.wait_for_budget(egress, requests).await?;
        egress
            .http
            .post(url)
            .header(ACCEPT_LANGUAGE, "en-US,en;q=0.9")
            .json(body)
            .send()
            .await
            .map_err(|e| request_error(what, &e))
    }

    /// A track's URL, with `fmt=srv3` dropped (the classic `<transcript>` format is the
    /// default) and made absolute against the base URL when relative.
    fn track_url(&self, base_url: &str) -> Result<Url, YoutubeError> {
        let mut url = self
            .base
            .join(base_url)
            .map_err(|e| YoutubeError::Unexpected {
                what: "caption track",
                detail: format!("bad baseUrl: {e}"),
            })?;
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, v)| !(k == "fmt" && v == "srv3"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        Ok(url)
    }
}

fn no_transcript(info: &VideoInfo, languages: &[String]) -> YoutubeError {
    if info.tracks.is_empty() {
        return YoutubeError::TranscriptsDisabled {
            video: info.video_id.clone(),
        };
    }
    let available = info
        .tracks
        .iter()
        .map(|t| match t.kind {
            TrackKind::Manual => t.language.clone(),
            TrackKind::Asr => format!("{} (auto-generated)", t.language),
        })
        .collect::<Vec<_>>()
        .join(", ");
    YoutubeError::NoTranscript {
        video: info.video_id.clone(),
        wanted: languages.join(", "),
        available,
    }
}

/// A proxy's id: `proxy-` and the first 4 bytes of its URL's SHA-256, stable however the pool
/// is ordered, and naming no host or credential.
pub fn egress_id(proxy: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "proxy-{}",
        hex::encode(&Sha256::digest(proxy.as_bytes())[..4])
    )
}

/// True for an 11-character id of `[A-Za-z0-9_-]`.
pub fn is_video_id(s: &str) -> bool {
    s.len() == 11
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn request_error(what: &'static str, e: &reqwest::Error) -> YoutubeError {
    if e.is_timeout() {
        YoutubeError::Timeout { what }
    } else {
        YoutubeError::Connection {
            what,
            cause: describe(e),
        }
    }
}

/// A reqwest error with its causes, without the URL (it would repeat the request).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The body of a 2xx response, or the error its status means.
async fn read_ok(what: &'static str, response: reqwest::Response) -> Result<String, YoutubeError> {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(YoutubeError::RateLimited {
            what,
            retry_after: retry_after(response.headers()),
        });
    }
    if status == StatusCode::FORBIDDEN {
        return Err(YoutubeError::RequestBlocked {
            what,
            reason: "HTTP 403".into(),
        });
    }
    if status.is_server_error() {
        return Err(YoutubeError::Server {
            what,
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        return Err(YoutubeError::Unexpected {
            what,
            detail: format!("HTTP {status}"),
        });
    }
    response.text().await.map_err(|e| {
        if e.is_timeout() {
            YoutubeError::Timeout { what }
        } else {
            YoutubeError::Connection {
                what,
                cause: describe(&e),
            }
        }
    })
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_item_errors_by_class() {
        let e: ItemError = YoutubeError::AgeRestricted {
            video: "x".into(),
            reason: "Sign in to confirm your age".into(),
        }
        .into();
        assert!(!e.is_transient());
        assert_eq!(e.kind().as_str(), "age_restricted");
        let e: ItemError = YoutubeError::RateLimited {
            what: "watch page",
            retry_after: Some(Duration::from_secs(7)),
        }
        .into();
        assert!(e.is_transient());
        assert_eq!(e.kind().as_str(), "rate_limited");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn track_urls_drop_srv3_and_resolve_against_the_base() {
        let client = YoutubeClient::new(&YoutubeConfig {
            base_url: Url::parse("http://127.0.0.1:9/yt").unwrap(),
            ..YoutubeConfig::default()
        })
        .unwrap();
        assert_eq!(
            client
                .track_url("/api/timedtext?v=abc&lang=en&fmt=srv3")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/api/timedtext?v=abc&lang=en"
        );
        assert_eq!(
            client
                .track_url("https://www.youtube.com/api/timedtext?v=abc&fmt=json3")
                .unwrap()
                .as_str(),
            "https://www.youtube.com/api/timedtext?v=abc&fmt=json3"
        );
    }
}
