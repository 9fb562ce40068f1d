//! A YouTube stand-in: `GET /watch?v=ID` (a watch page with `INNERTUBE_API_KEY`, or the
//! consent interstitial, or the captcha), `POST /youtubei/v1/player?key=KEY` (innertube's
//! player response with `playabilityStatus`, `videoDetails` and `captionTracks`), and
//! `GET /api/timedtext` (classic timed-text XML, or json3 with `fmt=json3`); and playlists and
//! channels through innertube's `browse` and `navigation/resolve_url` ([`lists`]).

pub mod lists;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Server;

/// The API key the stand-in's watch page carries and its player demands.
pub const API_KEY: &str = "AIzaSyStandinKey_0123456789";

/// What a video does when asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// A normal video with its tracks.
    Normal,
    /// The watch page is the EU consent form until the request carries `CONSENT=YES+...`.
    Consent,
    /// `playabilityStatus: ERROR, "This video is unavailable"`.
    Unavailable,
    /// `playabilityStatus: UNPLAYABLE, "This video is private"`.
    Private,
    /// Playable, with no `captions` at all.
    TranscriptsDisabled,
    /// `LOGIN_REQUIRED, "Sign in to confirm your age"`.
    AgeRestricted,
    /// `LOGIN_REQUIRED, "Sign in to confirm you're not a bot"` (a blocked address).
    BotCheck,
    /// The watch page is the "unusual traffic" captcha.
    Recaptcha,
    /// The first N requests for the video (watch page or player) get HTTP 429 with
    /// `Retry-After: 1`, then normal.
    RateLimitedFirst(u32),
    /// Every watch-page request gets HTTP 503.
    ServerError,
}

/// The format a track's text is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `<transcript><text start= dur=>`; its `baseUrl` carries `fmt=srv3`, which clients drop.
    Xml,
    Json3,
}

#[derive(Clone, Debug)]
pub struct Track {
    pub language: String,
    pub name: String,
    pub asr: bool,
    pub format: Format,
    /// (start seconds, duration seconds, text as it appears in XML, entities included).
    pub lines: Vec<(f64, f64, String)>,
}

impl Track {
    pub fn new(language: &str, asr: bool, lines: Vec<(f64, f64, String)>) -> Self {
        Self {
            language: language.into(),
            name: if asr {
                format!("{language} (auto-generated)")
            } else {
                language.into()
            },
            asr,
            format: Format::Xml,
            lines,
        }
    }

    pub fn json3(mut self) -> Self {
        self.format = Format::Json3;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Video {
    pub id: String,
    pub title: String,
    pub channel: String,
    pub duration_s: u32,
    pub behaviour: Behaviour,
    pub tracks: Vec<Track>,
}

impl Video {
    pub fn new(id: &str, title: &str, tracks: Vec<Track>) -> Self {
        let duration_s = tracks
            .iter()
            .flat_map(|t| t.lines.iter().map(|(s, d, _)| s + d))
            .fold(0.0_f64, f64::max)
            .ceil() as u32;
        Self {
            id: id.into(),
            title: title.into(),
            channel: "Stand-in Channel".into(),
            duration_s,
            behaviour: Behaviour::Normal,
            tracks,
        }
    }

    pub fn behaving(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }
}

/// Requests one video received, by endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub watch: u32,
    pub player: u32,
    pub timedtext: u32,
}

impl Counts {
    pub fn total(&self) -> u32 {
        self.watch + self.player + self.timedtext
    }
}

#[derive(Default)]
struct Inner {
    /// The API key the watch page carries and the player demands (`None`: [`API_KEY`]).
    api_key: Option<String>,
    /// Every request answers HTTP 429 (this address is blocked).
    blocked: bool,
    videos: HashMap<String, Video>,
    counts: HashMap<String, Counts>,
    /// Player request bodies that did not look like the ANDROID innertube client's.
    bad_player_requests: Vec<String>,
    lists: lists::Lists,
}

type Shared = Arc<(Mutex<Inner>, String)>;

pub struct YoutubeStandin {
    server: Server,
    state: Shared,
}

impl YoutubeStandin {
    pub fn start(videos: Vec<Video>) -> Self {
        let inner = Inner {
            videos: videos.into_iter().map(|v| (v.id.clone(), v)).collect(),
            ..Inner::default()
        };
        let cell: Arc<Mutex<Option<Shared>>> = Arc::new(Mutex::new(None));
        let cell2 = cell.clone();
        let server = Server::start(move |addr| {
            let state: Shared = Arc::new((Mutex::new(inner), format!("http://{addr}")));
            *cell2.lock().unwrap() = Some(state.clone());
            axum::Router::new()
                .route("/watch", get(watch))
                .route("/youtubei/v1/player", post(player))
                .route("/api/timedtext", get(timedtext))
                .route("/youtubei/v1/browse", post(lists::browse))
                .route(
                    "/youtubei/v1/navigation/resolve_url",
                    post(lists::resolve_url),
                )
                .with_state(state)
        });
        let state = cell.lock().unwrap().take().expect("router built");
        Self { server, state }
    }

