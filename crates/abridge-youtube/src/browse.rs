//! Playlists and channels, read through innertube's `browse` the way yt-dlp reads them (WEB
//! client, no API key): a playlist is `browseId: VL<id>`; a channel's videos are its `UC...`
//! id with the videos tab's `params`, a handle or custom URL resolved to that id first with
//! `navigation/resolve_url`; further pages follow `continuationItemRenderer`'s
//! `continuationCommand.token`.
//!
//! Every byte of an answer is someone else's: a page is read up to [`MAX_PAGE_BYTES`], pages
//! are followed at most as far as the limit needs (and never in a loop), continuation tokens
//! are bounded, and video ids pass the 11-character check before anything keeps them.

use std::collections::HashSet;
use std::time::Duration;

use abridge_core::VideoId;
use abridge_core::input::{BatchInput, PendingList};
use abridge_core::lists::{
    ChannelRef, DEFAULT_MAX_PER_LIST, ListRef, ListVideo, ReadList, is_channel_id,
};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{YoutubeClient, YoutubeError, read_ok, request_error};

/// `browse` answers in the web client's shapes; the ANDROID client's are another layout.
const WEB_CLIENT_NAME: &str = "WEB";
const WEB_CLIENT_VERSION: &str = "2.20250312.04.00";
/// The channel page's "Videos" tab (a protobuf, as the web client sends it).
const CHANNEL_VIDEOS_PARAMS: &str = "EgZ2aWRlb3PyBgQKAjoA";
/// The largest browse answer read; a real page of 100 playlist entries is about 1.5 MB.
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// Continuation tokens are a few hundred characters; a longer one is not followed.
const MAX_TOKEN_CHARS: usize = 4096;
/// Titles kept from a list, in characters (the item's title limit).
const MAX_TITLE_CHARS: usize = abridge_core::input::MAX_TITLE_CHARS;
/// Lists of one batch read at once.
const LISTS_AT_ONCE: usize = 4;

/// Why a list could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// YouTube says the list is not there, or not for us (does not exist, private, empty).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Youtube(#[from] YoutubeError),
}

impl YoutubeClient {
    /// The first `max` videos of `list`, in its order.
    pub async fn read_list(&self, list: &ListRef, max: usize) -> Result<ReadList, ListError> {
        let (request, playlist_id) = match list {
            ListRef::Playlist(id) => (json!({ "browseId": format!("VL{id}") }), id.clone()),
            ListRef::Channel(channel) => {
                let id = match channel {
                    ChannelRef::Id(id) => id.clone(),
                    ChannelRef::Path(path) => self.resolve_channel(path).await?,
                };
                let playlist_id = format!("UULF{}", &id[2..]);
                (
                    json!({ "browseId": id, "params": CHANNEL_VIDEOS_PARAMS }),
                    playlist_id,
                )
            }
        };
        let first = self.innertube("browse", request).await?;
        check_alerts(&first)?;
        let items = first_page_items(&first).ok_or_else(|| YoutubeError::Unexpected {
            what: "browse",
            detail: "no list of videos in the answer".into(),
        })?;
        let mut videos = Vec::new();
        let mut next = read_items(items, &mut videos);
        let max_pages = max / 30 + 3;
        let mut seen_tokens = HashSet::new();
        let mut pages = 1;
        while videos.len() < max
            && pages < max_pages
            && let Some(token) = next.take()
        {
            if !seen_tokens.insert(token.clone()) {
                break; // a feed that loops back on itself has ended
            }
            let page = self
                .innertube("browse", json!({ "continuation": token }))
                .await?;
            pages += 1;
            let Some(items) = continuation_items(&page) else {
                break;
            };
            next = read_items(items, &mut videos);
        }
        videos.truncate(max);
        if videos.is_empty() {
            return Err(ListError::Unavailable("it has no videos".into()));
        }
        Ok(ReadList {
            playlist_id,
            videos,
        })
    }

