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
    let mut tldr: Vec<String> = Vec::new();
    let mut points = Vec::new();
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
                Some((at, rest)) => (Some(duration_s.map_or(at, |d| at.min(d))), rest),
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
    if tldr.is_empty() && points.is_empty() {
        return None;
    }
    Some((tldr, points))
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
    }
}
