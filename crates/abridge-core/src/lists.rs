//! Playlist and channel lines: which URLs name a list of videos, and what a caller needs to
//! expand one. Reading a list takes YouTube (`abridge-youtube`'s `browse`); this module only
//! recognises and validates the references, so the CLI and the API accept the same lines.

use crate::video::{RejectReason, VideoId, WATCH_HOSTS, parse_url, truncate};

/// Videos taken from one list line unless the producer asks for another limit.
pub const DEFAULT_MAX_PER_LIST: usize = 200;
/// The most videos any one list line may give, whatever the producer asks for.
pub const MAX_PER_LIST_CEILING: usize = 5_000;
/// The most list lines one batch may hold: each costs YouTube requests at enqueue.
pub const MAX_LISTS_PER_BATCH: usize = 100;

/// How a batch's list lines are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOptions {
    /// `watch?v=X&list=Y` is the list `Y` rather than the one video `X`.
    pub watch_lists: bool,
    /// Videos taken from each list line, from its start (1 to [`MAX_PER_LIST_CEILING`]).
    pub max_per_list: usize,
}

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            watch_lists: false,
            max_per_list: DEFAULT_MAX_PER_LIST,
        }
    }
}

impl ListOptions {
    /// `max_per_list` checked against its bounds; the error names them.
    pub fn new(watch_lists: bool, max_per_list: usize) -> Result<Self, String> {
        if !(1..=MAX_PER_LIST_CEILING).contains(&max_per_list) {
            return Err(format!(
                "max_per_list must be between 1 and {MAX_PER_LIST_CEILING} (got {max_per_list})"
            ));
        }
        Ok(Self {
            watch_lists,
            max_per_list,
        })
    }
}

/// A list of videos a line names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListRef {
    /// A playlist by its id (`PL...`, `UU...`, `OLAK5uy_...`).
    Playlist(String),
    /// A channel's videos tab.
    Channel(ChannelRef),
}

/// How a line names a channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChannelRef {
    /// `UC` and 22 characters: browsed as it is.
    Id(String),
    /// `@handle`, `c/Name` or `user/Name` (percent-encoded as sent): resolved to an id first.
    Path(String),
}

impl ListRef {
    /// How reasons name the list: `playlist PL...`, `channel @handle`.
    pub fn describe(&self) -> String {
        match self {
            Self::Playlist(id) => format!("playlist {id}"),
            Self::Channel(ChannelRef::Id(id)) => format!("channel {id}"),
            Self::Channel(ChannelRef::Path(path)) => format!("channel {path}"),
        }
    }
}

/// One video a list gave, in list order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListVideo {
    pub video_id: VideoId,
    /// The title the list shows for it (already bounded and cleaned by the reader).
    pub title: Option<String>,
}

/// What reading a list gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadList {
    /// The playlist id its items name in their URLs (`&list=`): the playlist's own, or for a
    /// channel the playlist of its videos tab (`UULF` + the channel id's last 22 characters),
    /// which is where YouTube's "Play all" leads.
    pub playlist_id: String,
    /// At most the limit asked for, in list order.
    pub videos: Vec<ListVideo>,
}

/// Whether `id` may be a playlist id: 2 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_playlist_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `id` is a channel id: `UC` and 22 characters of `[A-Za-z0-9_-]`.
pub fn is_channel_id(id: &str) -> bool {
    id.len() == 24
        && id.starts_with("UC")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A handle, custom or user name as a URL path segment: 1 to 100 characters of letters,
/// digits, `.`, `_`, `-`, and `%` escapes (handles may be in any script).
fn is_channel_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'%'))
}

/// The list a line names, if it names one: `None` for anything else (a video, or not a
/// YouTube URL: the video parser says what is wrong with it), `Some(Err(reason))` for a list
/// that cannot be expanded (a mix, a signed-in user's own list, a channel tab other than its
/// videos).
///
/// Lists: `/playlist?list=ID`, `/watch?list=ID` without `v`, and with `watch_lists`
/// `/watch?v=X&list=ID` (and `youtu.be/X?list=ID`); channels: `/@handle`, `/channel/UC...`, `/c/Name`, `/user/Name`,
/// each alone or followed by `/videos` or `/featured`.
pub fn parse_list_ref(input: &str, watch_lists: bool) -> Option<Result<ListRef, String>> {
    let input = input.trim();
    if input.len() > crate::video::MAX_INPUT_LEN || !input.contains('/') {
        return None;
    }
    let url = parse_url(input).ok()?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    let query = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if host == "youtu.be" || host == "www.youtu.be" {
        return (watch_lists && query("list").is_some()).then(|| playlist(query("list")));
    }
    if !WATCH_HOSTS.contains(&host.as_str()) {
        return None;
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|seg| !seg.is_empty()).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        ["playlist"] => Some(playlist(query("list"))),
        ["watch"] if query("v").is_none() => Some(playlist(query("list"))),
        ["watch"] if watch_lists && query("list").is_some() => Some(playlist(query("list"))),
        [first, rest @ ..] if first.starts_with('@') => Some(channel_tab(
            rest,
            (first.len() > 1 && is_channel_name(&first[1..]))
                .then(|| ChannelRef::Path((*first).to_owned())),
        )),
        ["channel", id, rest @ ..] => Some(channel_tab(
            rest,
            is_channel_id(id).then(|| ChannelRef::Id((*id).to_owned())),
        )),
        [kind @ ("c" | "user"), name, rest @ ..] => Some(channel_tab(
            rest,
            is_channel_name(name).then(|| ChannelRef::Path(format!("{kind}/{name}"))),
        )),
        _ => None,
    }
}

