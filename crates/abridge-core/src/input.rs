//! A batch's input: validation, normalisation and de-duplication, shared by `abridge enqueue`
//! and the HTTP API so that both accept and reject exactly the same things.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::lists::{self, ListOptions, ListRef, MAX_LISTS_PER_BATCH, ReadList};
use crate::video::{VideoId, parse_video_ref};

/// Titles longer than this are rejected: a title is a label, not a document.
pub const MAX_TITLE_CHARS: usize = 500;
/// A producer-supplied transcript larger than this is rejected (bytes of UTF-8).
pub const MAX_TRANSCRIPT_BYTES: usize = 4 * 1024 * 1024;
/// Rejected inputs are echoed back shortened to this many characters.
const ECHO_CHARS: usize = 200;

/// `text` with every NUL replaced by U+FFFD: Postgres text and jsonb cannot hold NUL, and an
/// input (or its echo in a stored reply) must never fail a write for it.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// One input as a producer sends it, before validation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    pub url: String,
    #[serde(default)]
    pub title: Option<String>,
    /// A transcript the producer already has; the item is summarised without fetching one.
    #[serde(default)]
    pub transcript: Option<String>,
}

/// One accepted, normalised input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemInput {
    /// Where it came from: its line (files) or index (API), as [`Rejected::line`].
    pub line: usize,
    pub video_id: VideoId,
    /// The canonical watch URL, not the form the producer sent.
    pub url: String,
    pub title: Option<String>,
    pub transcript: Option<String>,
}

/// One rejected input. `line` is 1-based for files (`abridge enqueue`) and the 0-based array
/// index for the API; the caller chooses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub line: usize,
    pub input: String,
    pub reason: String,
}

/// A playlist or channel line, waiting for its caller to read it ([`BatchInput::resolve_lists`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingList {
    pub line: usize,
    /// The line as sent, for a rejection's echo.
    pub input: String,
    pub list: ListRef,
}

/// The outcome of reading a batch's inputs: the valid ones in first-seen order, how many
/// repeated an earlier video, and every rejected one with its reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchInput {
    pub items: Vec<ItemInput>,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
    /// List lines still to be read: only with [`BatchInput::with_lists`]; without it a list
    /// line is rejected, as a caller that cannot read lists must.
    pub lists: Vec<PendingList>,
    list_options: Option<ListOptions>,
    seen: HashSet<VideoId>,
}

impl BatchInput {
    /// An input that keeps playlist and channel lines in [`BatchInput::lists`] for the caller
    /// to read, instead of rejecting them.
    pub fn with_lists(options: ListOptions) -> Self {
        Self {
            list_options: Some(options),
            ..Self::default()
        }
    }

    /// How list lines are read, if this input keeps them.
    pub fn list_options(&self) -> Option<ListOptions> {
        self.list_options
    }

    /// Reads `abridge enqueue` input: one URL, bare id, or JSON object per line. Blank lines and
    /// lines starting with `#` are skipped. Line numbers are 1-based.
    pub fn from_lines(text: &str) -> Self {
        let mut input = Self::default();
        input.push_lines(text);
        input
    }