    /// A handle (`@name`) or custom URL (`c/Name`, `user/Name`) to its channel id.
    async fn resolve_channel(&self, path: &str) -> Result<String, ListError> {
        let answer = self
            .innertube(
                "navigation/resolve_url",
                json!({ "url": format!("https://www.youtube.com/{path}") }),
            )
            .await?;
        let id = answer["endpoint"]["browseEndpoint"]["browseId"]
            .as_str()
            .unwrap_or_default();
        if is_channel_id(id) {
            Ok(id.to_owned())
        } else {
            Err(ListError::Unavailable(
                "YouTube does not resolve it to a channel".into(),
            ))
        }
    }

    /// One innertube call (`youtubei/v1/{endpoint}`) as the web client makes it; 400 and 404
    /// mean the thing asked for is not there.
    async fn innertube(&self, endpoint: &'static str, request: Value) -> Result<Value, ListError> {
        let what = endpoint;
        let mut url = self
            .base
            .join(&format!("youtubei/v1/{endpoint}"))
            .expect("valid path");
        url.query_pairs_mut().append_pair("prettyPrint", "false");
        let mut body = json!({
            "context": { "client": {
                "clientName": WEB_CLIENT_NAME,
                "clientVersion": WEB_CLIENT_VERSION,
                "hl": "en",
                "gl": "US",
            } },
        });
        if let (Some(body), Value::Object(request)) = (body.as_object_mut(), request) {
            body.extend(request);
        }
        // A list goes out the pool's first way (the enqueuing process keeps no quarantine).
        let response = self
            .post_innertube(&self.egress[0], url, &body, what, &mut 0)
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
            return Err(ListError::Unavailable(format!(
                "YouTube does not know it (HTTP {})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            // `read_ok` names every unsuccessful status (429 with its wait, 403, 5xx).
            return Err(match read_ok(what, response).await {
                Err(e) => e.into(),
                Ok(_) => YoutubeError::Unexpected {
                    what,
                    detail: format!("HTTP {status}"),
                }
                .into(),
            });
        }
        let bytes = read_bounded(what, response).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ListError::Youtube(YoutubeError::Unexpected {
                what,
                detail: format!("not JSON: {e}"),
            })
        })
    }
}