fn playlist(id: Option<String>) -> Result<ListRef, String> {
    let Some(id) = id.filter(|id| !id.is_empty()) else {
        return Err("a playlist URL needs its list=ID".into());
    };
    if !is_playlist_id(&id) {
        return Err(format!(
            "playlist id {:?} is not 2 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
            truncate(&id, 40)
        ));
    }
    if id.starts_with("RD") {
        return Err(
            "YouTube mixes (list=RD...) are made for each viewer and cannot be expanded".into(),
        );
    }
    if matches!(id.as_str(), "WL" | "LL" | "LM") {
        return Err("this list belongs to a signed-in viewer and cannot be read".into());
    }
    Ok(ListRef::Playlist(id))
}

fn channel_tab(rest: &[&str], channel: Option<ChannelRef>) -> Result<ListRef, String> {
    let Some(channel) = channel else {
        return Err(RejectReason::Channel.to_string() + ", and this channel URL is not valid");
    };
    match rest {
        [] | ["videos" | "featured"] => Ok(ListRef::Channel(channel)),
        _ => Err(
            "only a channel's videos are expanded: use /@handle, /@handle/videos or /channel/ID"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(input: &str) -> Option<Result<ListRef, String>> {
        parse_list_ref(input, false)
    }

    #[test]
    fn recognises_playlists_and_channels() {
        let pl = "PL590L5WQmH8fJ54F369BLDSqIwcs-TCfs";
        let playlist = Some(Ok(ListRef::Playlist(pl.into())));
        assert_eq!(
            list(&format!("https://www.youtube.com/playlist?list={pl}")),
            playlist
        );
        assert_eq!(
            list(&format!("youtube.com/playlist?list={pl}&si=x")),
            playlist
        );
        assert_eq!(
            list(&format!("https://m.youtube.com/watch?list={pl}")),
            playlist
        );
        let channel = |c: ChannelRef| Some(Ok(ListRef::Channel(c)));
        for form in [
            "https://www.youtube.com/@veritasium",
            "https://www.youtube.com/@veritasium/videos",
            "youtube.com/@veritasium/featured?si=1",
        ] {
            assert_eq!(
                list(form),
                channel(ChannelRef::Path("@veritasium".into())),
                "{form}"
            );
        }
        assert_eq!(
            list("https://www.youtube.com/channel/UCHnyfMqiRRG1u-2MsSQLbXA/videos"),
            channel(ChannelRef::Id("UCHnyfMqiRRG1u-2MsSQLbXA".into()))
        );
        assert_eq!(
            list("https://www.youtube.com/c/Veritasium"),
            channel(ChannelRef::Path("c/Veritasium".into()))
        );
    }

    #[test]
    fn a_watch_url_with_a_list_is_a_video_unless_asked() {
        let url = "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PLabc123";
        let short = "https://youtu.be/dQw4w9WgXcQ?list=PLabc123";
        for url in [url, short] {
            assert_eq!(parse_list_ref(url, false), None);
            assert_eq!(
                parse_list_ref(url, true),
                Some(Ok(ListRef::Playlist("PLabc123".into())))
            );
        }
    }

    #[test]
    fn lists_that_cannot_be_read_say_why() {
        for (input, want) in [
            (
                "https://www.youtube.com/playlist?list=RDdQw4w9WgXcQ",
                "mixes",
            ),
            ("https://www.youtube.com/playlist?list=WL", "signed-in"),
            ("https://www.youtube.com/playlist", "list=ID"),
            ("https://www.youtube.com/playlist?list=a%20b", "not 2 to 64"),
            (
                "https://www.youtube.com/@veritasium/shorts",
                "only a channel's videos",
            ),
            ("https://www.youtube.com/channel/UCshort", "not valid"),
            ("https://www.youtube.com/@", "not valid"),
        ] {
            let got = list(input).unwrap().unwrap_err();
            assert!(got.contains(want), "{input}: {got}");
        }
    }

    #[test]
    fn videos_and_other_sites_are_not_lists() {
        for input in [
            "dQw4w9WgXcQ",
            "https://youtu.be/dQw4w9WgXcQ?list=PLabc",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
            "https://example.com/playlist?list=PLabc",
            "https://www.youtube.com/results?search_query=rust",
        ] {
            assert_eq!(list(input), None, "{input}");
        }
    }

    #[test]
    fn max_per_list_is_bounded() {
        assert!(ListOptions::new(false, 0).is_err());
        assert!(ListOptions::new(false, MAX_PER_LIST_CEILING + 1).is_err());
        assert_eq!(ListOptions::new(true, 5).unwrap().max_per_list, 5);
    }
}
