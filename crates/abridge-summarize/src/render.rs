//! The one summary shape every backend produces, and reading an LLM's answer into it.
//!
//! ```markdown
//! # Title
//!
//! **TL;DR:** One paragraph.
//!
//! ## Key points
//!
//! - [01:23](https://youtu.be/VIDEO?t=83) A point.
//! ```

use crate::text::{leading_stamp, stamp};

/// A summary before rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub title: String,
    pub tldr: String,
    pub points: Vec<KeyPoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPoint {
    /// Seconds into the video; `None` for an untimed (supplied) transcript.
    pub at_s: Option<u64>,
    pub text: String,
}

/// The markdown summary: the item's heading, then the body.
pub fn render(video_id: &str, summary: &Summary) -> String {
    heading(&summary.title) + &body(video_id, summary)
}

/// The heading, which names the item's own title. It is rendered per item, never cached: a
/// title may be a producer's own text.
pub fn heading(title: &str) -> String {
    format!("# {}\n\n", one_line(title))
}

/// Everything after the heading: what the summary says of the video (the part that is cached).
pub fn body(video_id: &str, summary: &Summary) -> String {
    let mut out = format!(
        "**TL;DR:** {}\n\n## Key points\n\n",
        one_line(&summary.tldr)
    );
    for p in &summary.points {
        match p.at_s {
            Some(at) => out.push_str(&format!(
                "- [{}](https://youtu.be/{video_id}?t={at}) {}\n",
                stamp(at),
                one_line(&p.text)
            )),
            None => out.push_str(&format!("- {}\n", one_line(&p.text))),
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads the answer format the prompts ask for:
///
/// ```text
/// TL;DR: <one paragraph>
/// KEY POINTS:
/// - [mm:ss] <point>
/// ```
///
/// Leniently: markdown emphasis, `*`/`•`/numbered bullets, `(mm:ss)` stamps and a missing
/// `KEY POINTS:` line are accepted. Points later than `duration_s` are clamped to it. `None`
/// when the answer has neither a TL;DR nor a point.
pub fn parse_answer(answer: &str, duration_s: Option<u64>) -> Option<(String, Vec<KeyPoint>)> {
    read_labeled(answer, duration_s).map(|a| (a.tldr, a.points))
}

/// A model's answer read into a summary's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub tldr: String,
    pub points: Vec<KeyPoint>,
    /// The answer had neither a TL;DR nor bullets: its prose became the TL;DR (and its further
    /// paragraphs the points).
    pub prose: bool,
    /// Timestamps past the video's end, set to the end.
    pub clamped: u32,
}

impl Answer {
    /// An answer read from a structure or labels: `None` with neither a TL;DR nor a point.
    fn read(tldr: String, points: Vec<KeyPoint>, clamped: u32) -> Option<Self> {
        if tldr.is_empty() && points.is_empty() {
            return None;
        }
        Some(Self {
            tldr,
            points,
            prose: false,
            clamped,
        })
    }
}

/// Reads a final answer: the labelled format first, else the prose of any readable answer. A
/// refusal or a non-answer (see [`refusal`]) is not an answer; `None` for nothing readable.
pub fn read_answer(answer: &str, duration_s: Option<u64>) -> Option<Answer> {
    read_labeled(answer, duration_s).or_else(|| read_prose(answer))
}

/// Reads the structured answer (`{tldr, key_points: [{at, text}]}`); `None` when it holds
/// neither a TL;DR nor a point, so that the text is read instead.
pub fn read_structured(v: &serde_json::Value, duration_s: Option<u64>) -> Option<Answer> {
    let tldr = one_line(v["tldr"].as_str().unwrap_or_default());
    let end = duration_s.unwrap_or(u64::MAX);
    let mut clamped = 0;
    let points: Vec<KeyPoint> = v["key_points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let text = one_line(p["text"].as_str()?);
            if text.is_empty() {
                return None;
            }
            let at = p["at"]
                .as_str()
                .map(|a| a.trim().trim_matches(|c| c == '[' || c == ']'))
                .and_then(crate::text::parse_stamp)
                .map(|at| {
                    if at > end {
                        clamped += 1;
                    }
                    at.min(end)
                });
            Some(KeyPoint { at_s: at, text })
        })
        .collect();
    Answer::read(tldr, points, clamped)
}

fn read_labeled(answer: &str, duration_s: Option<u64>) -> Option<Answer> {
    let mut tldr: Vec<String> = Vec::new();
    let mut points = Vec::new();
    let mut clamped = 0;
    let mut in_tldr = false;
    for raw in answer.lines() {
        let trimmed = raw.trim();
        let line = trimmed.trim_matches('*').trim();
        let lower = line.to_lowercase();
        if lower.starts_with("tl;dr") || lower.starts_with("tldr") {
            let rest = line
                .split_once(':')
                .map(|(_, r)| r)
                .unwrap_or_default()
                .trim()
                .trim_matches('*')
                .trim();
            tldr.push(rest.to_owned());
            in_tldr = true;
            continue;
        }
        if lower.starts_with("key points") || lower.starts_with("#") {
            in_tldr = false;
            continue;
        }
        if let Some(point) = bullet(trimmed) {
            in_tldr = false;
            let point = point.trim_start_matches('*').trim_start();
            let (at_s, text) = match leading_stamp(point) {
                Some((at, rest)) => {
                    let end = duration_s.unwrap_or(u64::MAX);
                    if at > end {
                        clamped += 1;
                    }
                    (Some(at.min(end)), rest)
                }
                None => (None, point),
            };
            let text = text.trim().trim_start_matches("**").trim();
            if !text.is_empty() {
                points.push(KeyPoint {
                    at_s,
                    text: text.to_owned(),
                });
            }
            continue;
        }
        if line.is_empty() {
            in_tldr = false;
        } else if in_tldr {
            tldr.push(line.to_owned());
        }
    }
    let tldr = tldr.join(" ").trim().to_owned();
    Answer::read(tldr, points, clamped)
}

/// Longest TL;DR taken from prose, in characters (cut at a sentence's end within it).
const PROSE_TLDR_CHARS: usize = 1_200;
/// Most points taken from prose's further paragraphs.
const PROSE_POINTS: usize = 8;

/// Plain prose, as small local models often answer: the first paragraph becomes the TL;DR,
/// the next ones (one line each) the points. `None` when there are no words in it.
fn read_prose(answer: &str) -> Option<Answer> {
    let paragraphs: Vec<String> = answer
        .split("\n\n")
        .map(|p| {
            p.lines()
                .map(|l| l.trim().trim_start_matches('#').trim())
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .replace("**", "")
        })
        .filter(|p| p.chars().any(char::is_alphanumeric))
        .collect();
    let first = paragraphs.first()?;
    let tldr = if first.chars().count() <= PROSE_TLDR_CHARS {
        first.clone()
    } else {
        let head: String = first.chars().take(PROSE_TLDR_CHARS).collect();
        match head.rfind(". ") {
            Some(end) if end > PROSE_TLDR_CHARS / 3 => head[..=end].to_owned(),
            _ => head,
        }
    };
    let points = paragraphs
        .iter()
        .skip(1)
        .take(PROSE_POINTS)
        .map(|p| KeyPoint {
            at_s: None,
            text: p.clone(),
        })
        .collect();
    Some(Answer {
        tldr,
        points,
        prose: true,
        clamped: 0,
    })
}

/// Openings of a model declining the task, lower case.
const REFUSALS: &[&str] = &[
    "i can't",
    "i cannot",
    "i can not",
    "i'm sorry",
    "i am sorry",
    "sorry,",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i won't",
    "i will not",
    "as an ai",
    "unfortunately, i",
];
/// What a model says when it saw no transcript.
const NON_ANSWERS: &[&str] = &[
    "provide the transcript",
    "provide a transcript",
    "share the transcript",
    "paste the transcript",
    "no transcript was provided",
    "the transcript is missing",
    "the transcript is empty",
];
/// A non-answer is short: a summary that happens to mention these words is not one.
const NON_ANSWER_CHARS: usize = 600;

/// Whether `answer` declines the task, asks for the transcript, or only repeats `prompt`.
pub fn refusal(answer: &str, prompt: &str) -> bool {
    let text = answer
        .trim()
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
        .replace('\u{2019}', "'");
    if text.is_empty() {
        return false;
    }
    if REFUSALS.iter().any(|r| text.starts_with(r)) {
        return true;
    }
    if text.len() <= NON_ANSWER_CHARS && NON_ANSWERS.iter().any(|n| text.contains(n)) {
        return true;
    }
    // An echo: every word of a substantial answer, in order, is a run of the prompt.
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let said = words(&text);
    said.len() >= 12 && words(prompt).join(" ").contains(&said.join(" "))
}

/// The text of a bullet line (`- x`, `* x`, `• x`, `1. x`, `1) x`).
fn bullet(line: &str) -> Option<&str> {
    if let Some(rest) = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("• "))
    {
        return Some(rest.trim());
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let rest = &line[digits..];
        if let Some(r) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some(r.trim());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_shared_shape() {
        let md = render(
            "dQw4w9WgXcQ",
            &Summary {
                title: "A talk".into(),
                tldr: "It is about\nthings.".into(),
                points: vec![
                    KeyPoint {
                        at_s: Some(83),
                        text: "First.".into(),
                    },
                    KeyPoint {
                        at_s: Some(3723),
                        text: "Later.".into(),
                    },
                    KeyPoint {
                        at_s: None,
                        text: "Untimed.".into(),
                    },
                ],
            },
        );
        assert_eq!(
            md,
            "# A talk\n\n**TL;DR:** It is about things.\n\n## Key points\n\n\
             - [01:23](https://youtu.be/dQw4w9WgXcQ?t=83) First.\n\
             - [1:02:03](https://youtu.be/dQw4w9WgXcQ?t=3723) Later.\n\
             - Untimed.\n"
        );
    }

    #[test]
    fn parses_answers_leniently() {
        let answer = "**TL;DR:** The video explains X.\nIt also covers Y.\n\n**KEY POINTS:**\n\
                      - [00:10] Point one\n* (1:02) Point two\n3. [99:00] Past the end\n- no stamp here\n";
        let (tldr, points) = parse_answer(answer, Some(600)).unwrap();
        assert_eq!(tldr, "The video explains X. It also covers Y.");
        assert_eq!(
            points,
            vec![
                KeyPoint {
                    at_s: Some(10),
                    text: "Point one".into()
                },
                KeyPoint {
                    at_s: Some(62),
                    text: "Point two".into()
                },
                KeyPoint {
                    at_s: Some(600),
                    text: "Past the end".into()
                },
                KeyPoint {
                    at_s: None,
                    text: "no stamp here".into()
                },
            ]
        );
        assert_eq!(parse_answer("I cannot help with that.", None), None);
        let a = read_answer("- [99:00] Past the end\n- [00:01] Early", Some(600)).unwrap();
        assert_eq!(a.clamped, 1);
    }

    #[test]
    fn prose_becomes_the_tldr_and_its_paragraphs_the_points() {
        let a = read_answer(
            "The video explains how bees\ndance to share directions.\n\n\
             It then shows a hive at work.\n\n**Finally**, it discusses colony collapse.",
            Some(600),
        )
        .unwrap();
        assert!(a.prose);
        assert_eq!(
            a.tldr,
            "The video explains how bees dance to share directions."
        );
        let points: Vec<&str> = a.points.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            points,
            [
                "It then shows a hive at work.",
                "Finally, it discusses colony collapse."
            ]
        );
        assert!(a.points.iter().all(|p| p.at_s.is_none()));
        assert_eq!(read_answer("  \n\n ... \n", None), None);
    }

    #[test]
    fn refusals_and_non_answers_are_told_from_summaries() {
        let prompt = "Summarize this transcript of the video in the format below, keeping every \
                      point short and plain.\n[00:00] Hello";
        for answer in [
            "I'm sorry, but I can't help with that.",
            "I can\u{2019}t summarize this video.",
            "As an AI language model, I do not watch videos.",
            "Could you please provide the transcript? I don't see one.",
            "**I cannot** do this.",
        ] {
            assert!(refusal(answer, prompt), "{answer}");
        }
        let echo = "Summarize this transcript of the video in the format below, keeping every \
                    point short and plain.";
        assert!(refusal(echo, prompt));
        for answer in [
            "TL;DR: The speaker says they cannot attend, and sends a video instead.",
            "The video explains why you can't divide by zero.",
            "KEY POINTS:\n- [00:10] I'm sorry is the title of the song",
        ] {
            assert!(!refusal(answer, prompt), "{answer}");
        }
    }
}