/// A 2xx body, refused past [`MAX_PAGE_BYTES`].
async fn read_bounded(
    what: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, YoutubeError> {
    let too_large = || YoutubeError::Unexpected {
        what,
        detail: format!("an answer larger than {MAX_PAGE_BYTES} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PAGE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_PAGE_BYTES {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(request_error(what, &e)),
        }
    }
}

/// An `ERROR` alert on the first page ("The playlist does not exist.", "This playlist is
/// private.").
fn check_alerts(page: &Value) -> Result<(), ListError> {
    for alert in page["alerts"].as_array().into_iter().flatten() {
        let alert = alert
            .get("alertRenderer")
            .or_else(|| alert.get("alertWithButtonRenderer"))
            .unwrap_or(&Value::Null);
        if alert["type"].as_str() == Some("ERROR") {
            let text = text_of(&alert["text"]).unwrap_or_else(|| "YouTube refused it".into());
            return Err(ListError::Unavailable(text));
        }
    }
    Ok(())
}

/// The first page's entries: the selected tab's playlist video list, or its rich grid (a
/// channel's videos).
fn first_page_items(page: &Value) -> Option<&[Value]> {
    let tabs = page["contents"]["twoColumnBrowseResultsRenderer"]["tabs"].as_array()?;
    let tab = tabs
        .iter()
        .find(|t| t["tabRenderer"]["selected"].as_bool() == Some(true))
        .or_else(|| {
            tabs.iter()
                .find(|t| t["tabRenderer"]["content"].is_object())
        })?;
    let content = &tab["tabRenderer"]["content"];
    if let Some(items) = content["richGridRenderer"]["contents"].as_array() {
        return Some(items);
    }
    let sections = content["sectionListRenderer"]["contents"].as_array()?;
    sections
        .iter()
        .filter_map(|s| s["itemSectionRenderer"]["contents"].as_array())
        .flatten()
        .find_map(|part| part["playlistVideoListRenderer"]["contents"].as_array())
        .map(Vec::as_slice)
}

/// A continuation page's entries (`appendContinuationItemsAction`, or a reload command).
fn continuation_items(page: &Value) -> Option<&[Value]> {
    ["onResponseReceivedActions", "onResponseReceivedEndpoints"]
        .iter()
        .filter_map(|key| page[*key].as_array())
        .flatten()
        .find_map(|action| {
            [
                "appendContinuationItemsAction",
                "reloadContinuationItemsCommand",
            ]
            .iter()
            .find_map(|kind| action[*kind]["continuationItems"].as_array())
        })
        .map(Vec::as_slice)
}

/// Appends the playable videos among `items` and returns the next page's token, if any.
fn read_items(items: &[Value], videos: &mut Vec<ListVideo>) -> Option<String> {
    let mut next = None;
    for item in items {
        if let Some(entry) = item.get("playlistVideoRenderer") {
            if entry["isPlayable"].as_bool() == Some(false) {
                continue; // a private or deleted video keeps its place but cannot be summarized
            }
            push_video(videos, &entry["videoId"], text_of(&entry["title"]));
        } else if let Some(content) = item["richItemRenderer"].get("content") {
            if let Some(entry) = content.get("videoRenderer") {
                push_video(videos, &entry["videoId"], text_of(&entry["title"]));
            } else if let Some(lockup) = content.get("lockupViewModel")
                && lockup["contentType"].as_str() == Some("LOCKUP_CONTENT_TYPE_VIDEO")
            {
                let title = lockup["metadata"]["lockupMetadataViewModel"]["title"]["content"]
                    .as_str()
                    .map(str::to_owned);
                push_video(videos, &lockup["contentId"], title);
            }
        } else if let Some(entry) = item.get("continuationItemRenderer") {
            next = continuation_token(&entry["continuationEndpoint"]);
        }
    }
    next
}

fn push_video(videos: &mut Vec<ListVideo>, id: &Value, title: Option<String>) {
    let Some(video_id) = id.as_str().and_then(|id| VideoId::parse(id).ok()) else {
        return;
    };
    let title = title.map(|t| t.chars().take(MAX_TITLE_CHARS).collect::<String>());
    videos.push(ListVideo { video_id, title });
}

/// `continuationCommand.token`, directly or inside a `commandExecutorCommand`.
fn continuation_token(endpoint: &Value) -> Option<String> {
    let wrapped = endpoint["commandExecutorCommand"]["commands"].as_array();
    std::iter::once(endpoint)
        .chain(wrapped.into_iter().flatten())
        .find_map(|command| command["continuationCommand"]["token"].as_str())
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_CHARS)
        .map(str::to_owned)
}

/// `{"simpleText": ...}` or `{"runs": [{"text": ...}]}`, bounded to the title limit.
fn text_of(value: &Value) -> Option<String> {
    let text = match value["simpleText"].as_str() {
        Some(t) => t.to_owned(),
        None => value["runs"]
            .as_array()?
            .iter()
            .filter_map(|r| r["text"].as_str())
            .flat_map(str::chars)
            .take(MAX_TITLE_CHARS)
            .collect(),
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_TITLE_CHARS).collect())
}

