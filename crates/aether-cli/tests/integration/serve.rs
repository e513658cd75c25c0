//! A dashboard served on a free loopback port, and plain HTTP requests to it: shared by the
//! integration binary and the metrics binary (`tests/metrics.rs`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use aether_cli::events::StreamArgs;
use aether_cli::ui::{serve_with_limits, Dashboard, DashboardConfig, ServeLimits};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub(crate) const NAMESPACE: &str = "ui";
pub(crate) const CLUSTER: &str = "ui";

/// The process's Prometheus recorder (one per test binary).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            aether_cli::ui::prometheus_builder()
                .install_recorder()
                .expect("the only recorder of this test binary")
        })
        .clone()
}

pub(crate) fn config(token: Option<&str>) -> DashboardConfig {
    DashboardConfig {
        cluster: CLUSTER.into(),
        stream: StreamArgs {
            namespace: Some(NAMESPACE.into()),
            ..StreamArgs::default()
        },
        token: token.map(str::to_string),
        metrics: Some(recorder()),
        ..DashboardConfig::default()
    }
}

/// Serves a dashboard on a free loopback port until `stop` is cancelled.
pub(crate) async fn dashboard(
    url: &str,
    config: DashboardConfig,
    stop: &CancellationToken,
) -> SocketAddr {
    dashboard_with_limits(url, config, ServeLimits::default(), stop).await
}

/// Serves a dashboard within `limits` on a free loopback port until `stop` is cancelled.
pub(crate) async fn dashboard_with_limits(
    url: &str,
    config: DashboardConfig,
    limits: ServeLimits,
    stop: &CancellationToken,
) -> SocketAddr {
    let client = async_nats::connect(url).await.unwrap();
    let dashboard = Dashboard::start(client, config, stop.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with_limits(
        listener,
        dashboard.router(),
        limits,
        stop.clone(),
    ));
    addr
}

/// A plain HTTP GET: status, headers (lower-cased) and body.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // HTTP/1.0: the server closes the connection after the answer, which ends the read.
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("an answer within a minute")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}
