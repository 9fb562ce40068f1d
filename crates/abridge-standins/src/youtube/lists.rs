//! Playlists and channels for the YouTube stand-in, in innertube's web shapes:
//! `POST /youtubei/v1/browse` (`browseId: VL<id>` for a playlist, 100 entries a page as
//! `playlistVideoRenderer`; a channel's `UC...` id with the videos tab's `params`, 30 a page
//! as `richItemRenderer`; further pages by `continuation` token, answered with
//! `onResponseReceivedActions[].appendContinuationItemsAction`), and
//! `POST /youtubei/v1/navigation/resolve_url` (a handle to its channel's `browseEndpoint`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;

/// The videos tab's `params`, as the web client sends them.
pub const CHANNEL_VIDEOS_PARAMS: &str = "EgZ2aWRlb3PyBgQKAjoA";
const PLAYLIST_PAGE: usize = 100;
const CHANNEL_PAGE: usize = 30;

/// What a list is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    Playlist {
        id: String,
    },
    /// A channel, found by its `UC...` id or by its handle (`@name`, through `resolve_url`).
    Channel {
        id: String,
        handle: String,
    },
}

/// What a list does when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListBehaviour {
    Normal,
    /// HTTP 200 with the `ERROR` alert "This playlist is private."
    Private,
    /// Every browse request for it gets HTTP 429 with `Retry-After: 30`.
    RateLimited,
    /// Every browse request for it is answered only after 30 s.
    Stall,
}

/// A playlist or channel the stand-in serves.
#[derive(Clone, Debug)]
pub struct StandinList {
    pub kind: ListKind,
    pub title: String,
    /// (video id, title), in list order.
    pub videos: Vec<(String, String)>,
    /// Positions (0-based) of entries shown as private videos (`isPlayable: false`).
    pub unplayable: Vec<usize>,
    /// Channel pages use `lockupViewModel` entries instead of `videoRenderer` ones.
    pub lockups: bool,
    pub behaviour: ListBehaviour,
}

impl StandinList {
    pub fn playlist(id: &str, title: &str, videos: Vec<(String, String)>) -> Self {
        Self {
            kind: ListKind::Playlist { id: id.into() },
            title: title.into(),
            videos,
            unplayable: Vec::new(),
            lockups: false,
            behaviour: ListBehaviour::Normal,
        }
    }

    /// `handle` with its `@`.
    pub fn channel(id: &str, handle: &str, title: &str, videos: Vec<(String, String)>) -> Self {
        Self {
            kind: ListKind::Channel {
                id: id.into(),
                handle: handle.into(),
            },
            ..Self::playlist("", title, videos)
        }
    }

    pub fn behaving(mut self, behaviour: ListBehaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// The key requests are counted under: the playlist id, or the channel id.
    pub fn key(&self) -> &str {
        match &self.kind {
            ListKind::Playlist { id } | ListKind::Channel { id, .. } => id,
        }
    }
}

/// `n` made-up videos (`{prefix}` padded with `-` and a number to 11 characters), titled.
pub fn numbered_videos(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let number = format!("{i:04}");
            let pad = 11usize.saturating_sub(prefix.len() + number.len());
            let id = format!("{prefix}{}{number}", "-".repeat(pad));
            (id[..11].to_owned(), format!("{prefix} video {}", i + 1))
        })
        .collect()
}

/// The stand-in's lists and what was asked of them.
#[derive(Default)]
pub(super) struct Lists {
    by_key: HashMap<String, StandinList>,
    /// Browse requests per list key.
    requests: HashMap<String, u32>,
}

impl Lists {
    pub(super) fn add(&mut self, list: StandinList) {
        self.by_key.insert(list.key().to_owned(), list);
    }

    pub(super) fn requests(&self, key: &str) -> u32 {
        self.requests.get(key).copied().unwrap_or_default()
    }
}

fn innertube_error(status: StatusCode, message: &str) -> Response {
    let name = if status == StatusCode::NOT_FOUND {
        "NOT_FOUND"
    } else {
        "INVALID_ARGUMENT"
    };
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}})),
    )
        .into_response()
}

/// A continuation token: opaque to clients, as YouTube's are (ours is hex, theirs protobuf).
fn token(key: &str, offset: usize) -> String {
    format!("4qmFsgK{}", hex::encode(format!("{key}:{offset}")))
}

