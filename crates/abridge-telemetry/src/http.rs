//! The operations endpoints, as an axum [`Router`] that workers, `abridge exporter` and the
//! API's metrics listener (never its tenant-facing port) all mount:
//!
//! - `GET /metrics`: Prometheus text: this process's metrics (the recorder [`install`]ed by
//!   [`crate::metrics::install`]), followed by what a [`ScrapeSource`] computes at scrape time
//!   (the exporter's fleet gauges).
//! - `GET /healthz`: `200 ok` while the process serves requests. A liveness check only: it
//!   does not look at Redis or Postgres, since restarting a worker cannot fix either.
//!
//! [`probe`] is the client side: a plain HTTP GET for container healthchecks (`abridge probe
//! URL`), so the runtime image needs no curl.
//!
//! [`install`]: crate::metrics::install

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The Prometheus text format's content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics computed when scraped, appended to the process's own.
pub trait ScrapeSource: Send + Sync + 'static {
    /// Prometheus text for this scrape. Sources that cannot be read are reported in the text
    /// (for example as a `..._up 0` gauge), not as an error: the rest of the scrape still
    /// counts.
    fn render(&self) -> BoxFuture<'_, String>;
}

#[derive(Clone)]
struct Endpoint {
    extra: Option<Arc<dyn ScrapeSource>>,
}

/// `/metrics` and `/healthz`.
pub fn router(extra: Option<Arc<dyn ScrapeSource>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Endpoint { extra })
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let mut body = crate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    if let Some(extra) = &endpoint.extra {
        if !body.is_empty() && !body.ends_with("\n\n") {
            body.push('\n');
        }
        body.push_str(&extra.render().await);
    }
    ([(CONTENT_TYPE, PROMETHEUS_TEXT)], body)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A response to [`probe`].
#[derive(Clone, Debug)]
pub struct ProbeResponse {
    pub status: u16,
    pub body: String,
}

/// `GET url` (plain `http://host:port/path`), with everything — connecting, sending,
/// reading — within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> std::io::Result<ProbeResponse> {
    tokio::time::timeout(timeout, probe_inner(url))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("get {url}: no answer within {} ms", timeout.as_millis()),
            )
        })?
}

async fn probe_inner(url: &str) -> std::io::Result<ProbeResponse> {
    let invalid = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("get {url}: {why}"),
        )
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("get {url}: connect: {e}")))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: abridge-probe\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("malformed response (no end of headers)"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("malformed status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(ProbeResponse { status, body })
}

/// Decodes a chunked body (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl ScrapeSource for Fixed {
        fn render(&self) -> BoxFuture<'_, String> {
            Box::pin(async { "# TYPE x gauge\nx 1\n".to_owned() })
        }
    }

    #[tokio::test]
    async fn serves_metrics_with_the_scrape_source_and_health() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router(Some(Arc::new(Fixed))), async {
            let _ = stopped.await;
        }));
        let t = Duration::from_secs(5);
        let health = probe(&format!("http://{addr}/healthz"), t).await.unwrap();
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        let metrics = probe(&format!("http://{addr}/metrics"), t).await.unwrap();
        assert_eq!(metrics.status, 200);
        assert!(metrics.body.ends_with("x 1\n"), "{}", metrics.body);
        let missing = probe(&format!("http://{addr}/nope"), t).await.unwrap();
        assert_eq!(missing.status, 404);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn probe_reports_a_closed_port_and_a_bad_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let t = Duration::from_secs(2);
        let e = probe(&format!("http://{addr}/healthz"), t)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("connect"), "{e}");
        let e = probe("https://example.invalid/", t).await.unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
