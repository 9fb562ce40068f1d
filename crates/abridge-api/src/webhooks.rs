//! Webhooks: the SSRF guard, the signature, and the dispatcher.
//!
//! - A `webhook_url` is checked when the batch is created: http(s), no credentials, and every
//!   address its host resolves to must be public (not loopback, private, link-local, shared,
//!   multicast, documentation or cloud metadata), unless allowed in configuration.
//! - Deliveries are made by a dispatcher task in every `abridge api` process. The request
//!   resolves the host again through [`GuardedResolver`] (so a DNS answer that changed since
//!   creation cannot reach inside), follows no redirects and uses no proxy.
//! - The body is signed with the tenant's secret: header
//!   `Abridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
//! - Anything but a 2xx is retried with exponential backoff (with jitter), until a 2xx;
//!   each attempt is recorded on the delivery row (attempts, last status, last error).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use abridge_store::webhooks::ClaimedWebhook;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::{Host, Url};

use crate::ApiState;
use crate::error::ApiError;
use crate::settings::WebhookSettings;
use crate::views::BatchStatusView;

/// Longest webhook URL accepted.
const MAX_URL_LEN: usize = 2048;
/// Deliveries claimed per dispatcher round.
const CLAIM_BATCH: i64 = 16;
/// Attempts one API process has under way at once.
const MAX_IN_FLIGHT: usize = 64;
/// Shortest pause between two dispatcher rounds that found little to do.
const MIN_ROUND_GAP: Duration = Duration::from_millis(100);

/// True for addresses a tenant must not make abridge call: this host, private networks,
/// link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254), shared/CGNAT, multicast,
/// broadcast, documentation and reserved ranges, and IPv6 forms of any of these.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4 address
                || (s[0..6] == [0, 0, 0, 0, 0, 0])
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0]
                    && is_internal_v4(Ipv4Addr::new(
                        (s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)))
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn allowed(ip: IpAddr, settings: &WebhookSettings) -> bool {
    settings.allow_private
        || !is_internal(ip)
        || settings.allow_cidrs.iter().any(|net| net.contains(&ip))
}

fn refused(message: String) -> ApiError {
    ApiError::Unprocessable {
        code: "webhook_url_refused",
        message,
        details: None,
    }
}

/// Checks a webhook URL when a batch is created; returns it parsed.
pub async fn check_url(raw: &str, settings: &WebhookSettings) -> Result<Url, ApiError> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(format!(
            "webhook_url: longer than {MAX_URL_LEN} characters"
        )));
    }
    let url = Url::parse(raw.trim())
        .map_err(|e| ApiError::invalid(format!("webhook_url: not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(format!(
            "webhook_url: scheme {:?} is not supported: use https (or http)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "webhook_url: must not contain credentials; webhooks are authenticated by their signature",
        ));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match url.host() {
        None => return Err(ApiError::invalid("webhook_url: has no host")),
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(domain)) => {
            let lookup = tokio::net::lookup_host((domain, port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    return Err(refused(format!(
                        "webhook_url: host {domain} does not resolve: {e}"
                    )));
                }
                Err(_) => {
                    return Err(refused(format!(
                        "webhook_url: resolving host {domain} timed out"
                    )));
                }
            }
        }
    };
    if addrs.is_empty() {
        return Err(refused("webhook_url: host resolves to no address".into()));
    }
    if let Some(bad) = addrs.iter().find(|ip| !allowed(**ip, settings)) {
        return Err(refused(format!(
            "webhook_url: {} resolves to {bad}, an internal address (loopback, private, link-local or metadata); \
             set ABRIDGE_WEBHOOK_ALLOW_PRIVATE=true or list the network in ABRIDGE_WEBHOOK_ALLOW_CIDRS to allow it",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(url)
}

/// Resolves webhook hosts and drops internal addresses, so that a delivery connects only to
/// addresses the guard allows, whatever DNS answers at delivery time.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    settings: Arc<WebhookSettings>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let settings = self.settings.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allowed(a.ip(), &settings))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no allowed (public) address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for deliveries: guarded DNS, no redirects, no proxy, a time limit.
pub fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            settings: Arc::new(settings.clone()),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("abridge-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The `Abridge-Signature` header value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Checks an `Abridge-Signature` header against `body`, for receivers written in Rust (and
/// the tests): the signature must match and be at most `tolerance` old.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> bool {
    let mut timestamp = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => v1 = hex::decode(s).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(given)) = (timestamp, v1) else {
        return false;
    };
    if (now - t).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The backoff before attempt `attempt + 1`: base × 2^(attempt−1), capped, 50–100 % jitter.
fn backoff(attempt: i32, settings: &WebhookSettings) -> Duration {
    abridge_core::backoff::exponential(
        u32::try_from(attempt).unwrap_or(1),
        settings.retry_base,
        settings.retry_max,
        abridge_core::backoff::jitter(),
    )
}

/// Delivers due webhooks until `stop`: a round whenever woken (progress notices) or every
/// `poll`, claiming a few deliveries at a time.
pub async fn dispatch(state: ApiState, stop: CancellationToken) {
    let client = match client(&state.settings.webhooks) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build the webhook client; webhooks will not be delivered by this process");
            return;
        }
    };
    let settings = &state.settings.webhooks;
    // A claimed delivery is not due again for this long: longer than any attempt can take.
    let hold = settings.timeout * 2 + Duration::from_secs(5);
    // Attempts run on their own, never waited for as a round: a slow endpoint holds only its
    // own attempt (and the claim takes one delivery per tenant at a time).
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut attempts = tokio::task::JoinSet::new();
    loop {
        while attempts.try_join_next().is_some() {}
        let room = slots.available_permits().min(CLAIM_BATCH as usize) as i64;
        let claimed = if room == 0 {
            Vec::new()
        } else {
            match state.store.claim_due_webhooks(room, hold).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "cannot claim due webhooks; trying again");
                    Vec::new()
                }
            }
        };
        let full = room > 0 && claimed.len() as i64 == room;
        for w in claimed {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let (state, client) = (state.clone(), client.clone());
            attempts.spawn(async move {
                deliver(&state, &client, w).await;
                drop(permit);
            });
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => {
                // Attempts under way are recorded (or their hold expires and another tries).
                let _ = tokio::time::timeout(hold, async {
                    while attempts.join_next().await.is_some() {}
                })
                .await;
                return;
            }
            _ = state.hub.dispatcher_wakeup.notified() => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
        // Notices can come by the dozen a second under load: at most ten rounds a second.
        tokio::time::sleep(MIN_ROUND_GAP.min(settings.poll)).await;
    }
}