fn read_token(token: &str) -> Option<(String, usize)> {
    let bytes = hex::decode(token.strip_prefix("4qmFsgK")?).ok()?;
    let raw = String::from_utf8(bytes).ok()?;
    let (key, offset) = raw.rsplit_once(':')?;
    Some((key.to_owned(), offset.parse().ok()?))
}

fn runs(text: &str) -> Value {
    json!({"runs": [{"text": text}]})
}

/// The entries of one page from `offset`, with a continuation entry if more follow.
fn page_entries(list: &StandinList, offset: usize) -> Vec<Value> {
    let channel = matches!(list.kind, ListKind::Channel { .. });
    let size = if channel { CHANNEL_PAGE } else { PLAYLIST_PAGE };
    let end = (offset + size).min(list.videos.len());
    let mut entries: Vec<Value> = list.videos[offset.min(end)..end]
        .iter()
        .enumerate()
        .map(|(i, (id, title))| {
            let position = offset + i;
            if channel && list.lockups {
                json!({"richItemRenderer": {"content": {"lockupViewModel": {
                    "contentImage": {"thumbnailViewModel": {"image": {"sources": []}}},
                    "metadata": {"lockupMetadataViewModel": {"title": {"content": title}}},
                    "contentId": id,
                    "contentType": "LOCKUP_CONTENT_TYPE_VIDEO",
                }}}})
            } else if channel {
                json!({"richItemRenderer": {"content": {"videoRenderer": {
                    "videoId": id,
                    "title": runs(title),
                    "lengthText": {"simpleText": "4:20"},
                    "navigationEndpoint": {"watchEndpoint": {"videoId": id}},
                }}}})
            } else {
                let (id_playlist, playable) = match &list.kind {
                    ListKind::Playlist { id } => (id.clone(), !list.unplayable.contains(&position)),
                    ListKind::Channel { .. } => (String::new(), true),
                };
                let title = if playable { title.as_str() } else { "[Private video]" };
                json!({"playlistVideoRenderer": {
                    "videoId": id,
                    "title": runs(title),
                    "index": {"simpleText": (position + 1).to_string()},
                    "navigationEndpoint": {"watchEndpoint": {"videoId": id, "playlistId": id_playlist, "index": position}},
                    "lengthSeconds": "260",
                    "isPlayable": playable,
                }})
            }
        })
        .collect();
    if end < list.videos.len() {
        let command = json!({"continuationCommand": {
            "token": token(list.key(), end),
            "request": "CONTINUATION_REQUEST_TYPE_BROWSE",
        }});
        // Playlists wrap the command in a `commandExecutorCommand`, as YouTube's do now.
        let endpoint = if channel {
            command
        } else {
            json!({"commandExecutorCommand": {"commands": [
                {"playlistVotingRefreshPopupCommand": {"command": {}}},
                command,
            ]}})
        };
        entries.push(json!({"continuationItemRenderer": {
            "trigger": "CONTINUATION_TRIGGER_ON_ITEM_SHOWN",
            "continuationEndpoint": endpoint,
        }}));
    }
    entries
}

fn first_page(list: &StandinList) -> Value {
    let entries = page_entries(list, 0);
    match &list.kind {
        ListKind::Playlist { id } => json!({
            "responseContext": {"serviceTrackingParams": []},
            "contents": {"twoColumnBrowseResultsRenderer": {"tabs": [{"tabRenderer": {
                "selected": true,
                "content": {"sectionListRenderer": {"contents": [{"itemSectionRenderer": {"contents": [
                    {"playlistVideoListRenderer": {"contents": entries, "playlistId": id, "isEditable": false, "canReorder": false, "targetId": "pl-video-list"}}
                ]}}]}},
            }}]}},
            "header": {"pageHeaderRenderer": {"pageTitle": list.title}},
            "metadata": {"playlistMetadataRenderer": {"title": list.title}},
        }),
        ListKind::Channel { id, handle } => json!({
            "responseContext": {"serviceTrackingParams": []},
            "contents": {"twoColumnBrowseResultsRenderer": {"tabs": [
                {"tabRenderer": {"title": "Home", "endpoint": {"browseEndpoint": {"browseId": id, "params": "EghmZWF0dXJlZPIGBAoCMgA%3D"}}}},
                {"tabRenderer": {"title": "Videos", "selected": true,
                    "endpoint": {"browseEndpoint": {"browseId": id, "params": CHANNEL_VIDEOS_PARAMS}},
                    "content": {"richGridRenderer": {"contents": entries, "targetId": "browse-feedUCvideos"}}}},
                {"tabRenderer": {"title": "Shorts", "endpoint": {"browseEndpoint": {"browseId": id, "params": "EgZzaG9ydHPyBgUKA5oBAA%3D%3D"}}}},
            ]}},
            "metadata": {"channelMetadataRenderer": {
                "title": list.title, "externalId": id,
                "vanityChannelUrl": format!("http://www.youtube.com/{handle}"),
            }},
        }),
    }
}

