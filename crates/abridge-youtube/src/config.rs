//! [`YoutubeConfig`] from the `ABRIDGE_YOUTUBE_*` settings, for processes that reach YouTube
//! without the summarizer (the API and `abridge enqueue`, which read lists at enqueue).

// `SettingsError` is the core's error type, built once at start-up: its size does not matter.
#![allow(clippy::result_large_err)]

use abridge_core::settings::{SettingsError, SettingsSource};

use crate::YoutubeConfig;

impl YoutubeConfig {
    /// `youtube_base_url`, `youtube_proxy` or `youtube_proxies`, and `youtube_timeout_ms`
    /// (a bad value is an error naming its key; a proxy URL is never printed).
    pub fn from_source(src: &SettingsSource) -> Result<Self, SettingsError> {
        let base_url = src
            .text("youtube_base_url")?
            .unwrap_or_else(|| "https://www.youtube.com".into());
        let base_url = url::Url::parse(&base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                src.invalid(
                    "youtube_base_url",
                    "an http(s) URL",
                    &format!("{base_url:?}"),
                )
            })?;
        let proxy = src.secret("youtube_proxy")?;
        if let Some(p) = &proxy
            && reqwest::Proxy::all(p.expose()).is_err()
        {
            return Err(src.invalid(
                "youtube_proxy",
                "a proxy URL such as http://host:3128",
                "(hidden)",
            ));
        }
        let proxies: Vec<String> = src
            .secret("youtube_proxies")?
            .map(|list| {
                list.expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if proxies
            .iter()
            .any(|p| reqwest::Proxy::all(p.as_str()).is_err())
        {
            return Err(src.invalid(
                "youtube_proxies",
                "proxy URLs such as http://host:3128, comma-separated",
                "(hidden)",
            ));
        }
        if proxy.is_some() && !proxies.is_empty() {
            return Err(src.invalid(
                "youtube_proxies",
                "either ABRIDGE_YOUTUBE_PROXY (one proxy) or ABRIDGE_YOUTUBE_PROXIES (a pool), not both",
                "(hidden)",
            ));
        }
        Ok(Self {
            base_url,
            proxy: proxy.map(|p| p.expose().to_owned()),
            proxies,
            timeout: src.millis("youtube_timeout_ms", 20_000, 100)?,
        })
    }
}
