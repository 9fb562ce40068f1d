//! Transcript formats: the classic timed-text XML (`<transcript><text start="1.2" dur="3.4">`),
//! the `srv3` XML (`<timedtext><body><p t="1200" d="3400">`), and `json3`
//! (`{"events": [{"tStartMs", "dDurationMs", "segs": [{"utf8"}]}]}`). Text is XML-decoded, then
//! HTML-decoded (captions are often escaped twice: `&amp;#39;`), stripped of markup such as
//! `<font>` and `<b>`, and its whitespace collapsed.

use serde::{Deserialize, Serialize};

/// A caption line and when it is spoken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Milliseconds from the start of the video: summaries link key points to it.
    pub start_ms: u64,
    pub dur_ms: u64,
    pub text: String,
}

/// Parses any supported format; an error says what was wrong.
pub fn parse(body: &str) -> Result<Vec<Segment>, String> {
    let body = body.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with('{') {
        parse_json3(body)
    } else if body.starts_with('<') {
        Ok(parse_xml(body))
    } else {
        Err("neither timed-text XML nor json3".into())
    }
}

fn parse_json3(body: &str) -> Result<Vec<Segment>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("json3 is not JSON: {e}"))?;
    let events = v["events"]
        .as_array()
        .ok_or_else(|| "json3 without an events array".to_owned())?;
    Ok(events
        .iter()
        .filter_map(|event| {
            let segs = event["segs"].as_array()?;
            let text: String = segs.iter().filter_map(|s| s["utf8"].as_str()).collect();
            // Plain text as a rule, but entities and markup turn up; decode them as for XML.
            let text = clean(&unescape_html(&strip_tags(&unescape_html(&text))));
            (!text.is_empty()).then(|| Segment {
                start_ms: event["tStartMs"].as_u64().unwrap_or(0),
                dur_ms: event["dDurationMs"].as_u64().unwrap_or(0),
                text,
            })
        })
        .collect())
}

/// Both XML formats: `<text start= dur=>` (seconds) and `<p t= d=>` (milliseconds).
fn parse_xml(body: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = body;
    while let Some(open) = next_element(rest) {
        let (tag, seconds) = open.1;
        let after_name = &rest[open.0 + 1 + tag.len()..];
        let Some(tag_end) = after_name.find('>') else {
            break;
        };
        let attrs = &after_name[..tag_end];
        let self_closing = attrs.ends_with('/');
        let content_start = &after_name[tag_end + 1..];
        let close = format!("</{tag}>");
        let (inner, next) = if self_closing {
            ("", content_start)
        } else {
            match content_start.find(&close) {
                Some(end) => (&content_start[..end], &content_start[end + close.len()..]),
                None => (content_start, ""),
            }
        };
        rest = next;
        let time = |name: &str| attribute(attrs, name).and_then(|v| v.trim().parse::<f64>().ok());
        let (start, dur) = if seconds {
            (time("start"), time("dur"))
        } else {
            (
                time("t").map(|ms| ms / 1000.0),
                time("d").map(|ms| ms / 1000.0),
            )
        };
        let text = clean(&unescape_html(&strip_tags(&unescape_html(inner))));
        if text.is_empty() {
            continue;
        }
        segments.push(Segment {
            start_ms: secs_to_ms(start.unwrap_or(0.0)),
            dur_ms: secs_to_ms(dur.unwrap_or(0.0)),
            text,
        });
    }
    segments
}

/// The next `<text` or `<p` element start: (offset, (name, times in seconds)).
fn next_element(s: &str) -> Option<(usize, (&'static str, bool))> {
    let mut from = 0;
    while let Some(i) = s[from..].find('<') {
        let at = from + i;
        let tail = &s[at + 1..];
        for (name, seconds) in [("text", true), ("p", false)] {
            if tail.starts_with(name)
                && tail[name.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_whitespace() || c == '>' || c == '/')
            {
                return Some((at, (name, seconds)));
            }
        }
        from = at + 1;
    }
    None
}

fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut search = attrs;
    loop {
        let at = search.find(name)?;
        let before_ok = at == 0 || search.as_bytes()[at - 1].is_ascii_whitespace();
        let after = search[at + name.len()..].trim_start();
        if before_ok && let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '"' || quote == '\'' {
                let end = value[1..].find(quote)?;
                return Some(&value[1..1 + end]);
            }
        }
        search = &search[at + name.len()..];
    }
}

