//! The API's settings, read from the same layers as the fleet core's (`ABRIDGE_*`).

use std::net::SocketAddr;
use std::time::Duration;

use abridge_core::settings::{SettingsError, SettingsSource};
use ipnet::IpNet;

/// `abridge api`'s settings. Every key is documented in README.md ("Configuration").
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Where `abridge api` listens (`--listen` overrides).
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Most inputs (`urls` plus `items`) in one batch; more are answered 413.
    pub max_items: usize,
    /// The window of finished items an ETA is computed from.
    pub eta_window: Duration,
    /// Progress events of one batch are at least this far apart (coalescing).
    pub events_min_interval: Duration,
    /// A watched batch is re-read this often even without a notice (notices are lossy).
    pub events_refresh: Duration,
    /// Open event streams one tenant may hold on one API process.
    pub max_streams_per_tenant: usize,
    /// How often this process samples the queue depth for the dashboard's chart (replicas
    /// sampling the same bucket write one row).
    pub depth_sample: Duration,
    pub webhooks: WebhookSettings,
    /// How the API reaches YouTube to read a batch's playlists and channels.
    pub youtube: abridge_youtube::YoutubeConfig,
    /// The longest a create request spends reading its playlists and channels, all of them
    /// together; a list not read by then is a rejected input, never a failed request.
    pub list_time_limit: Duration,
    /// Creates of this process that may read playlists and channels at once (one per tenant).
    pub list_reads: usize,
}

/// Webhook delivery and its SSRF guard.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Allow webhook URLs that resolve to loopback, private, link-local or other internal
    /// addresses. Off by default: a tenant must not make abridge call into its own network.
    pub allow_private: bool,
    /// Internal networks allowed anyway (CIDRs such as `10.20.0.0/16`).
    pub allow_cidrs: Vec<IpNet>,
    /// One attempt's time limit (connect plus answer).
    pub timeout: Duration,
    /// The first retry waits this long; each later one doubles it.
    pub retry_base: Duration,
    /// No retry waits longer than this.
    pub retry_max: Duration,
    /// A delivery still failing this long after its first attempt gives up.
    pub give_up: Duration,
    /// How often a dispatcher looks for due deliveries (it is also woken by progress notices).
    pub poll: Duration,
}

impl ApiSettings {
    /// `SettingsError` is the core's error for every setting; read once at start, its size
    /// does not matter.
    #[allow(clippy::result_large_err)]
    pub fn from_source(src: &SettingsSource) -> Result<Self, SettingsError> {
        let listen = src
            .parse::<SocketAddr>("api_listen", "an address and port such as 0.0.0.0:8080")?
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let allow_cidrs = src
            .list("webhook_allow_cidrs")?
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        src.invalid(
                            "webhook_allow_cidrs",
                            "comma-separated networks such as 10.20.0.0/16 or addresses",
                            &format!("{c:?}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let retry_base = src.millis("webhook_retry_base_ms", 1_000, 1)?;
        let retry_max = src.millis("webhook_retry_max_ms", 3_600_000, 1)?;
        if retry_max < retry_base {
            return Err(src.invalid(
                "webhook_retry_max_ms",
                "at least webhook_retry_base_ms",
                &retry_max.as_millis().to_string(),
            ));
        }
        Ok(Self {
            listen,
            max_body_bytes: src.number("api_max_body_bytes", 32 << 20, 1024, 1 << 30)? as usize,
            max_items: src.number("api_max_items", 10_000, 1, 1_000_000)? as usize,
            eta_window: src.millis("api_eta_window_ms", 300_000, 1_000)?,
            events_min_interval: src.millis("api_events_min_interval_ms", 250, 10)?,
            events_refresh: src.millis("api_events_refresh_ms", 5_000, 100)?,
            max_streams_per_tenant: src.number("api_max_streams_per_tenant", 64, 1, 100_000)?
                as usize,
            depth_sample: src.millis("api_depth_sample_ms", 10_000, 100)?,
            youtube: abridge_youtube::YoutubeConfig::from_source(src)?,
            list_time_limit: src.millis("api_list_time_limit_ms", 10_000, 100)?,
            list_reads: src.number("api_list_reads", 8, 1, 1_000)? as usize,
            webhooks: WebhookSettings {
                allow_private: src
                    .parse::<bool>("webhook_allow_private", "true or false")?
                    .unwrap_or(false),
                allow_cidrs,
                timeout: src.millis("webhook_timeout_ms", 10_000, 100)?,
                retry_base,
                retry_max,
                give_up: src.millis("webhook_give_up_ms", 3 * 24 * 3_600_000, 1)?,
                poll: src.millis("webhook_poll_ms", 1_000, 10)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let s = ApiSettings::from_source(&SettingsSource::from_vars([])).unwrap();
        assert_eq!(s.max_items, 10_000);
        assert!(!s.webhooks.allow_private);
        assert_eq!(s.listen.port(), 8080);
        let err = ApiSettings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_WEBHOOK_ALLOW_CIDRS",
            "10.0.0.0/8, nope",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ABRIDGE_WEBHOOK_ALLOW_CIDRS"), "{err}");
        let err = ApiSettings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_WEBHOOK_ALLOW_PRIVATE",
            "maybe",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("true or false"), "{err}");
    }
}