    /// Adds every line of `text`, as [`BatchInput::from_lines`] reads them.
    pub fn push_lines(&mut self, text: &str) {
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            self.push_line(n + 1, trimmed);
        }
    }

    /// Reads a CSV file with a header row naming a `url` column (and optionally `title` and
    /// `transcript`; any case, other columns ignored). Line numbers are 1-based, counting the
    /// header; a record's line is the one it starts on. A file without a `url` column, or not
    /// CSV at all, is an error naming what is wrong.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut input = Self::default();
        input.push_csv(text)?;
        Ok(input)
    }

    /// Adds every record of a CSV file, as [`BatchInput::from_csv`] reads them.
    pub fn push_csv(&mut self, text: &str) -> Result<(), String> {
        let input = self;
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| format!("the CSV header row cannot be read: {e}"))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let Some(url) = column("url") else {
            return Err("the CSV file has no `url` column in its header row".to_owned());
        };
        let (title, transcript) = (column("title"), column("transcript"));
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line() as usize);
                    input.reject(line, "", format!("not a CSV record: {e}"));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line() as usize);
            let field = |i: Option<usize>| {
                i.and_then(|i| record.get(i))
                    .map(str::to_owned)
                    .filter(|v| !v.trim().is_empty())
            };
            let Some(raw_url) = field(Some(url)) else {
                if record.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                input.reject(line, "", "the `url` column is empty".to_owned());
                continue;
            };
            input.push(
                line,
                RawItem {
                    url: raw_url.trim().to_owned(),
                    title: field(title),
                    transcript: field(transcript),
                },
            );
        }
        Ok(())
    }

    /// Adds one input line (a URL, an id, or a JSON object).
    pub fn push_line(&mut self, line: usize, text: &str) {
        if text.starts_with('{') {
            match serde_json::from_str::<RawItem>(text) {
                Ok(raw) => self.push(line, raw),
                Err(e) => self.reject(line, text, format!("invalid JSON object: {e}")),
            }
        } else {
            self.push(
                line,
                RawItem {
                    url: text.to_owned(),
                    ..RawItem::default()
                },
            );
        }
    }

    /// Adds one structured input.
    pub fn push(&mut self, line: usize, raw: RawItem) {
        if let Some(options) = self.list_options {
            match lists::parse_list_ref(&raw.url, options.watch_lists) {
                Some(Ok(list)) => return self.push_list(line, raw, list),
                Some(Err(reason)) => return self.reject(line, &raw.url, reason),
                None => {}
            }
        }
        let video_id = match parse_video_ref(&raw.url) {
            Ok(id) => id,
            Err(reason) => return self.reject(line, &raw.url, reason.to_string()),
        };
        let title = raw
            .title
            .map(|t| without_nul(t.trim().to_owned()))
            .filter(|t| !t.is_empty());
        if let Some(title) = &title
            && title.chars().count() > MAX_TITLE_CHARS
        {
            return self.reject(
                line,
                &raw.url,
                format!("title is longer than {MAX_TITLE_CHARS} characters"),
            );
        }
        let transcript = raw
            .transcript
            .filter(|t| !t.trim().is_empty())
            .map(without_nul);
        if let Some(transcript) = &transcript
            && transcript.len() > MAX_TRANSCRIPT_BYTES
        {
            return self.reject(
                line,
                &raw.url,
                format!(
                    "transcript is larger than {} MiB",
                    MAX_TRANSCRIPT_BYTES / 1024 / 1024
                ),
            );
        }
        if !self.seen.insert(video_id.clone()) {
            self.duplicates += 1;
            return;
        }
        self.items.push(ItemInput {
            line,
            url: video_id.watch_url(),
            video_id,
            title,
            transcript,
        });
    }

    fn push_list(&mut self, line: usize, raw: RawItem, list: ListRef) {
        if raw.transcript.is_some() || raw.title.is_some() {
            return self.reject(
                line,
                &raw.url,
                "a playlist or channel cannot carry a title or transcript: they belong to one video"
                    .into(),
            );
        }
        if self.lists.len() >= MAX_LISTS_PER_BATCH {
            return self.reject(
                line,
                &raw.url,
                format!("a batch may hold at most {MAX_LISTS_PER_BATCH} playlists and channels"),
            );
        }
        self.lists.push(PendingList {
            line,
            input: raw.url,
            list,
        });
    }

    /// Puts each read list's videos in its line's place, and rejects each list that could not
    /// be read with its reason. Items are then in line order (a list's videos in list order,
    /// each noting the list and its index there in its URL), and a video seen earlier in
    /// that order is a duplicate, whether it came from a list or a line of its own.
    pub fn resolve_lists(&mut self, read: Vec<(PendingList, Result<ReadList, String>)>) {
        let max = self
            .list_options
            .map_or(lists::DEFAULT_MAX_PER_LIST, |o| o.max_per_list);
        // (line, index in the line's list, item): plain lines sort before nothing else on
        // their line, since a line is either a list or one input.
        let mut placed: Vec<(usize, usize, ItemInput)> = std::mem::take(&mut self.items)
            .into_iter()
            .map(|item| (item.line, 0, item))
            .collect();
        for (pending, result) in read {
            match result {
                Ok(list) => {
                    for (index, video) in list.videos.into_iter().take(max).enumerate() {
                        let url = format!(
                            "{}&list={}&index={}",
                            video.video_id.watch_url(),
                            list.playlist_id,
                            index + 1
                        );
                        let title = video
                            .title
                            .map(|t| without_nul(t.trim().to_owned()))
                            .filter(|t| !t.is_empty())
                            .map(|t| crate::video::truncate(&t, MAX_TITLE_CHARS - 1));
                        placed.push((
                            pending.line,
                            index,
                            ItemInput {
                                line: pending.line,
                                video_id: video.video_id,
                                url,
                                title,
                                transcript: None,
                            },
                        ));
                    }
                }
                Err(reason) => self.reject(pending.line, &pending.input, reason),
            }
        }
        placed.sort_by_key(|(line, index, _)| (*line, *index));
        self.rejected.sort_by_key(|r| r.line);
        self.seen.clear();
        for (_, _, item) in placed {
            if self.seen.insert(item.video_id.clone()) {
                self.items.push(item);
            } else {
                self.duplicates += 1;
            }
        }
    }

    fn reject(&mut self, line: usize, input: &str, reason: String) {
        let (input, reason) = (without_nul(input.to_owned()), without_nul(reason));
        let input = match input.char_indices().nth(ECHO_CHARS) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        self.rejected.push(Rejected {
            line,
            input,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_files_are_read_by_their_url_column_with_line_numbers() {
        let text = "Title,URL,notes\n\
                    A talk,https://youtu.be/dQw4w9WgXcQ,x\n\
                    \"Quoted, with a comma\",jNQXAC9IVRw,\n\
                    ,,\n\
                    No url,,y\n\
                    Bad,https://www.youtube.com/@channel,\n\
                    \"Two\nlines\",aqz-KE-bpKQ,\n";
        let input = BatchInput::from_csv(text).unwrap();
        let got: Vec<(usize, &str, Option<&str>)> = input
            .items
            .iter()
            .map(|i| (i.line, i.video_id.as_str(), i.title.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "dQw4w9WgXcQ", Some("A talk")),
                (3, "jNQXAC9IVRw", Some("Quoted, with a comma")),
                (7, "aqz-KE-bpKQ", Some("Two\nlines")),
            ]
        );
        let rejected: Vec<(usize, &str)> = input
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (5, "the `url` column is empty"),
                (6, "channel pages are not videos")
            ]
        );
        assert_eq!(
            BatchInput::from_csv("title,link\nx,y\n").unwrap_err(),
            "the CSV file has no `url` column in its header row"
        );
    }

    #[test]
    fn keeps_order_drops_duplicates_and_reports_rejects_by_line() {
        let text = "\
# a comment
https://www.youtube.com/watch?v=aaaaaaaaaaa

youtu.be/bbbbbbbbbbb?t=3
https://youtu.be/aaaaaaaaaaa
https://www.youtube.com/playlist?list=PLxyz
{\"url\": \"ccccccccccc\", \"title\": \"  Talk  \", \"transcript\": \"Hello there.\"}
{\"url\": 3}
not a url
";
        let input = BatchInput::from_lines(text);
        let ids: Vec<&str> = input.items.iter().map(|i| i.video_id.as_str()).collect();
        assert_eq!(ids, ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"]);
        assert_eq!(input.duplicates, 1);
        assert_eq!(input.items[2].title.as_deref(), Some("Talk"));
        assert_eq!(input.items[2].transcript.as_deref(), Some("Hello there."));
        assert_eq!(
            input.items[1].url,
            "https://www.youtube.com/watch?v=bbbbbbbbbbb"
        );
        let lines: Vec<usize> = input.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [6, 8, 9]);
        assert!(input.rejected[0].reason.contains("playlist"));
        assert!(
            input.rejected[1].reason.starts_with("invalid JSON object"),
            "{}",
            input.rejected[1].reason
        );
        assert_eq!(input.rejected[2].input, "not a url");
    }

    #[test]
    fn list_lines_wait_for_their_videos_and_take_their_place_in_line_order() {
        use crate::lists::{ListVideo, ReadList};
        let text = "\
aaaaaaaaaaa
https://www.youtube.com/playlist?list=PLfirst
https://www.youtube.com/@someone/videos
https://youtu.be/ccccccccccc
https://www.youtube.com/watch?v=ddddddddddd&list=PLfirst
https://www.youtube.com/@someone/shorts
";
        let mut input = BatchInput::with_lists(ListOptions::new(false, 2).unwrap());
        input.push_lines(text);
        assert_eq!(input.lists.len(), 2);
        assert_eq!(input.rejected.len(), 1, "{:?}", input.rejected);
        let video = |id: &str| ListVideo {
            video_id: VideoId::parse(id).unwrap(),
            title: Some(format!("title of {id}")),
        };
        let lists = std::mem::take(&mut input.lists);
        let read = vec![
            (
                lists[0].clone(),
                Ok(ReadList {
                    playlist_id: "PLfirst".into(),
                    // The third is past the limit of 2.
                    videos: vec![
                        video("bbbbbbbbbbb"),
                        video("aaaaaaaaaaa"),
                        video("eeeeeeeeeee"),
                    ],
                }),
            ),
            (
                lists[1].clone(),
                Err("channel @someone: it is gone".to_owned()),
            ),
        ];
        input.resolve_lists(read);
        let got: Vec<(usize, &str, &str)> = input
            .items
            .iter()
            .map(|i| (i.line, i.video_id.as_str(), i.url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    "aaaaaaaaaaa",
                    "https://www.youtube.com/watch?v=aaaaaaaaaaa"
                ),
                (
                    2,
                    "bbbbbbbbbbb",
                    "https://www.youtube.com/watch?v=bbbbbbbbbbb&list=PLfirst&index=1"
                ),
                (
                    4,
                    "ccccccccccc",
                    "https://www.youtube.com/watch?v=ccccccccccc"
                ),
                (
                    5,
                    "ddddddddddd",
                    "https://www.youtube.com/watch?v=ddddddddddd"
                ),
            ]
        );
        assert_eq!(
            input.items[1].title.as_deref(),
            Some("title of bbbbbbbbbbb")
        );
        assert_eq!(input.duplicates, 1, "aaaaaaaaaaa again, from the playlist");
        let rejected: Vec<(usize, &str)> = input
            .rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(rejected[0], (3, "channel @someone: it is gone"));
        assert_eq!(rejected[1].0, 6);
    }

    #[test]
    fn without_lists_a_list_line_is_rejected_as_before() {
        let input = BatchInput::from_lines("https://www.youtube.com/playlist?list=PLx\n");
        assert!(input.lists.is_empty());
        assert!(input.rejected[0].reason.contains("playlist"));
    }

    #[test]
    fn nul_never_reaches_what_is_stored() {
        let mut input = BatchInput::default();
        input.push(
            0,
            RawItem {
                url: "aaaaaaaaaaa".into(),
                title: Some("a\0b".into()),
                transcript: Some("one\0two".into()),
            },
        );
        input.push(
            1,
            RawItem {
                url: "bad\0url".into(),
                ..RawItem::default()
            },
        );
        assert_eq!(input.items[0].title.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(input.items[0].transcript.as_deref(), Some("one\u{FFFD}two"));
        assert!(!input.rejected[0].input.contains('\0'));
    }

    #[test]
    fn unknown_json_fields_are_named() {
        let input = BatchInput::from_lines("{\"url\": \"aaaaaaaaaaa\", \"titel\": \"x\"}");
        assert!(
            input.rejected[0].reason.contains("titel"),
            "{:?}",
            input.rejected
        );
    }

    #[test]
    fn oversized_fields_are_rejected_not_truncated() {
        let mut input = BatchInput::default();
        input.push(
            0,
            RawItem {
                url: "aaaaaaaaaaa".into(),
                title: Some("t".repeat(MAX_TITLE_CHARS + 1)),
                transcript: None,
            },
        );
        assert!(input.items.is_empty());
        assert!(input.rejected[0].reason.contains("title"));
    }
}