fn secs_to_ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

/// Drops markup (`<font color="#fff">`, `</b>`); a `<` that starts no tag (`<3`) stays.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut in_tag = false;
    while let Some(c) = chars.next() {
        match c {
            '<' if !in_tag
                && chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == '/') =>
            {
                in_tag = true
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn clean(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes XML/HTML character references: numeric (`&#39;`, `&#x27;`) and the named entities
/// captions use. Unknown names are left as they are.
pub fn unescape_html(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let decoded = tail[1..].find(';').filter(|&n| n <= 10).and_then(|n| {
            let name = &tail[1..1 + n];
            decode_entity(name).map(|c| (c, n + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "eacute" => 'é',
        "egrave" => 'è',
        "aacute" => 'á',
        "agrave" => 'à',
        "ouml" => 'ö',
        "auml" => 'ä',
        "uuml" => 'ü',
        "szlig" => 'ß',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        "copy" => '©',
        "reg" => '®',
        "deg" => '°',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_xml_with_double_escaped_entities_and_markup() {
        let body = r#"<?xml version="1.0" encoding="utf-8" ?><transcript>
            <text start="0.5" dur="2.25">Hey there, it&amp;#39;s   &lt;b&gt;Rust&lt;/b&gt;</text>
            <text start="2.75" dur="0.25">I &amp;lt;3 it</text>
            <text start="3" dur="1">Tom &amp;amp; Jerry&amp;nbsp;&quot;quoted&quot;</text>
            <text start="4" dur="1"></text>
            <text start="5.0" dur="1.5"/>
            <text start="61.234" dur="2">[Music]
            next line</text></transcript>"#;
        let segs = parse(body).unwrap();
        assert_eq!(
            segs,
            vec![
                Segment {
                    start_ms: 500,
                    dur_ms: 2250,
                    text: "Hey there, it's Rust".into()
                },
                Segment {
                    start_ms: 2750,
                    dur_ms: 250,
                    text: "I <3 it".into()
                },
                Segment {
                    start_ms: 3000,
                    dur_ms: 1000,
                    text: "Tom & Jerry \"quoted\"".into()
                },
                Segment {
                    start_ms: 61234,
                    dur_ms: 2000,
                    text: "[Music] next line".into()
                },
            ]
        );
    }

    #[test]
    fn srv3_and_json3() {
        let srv3 = r#"<timedtext format="3"><body><p t="1200" d="800"><s>hello</s><s t="300"> world</s></p><p t="2000" d="10">x</p></body></timedtext>"#;
        let segs = parse(srv3).unwrap();
        assert_eq!(
            segs[0],
            Segment {
                start_ms: 1200,
                dur_ms: 800,
                text: "hello world".into()
            }
        );
        assert_eq!(segs.len(), 2);

        let json3 = r#"{"wireMagic":"pb3","events":[{"tStartMs":0,"dDurationMs":5000},
            {"tStartMs":1500,"dDurationMs":2000,"segs":[{"utf8":"caf\u00e9"},{"utf8":" time"}]},
            {"tStartMs":4000,"segs":[{"utf8":"\n"}]}]}"#;
        assert_eq!(
            parse(json3).unwrap(),
            vec![Segment {
                start_ms: 1500,
                dur_ms: 2000,
                text: "café time".into()
            }]
        );
        assert!(parse("garbage").is_err());
    }

    #[test]
    fn unescapes_named_and_numeric_references() {
        assert_eq!(
            unescape_html("a &amp; b &#39;c&#x27; &unknown; & d"),
            "a & b 'c' &unknown; & d"
        );
    }
}
