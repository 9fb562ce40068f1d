//! Transcript text: timed lines from caption segments or a supplied transcript, sentences with
//! the time they start, and `[mm:ss]` timestamps.

use abridge_youtube::Segment;

/// A transcript ready to summarize.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub video_id: String,
    /// The title to head the summary with.
    pub title: String,
    /// The transcript's language code (for a supplied transcript: the first preferred one).
    pub language: String,
    pub segments: Vec<Segment>,
    /// False for a supplied transcript without timestamps: key points then carry none.
    pub timed: bool,
}

/// A sentence and when it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    pub start_ms: u64,
    pub text: String,
}

/// `mm:ss`, or `h:mm:ss` from an hour on.
pub fn stamp(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// Parses `mm:ss`, `m:ss` or `h:mm:ss` into seconds.
pub fn parse_stamp(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| p.parse().unwrap_or(0)).collect();
    Some(nums.iter().fold(0, |acc, n| acc * 60 + n))
}

/// Reads a supplied transcript: one segment per line; a line may start with a timestamp
/// (`[01:23]`, `(1:02:03)`, `01:23 -`), which then times it. Returns the segments and whether
/// any line was timed.
pub fn supplied_segments(text: &str) -> (Vec<Segment>, bool) {
    let mut timed = false;
    let mut last = 0;
    let segments = text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() {
                return None;
            }
            let (at, rest) = leading_stamp(line).map_or((None, line), |(s, r)| (Some(s), r));
            if let Some(s) = at {
                timed = true;
                last = s * 1000;
            }
            let rest = rest.trim();
            (!rest.is_empty()).then(|| Segment {
                start_ms: last,
                dur_ms: 0,
                text: rest.to_owned(),
            })
        })
        .collect();
    (segments, timed)
}

/// A timestamp at the start of `line`, in seconds, and the rest of the line.
pub fn leading_stamp(line: &str) -> Option<(u64, &str)> {
    let (inner, rest) = if let Some(r) = line.strip_prefix('[') {
        let end = r.find(']')?;
        (&r[..end], &r[end + 1..])
    } else if let Some(r) = line.strip_prefix('(') {
        let end = r.find(')')?;
        (&r[..end], &r[end + 1..])
    } else {
        let end = line.find(char::is_whitespace).unwrap_or(line.len());
        (&line[..end], &line[end..])
    };
    let seconds = parse_stamp(inner)?;
    let rest = rest
        .trim_start()
        .trim_start_matches(['-', '–', '—', ':'])
        .trim_start();
    Some((seconds, rest))
}

/// Caption noise that is not speech: `[Music]`, `(applause)`, `♪`, speaker marks `>>`.
fn is_noise(word: &str) -> bool {
    word.starts_with(">>") || word.chars().all(|c| c == '♪' || c == '♫' || c == '-')
}

const ABBREVIATIONS: [&str; 12] = [
    "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "e.g.", "i.e.", "etc.", "approx.", "no.",
];

/// Splits the segments into sentences, each starting when its first word is spoken. Captions
/// without punctuation (auto-generated ones) are cut at segment boundaries once a sentence
/// has about 30 words, and anywhere past 60.
pub fn sentences(segments: &[Segment]) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    let flush = |words: &mut Vec<String>, start: u64, out: &mut Vec<Sentence>| {
        if !words.is_empty() {
            out.push(Sentence {
                start_ms: start,
                text: tidy(&words.join(" ")),
            });
            words.clear();
        }
    };
    for seg in segments {
        let text = strip_bracketed(&seg.text);
        for word in text.split_whitespace() {
            if is_noise(word) {
                continue;
            }
            if words.is_empty() {
                start = seg.start_ms;
            }
            words.push(word.to_owned());
            let ends = word.ends_with(['.', '!', '?'])
                || word.ends_with(".\"")
                || word.ends_with("?\"")
                || word.ends_with("!\"");
            let abbreviation = ABBREVIATIONS.contains(&word.to_lowercase().as_str());
            if (ends && !abbreviation && words.len() >= 2) || words.len() >= 60 {
                flush(&mut words, start, &mut out);
            }
        }
        if words.len() >= 30 {
            flush(&mut words, start, &mut out);
        }
    }
    flush(&mut words, start, &mut out);
    out
}