/// One attempt of one delivery, recorded whatever happens.
async fn deliver(state: &ApiState, client: &reqwest::Client, w: ClaimedWebhook) {
    let settings = &state.settings.webhooks;
    let result = attempt(state, client, &w).await;
    let recorded = match result {
        Ok(status) => {
            info!(batch = %w.batch_id, attempt = w.attempt, status, "webhook delivered");
            state.store.webhook_delivered(&w, status).await.map(|_| ())
        }
        Err((status, error)) => {
            let retry_in = backoff(w.attempt, settings);
            let failing_for = (chrono::Utc::now() - w.first_attempt_at)
                .to_std()
                .unwrap_or_default();
            if failing_for + retry_in >= settings.give_up {
                warn!(batch = %w.batch_id, attempt = w.attempt, error = %error, "webhook attempt failed; giving up (ABRIDGE_WEBHOOK_GIVE_UP_MS)");
                state.store.webhook_gave_up(&w, status, &error).await
            } else {
                warn!(batch = %w.batch_id, attempt = w.attempt, error = %error, retry_in_ms = retry_in.as_millis() as u64, "webhook attempt failed; will retry");
                state
                    .store
                    .webhook_failed(&w, status, &error, retry_in)
                    .await
            }
        }
    };
    if let Err(e) = recorded {
        // The claim's hold expires and another round tries again: at least once, not lost.
        warn!(batch = %w.batch_id, error = %e, "cannot record webhook attempt");
    }
}

/// Sends one attempt; `Ok(status)` for a 2xx, else the status (if any) and what went wrong.
async fn attempt(
    state: &ApiState,
    client: &reqwest::Client,
    w: &ClaimedWebhook,
) -> Result<u16, (Option<u16>, String)> {
    let fail = |e: String| (None, e);
    let batch = state
        .store
        .batch(w.batch_id)
        .await
        .map_err(|e| fail(format!("read batch: {e}")))?
        .ok_or_else(|| fail("batch no longer exists".into()))?;
    let secret = state
        .store
        .webhook_secret_for(w.batch_id)
        .await
        .map_err(|e| fail(format!("read webhook secret: {e}")))?
        .ok_or_else(|| fail("batch has no tenant secret".into()))?;
    let event_type = format!("batch.{}", batch.status);
    let body = serde_json::to_vec(&serde_json::json!({
        "id": w.event_id,
        "type": event_type,
        "created_at": crate::views::rfc3339(&chrono::Utc::now()),
        "data": BatchStatusView::new(&batch, None),
    }))
    .map_err(|e| fail(format!("encode payload: {e}")))?;
    let url = Url::parse(&w.url).map_err(|e| fail(format!("bad url: {e}")))?;
    // Literal addresses skip DNS, so the guard checks them here.
    let literal = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !allowed(ip, &state.settings.webhooks)
    {
        return Err(fail(format!("refused: {ip} is an internal address")));
    }
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Abridge-Signature", signature(&secret, timestamp, &body))
        .header("Abridge-Event", &event_type)
        .header("Abridge-Delivery", w.event_id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| fail(format!("send: {}", error_chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err((Some(status.as_u16()), format!("receiver answered {status}")))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn signatures_verify_and_expire() {
        let sig = signature("whsec_x", 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("t=1700000000,v1="));
        let tol = Duration::from_secs(300);
        assert!(verify_signature(
            "whsec_x",
            &sig,
            b"{\"a\":1}",
            1_700_000_010,
            tol
        ));
        assert!(!verify_signature(
            "whsec_y",
            &sig,
            b"{\"a\":1}",
            1_700_000_010,
            tol
        ));
        assert!(!verify_signature(
            "whsec_x",
            &sig,
            b"{\"a\":2}",
            1_700_000_010,
            tol
        ));
        assert!(!verify_signature(
            "whsec_x",
            &sig,
            b"{\"a\":1}",
            1_700_001_000,
            tol
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = WebhookSettings {
            allow_private: false,
            allow_cidrs: Vec::new(),
            timeout: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            give_up: Duration::from_secs(3600),
            poll: Duration::from_secs(1),
        };
        let d1 = backoff(1, &s);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        let d3 = backoff(3, &s);
        assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4));
        assert!(backoff(40, &s) <= Duration::from_secs(10));
    }
}
