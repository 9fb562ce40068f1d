//! YouTube video references: every URL form people paste, normalised to the 11-character id.

use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

/// The longest input line we look at; anything longer is rejected, not truncated.
pub const MAX_INPUT_LEN: usize = 2048;

/// An 11-character YouTube video id (`[A-Za-z0-9_-]{11}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VideoId(String);

impl VideoId {
    pub fn parse(candidate: &str) -> Result<Self, RejectReason> {
        if is_video_id(candidate) {
            Ok(Self(candidate.to_owned()))
        } else {
            Err(RejectReason::BadVideoId(truncate(candidate, 40)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical watch URL, which is what we store as the item's `url`.
    pub fn watch_url(&self) -> String {
        format!("https://www.youtube.com/watch?v={}", self.0)
    }
}

impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for VideoId {
    type Error = RejectReason;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<VideoId> for String {
    fn from(value: VideoId) -> Self {
        value.0
    }
}

/// Why an input is not a video we can summarise. The text is shown to the person who sent it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("empty input")]
    Empty,
    #[error("input is longer than {MAX_INPUT_LEN} characters")]
    TooLong,
    #[error("not a URL or an 11-character video id")]
    NotAUrl,
    #[error("unsupported URL scheme {0:?}: use http or https")]
    BadScheme(String),
    #[error("not a YouTube URL (host {0})")]
    NotYouTube(String),
    #[error("playlist URLs are not supported: list each video's URL instead")]
    Playlist,
    #[error("channel pages are not videos")]
    Channel,
    #[error("search pages are not videos")]
    Search,
    #[error("no video id in this YouTube URL")]
    NoVideoId,
    #[error("video id {0:?} is not 11 characters of A-Z, a-z, 0-9, '_' and '-'")]
    BadVideoId(String),
}

fn is_video_id(s: &str) -> bool {
    s.len() == 11
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

pub(crate) const WATCH_HOSTS: &[&str] = &[
    "youtube.com",
    "www.youtube.com",
    "m.youtube.com",
    "music.youtube.com",
    "gaming.youtube.com",
    "youtube-nocookie.com",
    "www.youtube-nocookie.com",
];

/// Parses a bare id or any YouTube video URL form into its video id.
///
/// Accepted: `watch?v=` (with `v` anywhere in the query), `youtu.be/ID`, `/shorts/`, `/embed/`,
/// `/live/`, `/v/`, `/e/`, `/watch/ID`, on `www.`, `m.`, `music.`, bare and `youtube-nocookie.com`
/// hosts, with or without a scheme. Extra parameters (`&t=`, `&list=`, `&si=`) are ignored.
/// Playlists, channels and search pages are rejected with a reason.
pub fn parse_video_ref(input: &str) -> Result<VideoId, RejectReason> {
    let input = input.trim();
    if input.is_empty() {
        return Err(RejectReason::Empty);
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(RejectReason::TooLong);
    }
    if is_video_id(input) {
        return Ok(VideoId(input.to_owned()));
    }
    let url = parse_url(input)?;
    let host = url
        .host_str()
        .ok_or(RejectReason::NotAUrl)?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|seg| !seg.is_empty()).collect())
        .unwrap_or_default();
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };

    if host == "youtu.be" || host == "www.youtu.be" {
        return match segments.first() {
            Some(id) => VideoId::parse(id),
            None => Err(RejectReason::NoVideoId),
        };
    }
    if !WATCH_HOSTS.contains(&host.as_str()) {
        return Err(RejectReason::NotYouTube(truncate(&host, 80)));
    }
    match segments.as_slice() {
        ["watch"] => match query("v") {
            Some(id) => VideoId::parse(id.trim()),
            None if query("list").is_some() => Err(RejectReason::Playlist),
            None => Err(RejectReason::NoVideoId),
        },
        ["watch" | "shorts" | "embed" | "live" | "v" | "e", id, ..] => {
            if *id == "videoseries" {
                Err(RejectReason::Playlist)
            } else {
                VideoId::parse(id)
            }
        }
        ["playlist", ..] => Err(RejectReason::Playlist),
        ["channel" | "c" | "user", ..] => Err(RejectReason::Channel),
        [first, ..] if first.starts_with('@') => Err(RejectReason::Channel),
        ["results" | "search", ..] => Err(RejectReason::Search),
        _ => Err(RejectReason::NoVideoId),
    }
}

pub(crate) fn parse_url(input: &str) -> Result<Url, RejectReason> {
    match Url::parse(input) {
        Ok(url) => match url.scheme() {
            "http" | "https" => Ok(url),
            // "youtube.com:443/..." style inputs parse as a scheme; treat anything with a dot as a host.
            other if !other.contains('.') => Err(RejectReason::BadScheme(truncate(other, 20))),
            _ => Url::parse(&format!("https://{input}")).map_err(|_| RejectReason::NotAUrl),
        },
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            // Scheme-less input such as "youtu.be/ID" or "www.youtube.com/watch?v=ID".
            if input.contains('.') && !input.contains(char::is_whitespace) {
                Url::parse(&format!("https://{input}")).map_err(|_| RejectReason::NotAUrl)
            } else {
                Err(RejectReason::NotAUrl)
            }
        }
        Err(_) => Err(RejectReason::NotAUrl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "dQw4w9WgXcQ";

    #[test]
    fn accepts_every_video_url_form() {
        let forms = [
            "dQw4w9WgXcQ",
            "  dQw4w9WgXcQ  ",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
            "http://www.youtube.com/watch?v=dQw4w9WgXcQ",
            "https://youtube.com/watch?v=dQw4w9WgXcQ",
            "www.youtube.com/watch?v=dQw4w9WgXcQ",
            "youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
            "https://m.youtube.com/watch?feature=share&v=dQw4w9WgXcQ",
            "https://music.youtube.com/watch?v=dQw4w9WgXcQ&list=RDAMVM",
            "https://www.youtube.com/watch?app=desktop&v=dQw4w9WgXcQ&list=PL123&index=2&si=abc",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ#t=30",
            "https://youtu.be/dQw4w9WgXcQ",
            "https://youtu.be/dQw4w9WgXcQ?t=42",
            "https://youtu.be/dQw4w9WgXcQ?si=Abc-123_x",
            "youtu.be/dQw4w9WgXcQ",
            "https://www.youtube.com/shorts/dQw4w9WgXcQ",
            "https://youtube.com/shorts/dQw4w9WgXcQ?feature=share",
            "https://www.youtube.com/embed/dQw4w9WgXcQ?start=10",
            "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
            "https://youtube-nocookie.com/embed/dQw4w9WgXcQ",
            "https://www.youtube.com/live/dQw4w9WgXcQ?si=x",
            "https://www.youtube.com/v/dQw4w9WgXcQ",
            "https://www.youtube.com/watch/dQw4w9WgXcQ",
            "HTTPS://WWW.YOUTUBE.COM/watch?v=dQw4w9WgXcQ",
        ];
        for form in forms {
            let id = parse_video_ref(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(id.as_str(), ID, "{form}");
        }
    }

    #[test]
    fn rejects_non_videos_with_a_reason() {
        let cases = [
            ("", RejectReason::Empty),
            (
                "https://www.youtube.com/playlist?list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs",
                RejectReason::Playlist,
            ),
            (
                "https://www.youtube.com/watch?list=PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs",
                RejectReason::Playlist,
            ),
            (
                "https://www.youtube.com/channel/UC38IQsAvIsxxjztdMZQtwHA",
                RejectReason::Channel,
            ),
            ("https://www.youtube.com/@veritasium", RejectReason::Channel),
            (
                "https://www.youtube.com/c/Veritasium",
                RejectReason::Channel,
            ),
            (
                "https://www.youtube.com/results?search_query=rust",
                RejectReason::Search,
            ),
            (
                "https://vimeo.com/123456",
                RejectReason::NotYouTube("vimeo.com".into()),
            ),
            (
                "https://www.youtube.com/watch?v=short",
                RejectReason::BadVideoId("short".into()),
            ),
            (
                "https://youtu.be/dQw4w9WgXcQextra",
                RejectReason::BadVideoId("dQw4w9WgXcQextra".into()),
            ),
            ("https://www.youtube.com/", RejectReason::NoVideoId),
            ("not a url at all", RejectReason::NotAUrl),
            (
                "ftp://youtube.com/watch?v=dQw4w9WgXcQ",
                RejectReason::BadScheme("ftp".into()),
            ),
            (
                "javascript:alert(1)",
                RejectReason::BadScheme("javascript".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_video_ref(input), Err(want), "{input:?}");
        }
        assert_eq!(
            parse_video_ref(&"x".repeat(MAX_INPUT_LEN + 1)),
            Err(RejectReason::TooLong)
        );
    }

    #[test]
    fn canonical_url_is_a_watch_url() {
        assert_eq!(
            parse_video_ref("youtu.be/dQw4w9WgXcQ").unwrap().watch_url(),
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for input in [
            "://",
            "https://",
            "https://youtu.be/",
            "https://[::1]/watch?v=x",
            "http://youtube.com:99999/watch",
            "\u{0}\u{1}",
            "https://www.youtube.com/watch?v=%FF%FE",
            "é".repeat(3000).as_str(),
        ] {
            let _ = parse_video_ref(input);
        }
    }
}