    /// The base URL (`ABRIDGE_YOUTUBE_BASE_URL`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn counts(&self, video: &str) -> Counts {
        self.state
            .0
            .lock()
            .unwrap()
            .counts
            .get(video)
            .copied()
            .unwrap_or_default()
    }

    /// Every request to every video.
    pub fn total(&self) -> u32 {
        self.state
            .0
            .lock()
            .unwrap()
            .counts
            .values()
            .map(Counts::total)
            .sum()
    }

    /// Serves `list` (a playlist or a channel) from now on.
    pub fn add_list(&self, list: lists::StandinList) {
        self.state.0.lock().unwrap().lists.add(list);
    }

    /// Browse requests for the list with this key (playlist id or channel id), continuations
    /// included.
    pub fn list_requests(&self, key: &str) -> u32 {
        self.state.0.lock().unwrap().lists.requests(key)
    }

    pub fn bad_player_requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().bad_player_requests.clone()
    }

    /// A new API key from now on: the player refuses the old one (HTTP 400), as innertube
    /// does when it rotates keys.
    pub fn rotate_api_key(&self, key: &str) {
        self.state.0.lock().unwrap().api_key = Some(key.to_owned());
    }

    /// Blocks (every request gets HTTP 429) or unblocks this address. Requests are counted
    /// either way.
    pub fn block(&self, blocked: bool) {
        self.state.0.lock().unwrap().blocked = blocked;
    }
}

/// The key this stand-in serves, and whether it blocks everything.
fn key_and_block(state: &Shared) -> (String, bool) {
    let inner = state.0.lock().unwrap();
    (
        inner.api_key.clone().unwrap_or_else(|| API_KEY.to_owned()),
        inner.blocked,
    )
}

fn blocked() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "30")],
        "Too Many Requests",
    )
        .into_response()
}

fn count(state: &Shared, video: &str, f: impl FnOnce(&mut Counts)) -> Option<Video> {
    let mut inner = state.0.lock().unwrap();
    f(inner.counts.entry(video.to_owned()).or_default());
    inner.videos.get(video).cloned()
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn watch(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let id = q.get("v").cloned().unwrap_or_default();
    let mut n = 0;
    let video = count(&state, &id, |c| {
        c.watch += 1;
        n = c.watch + c.player;
    });
    let (key, is_blocked) = key_and_block(&state);
    if is_blocked {
        return blocked();
    }
    let consented = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("CONSENT=YES+cb.20210328-17-p0.en+FX+417"));
    let title = video
        .as_ref()
        .map(|v| v.title.clone())
        .unwrap_or_else(|| "YouTube".into());
    match video.as_ref().map(|v| &v.behaviour) {
        Some(Behaviour::Consent) if !consented => html(
            r#"<html><body><form action="https://consent.youtube.com/s" method="POST">
               <input type="hidden" name="gl" value="FX">
               <input type="hidden" name="v" value="cb.20210328-17-p0.en+FX+417">
               <button>Accept all</button></form></body></html>"#
                .into(),
        ),
        Some(Behaviour::Recaptcha) => html(
            r#"<html><body><form id="captcha-form"><div class="g-recaptcha" data-sitekey="6Lf"></div>
               </form>Our systems have detected unusual traffic from your computer network.</body></html>"#
                .into(),
        ),
        Some(Behaviour::RateLimitedFirst(k)) if n <= *k => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "Too Many Requests",
        )
            .into_response(),
        Some(Behaviour::ServerError) => {
            (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable").into_response()
        }
        _ => html(format!(
            r#"<!DOCTYPE html><html><head><title>{title} - YouTube</title>
               <meta name="title" content="{}"></head><body>
               <script>ytcfg.set({{"INNERTUBE_API_KEY":"{key}","INNERTUBE_CLIENT_VERSION":"2.20250101"}});</script>
               </body></html>"#,
            title.replace('&', "&amp;").replace('"', "&quot;")
        )),
    }
}