/// Reads every list line of `input` (a few at once, all within `time_limit` together) and puts
/// their videos in place ([`BatchInput::resolve_lists`]); a list that could not be read in
/// time, or at all, becomes a rejected line whose reason says why.
pub async fn expand_lists(client: &YoutubeClient, input: &mut BatchInput, time_limit: Duration) {
    let pending = std::mem::take(&mut input.lists);
    if pending.is_empty() {
        return;
    }
    let max = input
        .list_options()
        .map_or(DEFAULT_MAX_PER_LIST, |o| o.max_per_list);
    let deadline = tokio::time::Instant::now() + time_limit;
    let read: Vec<(PendingList, Result<ReadList, String>)> = futures::stream::iter(pending)
        .map(|pending| async move {
            let what = pending.list.describe();
            let result =
                match tokio::time::timeout_at(deadline, client.read_list(&pending.list, max)).await
                {
                    Ok(Ok(list)) => Ok(list),
                    Ok(Err(e)) => {
                        tracing::info!(list = %what, error = %e, "a list could not be read");
                        Err(format!("{what} could not be read: {e}"))
                    }
                    Err(_) => Err(format!(
                        "{what} could not be read within the {} s allowed for reading lists; \
                     nothing of it was enqueued (list fewer, or lower max_per_list)",
                        time_limit.as_secs_f64()
                    )),
                };
            (pending, result)
        })
        .buffered(LISTS_AT_ONCE)
        .collect()
        .await;
    input.resolve_lists(read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_playlist_entries_skipping_the_unplayable_and_finds_the_wrapped_token() {
        let page = json!({"contents": {"twoColumnBrowseResultsRenderer": {"tabs": [{"tabRenderer": {
            "selected": true,
            "content": {"sectionListRenderer": {"contents": [{"itemSectionRenderer": {"contents": [
                {"playlistVideoListRenderer": {"contents": [
                    {"playlistVideoRenderer": {"videoId": "aaaaaaaaaaa", "title": {"runs": [{"text": "One"}]}, "isPlayable": true}},
                    {"playlistVideoRenderer": {"videoId": "bbbbbbbbbbb", "title": {"runs": [{"text": "[Private video]"}]}, "isPlayable": false}},
                    {"playlistVideoRenderer": {"videoId": "not-an-id", "title": {"simpleText": "Bad"}}},
                    {"continuationItemRenderer": {"continuationEndpoint": {"commandExecutorCommand": {"commands": [
                        {"playlistVotingRefreshPopupCommand": {}},
                        {"continuationCommand": {"token": "4qmFsgJhEiRWTFBM", "request": "CONTINUATION_REQUEST_TYPE_BROWSE"}}
                    ]}}}}
                ]}}
            ]}}]}}
        }}]}}});
        let mut videos = Vec::new();
        let next = read_items(first_page_items(&page).unwrap(), &mut videos);
        assert_eq!(next.as_deref(), Some("4qmFsgJhEiRWTFBM"));
        let got: Vec<(&str, Option<&str>)> = videos
            .iter()
            .map(|v| (v.video_id.as_str(), v.title.as_deref()))
            .collect();
        assert_eq!(got, [("aaaaaaaaaaa", Some("One"))]);
    }

    #[test]
    fn reads_channel_grids_with_video_renderers_and_lockups() {
        let page = json!({"onResponseReceivedActions": [{"appendContinuationItemsAction": {"continuationItems": [
            {"richItemRenderer": {"content": {"videoRenderer": {"videoId": "ccccccccccc", "title": {"runs": [{"text": "Three"}]}}}}},
            {"richItemRenderer": {"content": {"lockupViewModel": {"contentId": "ddddddddddd", "contentType": "LOCKUP_CONTENT_TYPE_VIDEO",
                "metadata": {"lockupMetadataViewModel": {"title": {"content": "Four"}}}}}}},
            {"richItemRenderer": {"content": {"lockupViewModel": {"contentId": "PLxyz", "contentType": "LOCKUP_CONTENT_TYPE_PLAYLIST"}}}},
            {"continuationItemRenderer": {"continuationEndpoint": {"continuationCommand": {"token": "next"}}}}
        ]}}]});
        let mut videos = Vec::new();
        let next = read_items(continuation_items(&page).unwrap(), &mut videos);
        assert_eq!(next.as_deref(), Some("next"));
        let ids: Vec<&str> = videos.iter().map(|v| v.video_id.as_str()).collect();
        assert_eq!(ids, ["ccccccccccc", "ddddddddddd"]);
        assert_eq!(videos[1].title.as_deref(), Some("Four"));
    }

    #[test]
    fn an_error_alert_is_the_reason_and_hostile_values_are_bounded() {
        let page = json!({"alerts": [{"alertRenderer": {"type": "ERROR", "text": {"runs": [{"text": "The playlist does not exist."}]}}}]});
        assert_eq!(
            check_alerts(&page),
            Err(ListError::Unavailable(
                "The playlist does not exist.".into()
            ))
        );
        let long = "x".repeat(MAX_TOKEN_CHARS + 1);
        assert_eq!(
            continuation_token(&json!({"continuationCommand": {"token": long}})),
            None
        );
        let title = text_of(&json!({"simpleText": "t".repeat(10_000)})).unwrap();
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(first_page_items(&json!({"contents": "nothing"})), None);
    }
}
