//! Reading the watch page: the consent interstitial, the captcha, the innertube API key and the
//! title. Plain string scanning: the page is megabytes of HTML and script, and these markers
//! are stable and few.

use crate::timedtext::unescape_html;

/// What a watch page turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageRead {
    Page(WatchPage),
    /// The EU cookie-consent form: answer it with the cookie `CONSENT=YES+{value}`.
    Consent {
        value: String,
    },
    /// The "unusual traffic" captcha: this address is blocked for now.
    Recaptcha,
    /// Neither a page we understand nor a known interstitial.
    Unreadable(String),
}

/// What we need from a normal watch page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchPage {
    pub api_key: String,
    pub title: Option<String>,
}

pub fn read_watch_page(html: &str) -> PageRead {
    if html.contains("action=\"https://consent.youtube.com/s\"") {
        return match attribute_after(html, "name=\"v\"", "value") {
            Some(value) if !value.is_empty() => PageRead::Consent { value },
            _ => PageRead::Unreadable("consent page without its \"v\" field".into()),
        };
    }
    let api_key = json_string_after(html, "\"INNERTUBE_API_KEY\"");
    if html.contains("class=\"g-recaptcha\"") && api_key.is_none() {
        return PageRead::Recaptcha;
    }
    match api_key {
        Some(api_key) if !api_key.is_empty() => PageRead::Page(WatchPage {
            api_key,
            title: page_title(html),
        }),
        _ => PageRead::Unreadable("no INNERTUBE_API_KEY on the watch page".into()),
    }
}

/// `<meta name="title" content="...">`, else `<title>... - YouTube</title>`.
fn page_title(html: &str) -> Option<String> {
    let title = attribute_after(html, "<meta name=\"title\"", "content").or_else(|| {
        let start = html.find("<title>")? + "<title>".len();
        let end = start + html[start..].find("</title>")?;
        Some(html[start..end].to_owned())
    })?;
    let title = unescape_html(title.trim());
    let title = title.strip_suffix(" - YouTube").unwrap_or(&title).trim();
    (!title.is_empty() && title != "YouTube").then(|| title.to_owned())
}

/// The value of `attr="..."` in the tag that contains `marker`.
fn attribute_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let tag_start = html[..at].rfind('<').unwrap_or(at);
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let key = format!("{attr}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_owned())
}

/// The JSON string value after `"key"` (`"key": "value"`), undecoded escapes aside.
fn json_string_after(html: &str, key: &str) -> Option<String> {
    let at = html.find(key)? + key.len();
    let rest = html[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_key_and_title() {
        let html = r#"<html><head><title>Ignored - YouTube</title>
            <meta name="title" content="Rust &amp; You: a &quot;talk&quot;"></head>
            <script>ytcfg.set({"INNERTUBE_API_KEY": "AIzaSyA-key_1","X":1});</script>"#;
        assert_eq!(
            read_watch_page(html),
            PageRead::Page(WatchPage {
                api_key: "AIzaSyA-key_1".into(),
                title: Some("Rust & You: a \"talk\"".into()),
            })
        );
    }

    #[test]
    fn falls_back_to_the_title_element() {
        let html = r#"<title>Plain title - YouTube</title>"INNERTUBE_API_KEY":"k""#;
        match read_watch_page(html) {
            PageRead::Page(p) => assert_eq!(p.title.as_deref(), Some("Plain title")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recognises_interstitials() {
        let consent = r#"<form action="https://consent.youtube.com/s" method="POST">
            <input type="hidden" name="v" value="cb.20210328-17-p0.en+FX+123"></form>"#;
        assert_eq!(
            read_watch_page(consent),
            PageRead::Consent {
                value: "cb.20210328-17-p0.en+FX+123".into()
            }
        );
        let captcha = r#"<div class="g-recaptcha" data-sitekey="x"></div>"#;
        assert_eq!(read_watch_page(captcha), PageRead::Recaptcha);
        assert!(matches!(
            read_watch_page("<html>nothing</html>"),
            PageRead::Unreadable(_)
        ));
    }
}