pub(super) async fn browse(State(state): State<Shared>, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if request["context"]["client"]["clientName"] != "WEB" {
        return innertube_error(
            StatusCode::BAD_REQUEST,
            "Request contains an invalid argument.",
        );
    }
    let (list, offset) = {
        let mut inner = state.0.lock().unwrap();
        let (key, offset) = if let Some(token) = request["continuation"].as_str() {
            match read_token(token) {
                Some(found) => found,
                None => {
                    return innertube_error(
                        StatusCode::BAD_REQUEST,
                        "Request contains an invalid argument.",
                    );
                }
            }
        } else {
            let browse_id = request["browseId"].as_str().unwrap_or_default();
            let key = browse_id.strip_prefix("VL").unwrap_or(browse_id).to_owned();
            (key, 0)
        };
        *inner.lists.requests.entry(key.clone()).or_default() += 1;
        (inner.lists.by_key.get(&key).cloned(), offset)
    };
    let browse_id = request["browseId"].as_str().unwrap_or_default();
    let Some(list) = list else {
        if browse_id.starts_with("VL") {
            return Json(json!({
                "responseContext": {},
                "alerts": [{"alertRenderer": {"type": "ERROR", "text": runs("The playlist does not exist.")}}],
            }))
            .into_response();
        }
        return innertube_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    };
    match list.behaviour {
        ListBehaviour::RateLimited => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "30")],
                "Too Many Requests",
            )
                .into_response();
        }
        ListBehaviour::Private => {
            return Json(json!({
                "responseContext": {},
                "alerts": [{"alertRenderer": {"type": "ERROR", "text": runs("This playlist is private.")}}],
            }))
            .into_response();
        }
        ListBehaviour::Stall => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
        ListBehaviour::Normal => {}
    }
    if request["continuation"].is_string() {
        return Json(json!({
            "responseContext": {},
            "onResponseReceivedActions": [{"clickTrackingParams": "CAAQhGciEwj",
                "appendContinuationItemsAction": {"continuationItems": page_entries(&list, offset), "targetId": "pl-video-list"}}],
        }))
        .into_response();
    }
    if matches!(list.kind, ListKind::Channel { .. })
        && request["params"].as_str() != Some(CHANNEL_VIDEOS_PARAMS)
    {
        // Without the videos tab's params a channel answers with its home tab: no video grid.
        return Json(json!({"contents": {"twoColumnBrowseResultsRenderer": {"tabs": [
            {"tabRenderer": {"title": "Home", "selected": true, "content": {"sectionListRenderer": {"contents": []}}}}
        ]}}}))
        .into_response();
    }
    Json(first_page(&list)).into_response()
}

pub(super) async fn resolve_url(State(state): State<Shared>, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let url = request["url"].as_str().unwrap_or_default();
    let path = url
        .strip_prefix("https://www.youtube.com/")
        .unwrap_or_default();
    let inner = state.0.lock().unwrap();
    let found = inner.lists.by_key.values().find_map(|l| match &l.kind {
        ListKind::Channel { id, handle } if handle == path => Some(id.clone()),
        _ => None,
    });
    match found {
        Some(id) => Json(json!({"endpoint": {
            "clickTrackingParams": "IhMI",
            "commandMetadata": {"webCommandMetadata": {"url": format!("/{path}"), "webPageType": "WEB_PAGE_TYPE_CHANNEL", "rootVe": 3611, "apiUrl": "/youtubei/v1/browse"}},
            "browseEndpoint": {"browseId": id, "canonicalBaseUrl": format!("/{path}")},
        }}))
        .into_response(),
        None => innertube_error(StatusCode::NOT_FOUND, "Requested entity was not found."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_numbered_videos_are_video_ids() {
        assert_eq!(
            read_token(&token("PLabc", 100)),
            Some(("PLabc".into(), 100))
        );
        assert_eq!(read_token("junk"), None);
        let videos = numbered_videos("pl", 250);
        assert_eq!(videos[0].0, "pl-----0000");
        assert!(videos.iter().all(|(id, _)| id.len() == 11));
    }
}