async fn player(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = request["videoId"].as_str().unwrap_or_default().to_owned();
    let mut n = 0;
    let video = count(&state, &id, |c| {
        c.player += 1;
        n = c.watch + c.player;
    });
    let (key, is_blocked) = key_and_block(&state);
    if is_blocked {
        return blocked();
    }
    if let Some(Behaviour::RateLimitedFirst(k)) = video.as_ref().map(|v| &v.behaviour)
        && n <= *k
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "Too Many Requests",
        )
            .into_response();
    }
    let stale_key = q.get("key") != Some(&key);
    let bad_client = request["context"]["client"]["clientName"] != "ANDROID"
        || request["context"]["client"]["clientVersion"]
            .as_str()
            .is_none();
    if stale_key || bad_client {
        if bad_client || !q.contains_key("key") {
            state.0.lock().unwrap().bad_player_requests.push(body);
        }
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}})),
        )
            .into_response();
    }
    let Some(video) = video else {
        return Json(json!({
            "playabilityStatus": {"status": "ERROR", "reason": "This video is unavailable"}
        }))
        .into_response();
    };
    let status = match video.behaviour {
        Behaviour::Unavailable => json!({"status": "ERROR", "reason": "This video is unavailable"}),
        Behaviour::Private => json!({"status": "UNPLAYABLE", "reason": "This video is private"}),
        Behaviour::AgeRestricted => {
            json!({"status": "LOGIN_REQUIRED", "reason": "Sign in to confirm your age"})
        }
        Behaviour::BotCheck => {
            json!({"status": "LOGIN_REQUIRED", "reason": "Sign in to confirm you’re not a bot"})
        }
        _ => json!({"status": "OK", "playableInEmbed": true}),
    };
    let base = &state.1;
    let mut response = json!({
        "playabilityStatus": status,
        "videoDetails": {
            "videoId": video.id,
            "title": video.title,
            "author": video.channel,
            "lengthSeconds": video.duration_s.to_string(),
        },
    });
    if video.behaviour != Behaviour::TranscriptsDisabled {
        let tracks: Vec<Value> = video
            .tracks
            .iter()
            .map(|t| {
                let mut url = format!("{base}/api/timedtext?v={}&lang={}", video.id, t.language);
                if t.asr {
                    url.push_str("&kind=asr");
                }
                url.push_str(match t.format {
                    Format::Xml => "&fmt=srv3",
                    Format::Json3 => "&fmt=json3",
                });
                let mut track = json!({
                    "baseUrl": url,
                    "name": {"runs": [{"text": t.name}]},
                    "vssId": format!("{}.{}", if t.asr { "a" } else { "" }, t.language),
                    "languageCode": t.language,
                    "isTranslatable": true,
                });
                if t.asr {
                    track["kind"] = json!("asr");
                }
                track
            })
            .collect();
        response["captions"] = json!({
            "playerCaptionsTracklistRenderer": {"captionTracks": tracks, "audioTracks": []}
        });
    }
    Json(response).into_response()
}

async fn timedtext(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = q.get("v").cloned().unwrap_or_default();
    let video = count(&state, &id, |c| c.timedtext += 1);
    if key_and_block(&state).1 {
        return blocked();
    }
    let asr = q.get("kind").map(String::as_str) == Some("asr");
    let lang = q.get("lang").cloned().unwrap_or_default();
    let Some(track) = video.and_then(|v| {
        v.tracks
            .into_iter()
            .find(|t| t.language == lang && t.asr == asr)
    }) else {
        return (StatusCode::NOT_FOUND, "").into_response();
    };
    match q.get("fmt").map(String::as_str) {
        Some("srv3") => (
            StatusCode::BAD_REQUEST,
            "srv3 needs a proof-of-origin token",
        )
            .into_response(),
        Some("json3") => {
            let events: Vec<Value> = track
                .lines
                .iter()
                .map(|(start, dur, text)| {
                    json!({
                        "tStartMs": (start * 1000.0).round() as u64,
                        "dDurationMs": (dur * 1000.0).round() as u64,
                        "segs": [{"utf8": text}],
                    })
                })
                .collect();
            Json(json!({"wireMagic": "pb3", "events": events})).into_response()
        }
        _ => {
            let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8" ?><transcript>"#);
            for (start, dur, text) in &track.lines {
                xml.push_str(&format!(
                    r#"<text start="{start}" dur="{dur}">{text}</text>"#
                ));
            }
            xml.push_str("</transcript>");
            ([(header::CONTENT_TYPE, "text/xml; charset=UTF-8")], xml).into_response()
        }
    }
}