/// Removes `[Music]`, `[Applause]`, `(laughter)` and the like.
fn strip_bracketed(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A sentence as a reader should see it: capitalised, `i` as `I`, ending in punctuation.
pub fn tidy(text: &str) -> String {
    let mut words: Vec<String> = text
        .split_whitespace()
        .map(|w| match w {
            "i" => "I".to_owned(),
            "i'm" => "I'm".to_owned(),
            "i've" => "I've".to_owned(),
            "i'll" => "I'll".to_owned(),
            "i'd" => "I'd".to_owned(),
            _ => w.to_owned(),
        })
        .collect();
    if let Some(first) = words.first_mut() {
        let mut chars = first.chars();
        if let Some(c) = chars.next() {
            *first = c.to_uppercase().chain(chars).collect();
        }
    }
    let mut s = words.join(" ");
    if !s.ends_with(['.', '!', '?', '"', '…']) {
        s.push('.');
    }
    s
}

/// Transcript lines for a prompt: `[mm:ss] text`, a line per ~30 seconds or 40 words, each
/// starting at a segment boundary (so chunks cut between lines keep their timestamps).
pub fn prompt_lines(segments: &[Segment], timed: bool) -> Vec<(u64, String)> {
    let mut lines = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut start = 0;
    for seg in segments {
        if !current.is_empty()
            && (current.len() >= 40 || seg.start_ms.saturating_sub(start) >= 30_000)
        {
            lines.push((start / 1000, current.join(" ")));
            current.clear();
        }
        if current.is_empty() {
            start = seg.start_ms;
        }
        current.extend(seg.text.split_whitespace());
    }
    if !current.is_empty() {
        lines.push((start / 1000, current.join(" ")));
    }
    if !timed {
        for (at, _) in &mut lines {
            *at = 0;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: u64, text: &str) -> Segment {
        Segment {
            start_ms,
            dur_ms: 1000,
            text: text.into(),
        }
    }

    #[test]
    fn stamps_round_trip() {
        assert_eq!(stamp(0), "00:00");
        assert_eq!(stamp(754), "12:34");
        assert_eq!(stamp(3723), "1:02:03");
        assert_eq!(parse_stamp("12:34"), Some(754));
        assert_eq!(parse_stamp("1:02:03"), Some(3723));
        assert_eq!(parse_stamp("12"), None);
        assert_eq!(parse_stamp("a:bc"), None);
    }

    #[test]
    fn sentences_start_with_their_first_word() {
        let segs = [
            seg(0, "[Music] hello everyone. today we talk"),
            seg(4000, "about Dr. Smith's rust compiler! It is"),
            seg(9000, "fast."),
        ];
        let s = sentences(&segs);
        assert_eq!(
            s,
            vec![
                Sentence {
                    start_ms: 0,
                    text: "Hello everyone.".into()
                },
                Sentence {
                    start_ms: 0,
                    text: "Today we talk about Dr. Smith's rust compiler!".into()
                },
                Sentence {
                    start_ms: 4000,
                    text: "It is fast.".into()
                },
            ]
        );
    }

    #[test]
    fn unpunctuated_captions_are_cut_at_segment_boundaries() {
        let segs: Vec<Segment> = (0..20)
            .map(|i| seg(i * 3000, "so this is a line of auto generated words"))
            .collect();
        let s = sentences(&segs);
        assert!(s.len() >= 4, "{}", s.len());
        assert!(s.iter().all(|x| x.text.split_whitespace().count() <= 60));
        assert_eq!(s[1].start_ms, 12000);
    }

    #[test]
    fn prompt_lines_span_at_most_30_seconds_and_start_at_segments() {
        let segs: Vec<Segment> = (0..7).map(|i| seg(i * 20_000, "a b c")).collect();
        let lines = prompt_lines(&segs, true);
        assert_eq!(
            lines.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
            [0, 40, 80, 120]
        );
        assert_eq!(lines[0].1, "a b c a b c");
        assert!(prompt_lines(&segs, false).iter().all(|(at, _)| *at == 0));
    }

    #[test]
    fn supplied_transcripts_may_carry_timestamps() {
        let (segs, timed) = supplied_segments("[00:05] First point.\n\n1:02 - Second\nthird");
        assert!(timed);
        assert_eq!(
            segs.iter().map(|s| s.start_ms).collect::<Vec<_>>(),
            [5000, 62000, 62000]
        );
        assert_eq!(segs[1].text, "Second");
        let (_, timed) = supplied_segments("Just text. More text.");
        assert!(!timed);
    }
}
