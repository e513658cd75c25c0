//! `aether ui`: a read-only web dashboard of a running Aether deployment, served from this
//! binary (every asset embedded: no CDN, no network but NATS).
//!
//! Pages: the cluster (members with status and last heartbeat, the leader, the shard map
//! coloured by owner), the event stream (size, settings, event rate over the last minutes),
//! a live tail (server-sent events, with namespace, type and actor filters, saying when it
//! lagged), an actor's history, and the projections with position and lag. `/metrics` serves
//! the process's metrics in the Prometheus text format.
//!
//! # Layout
//! - [`UiArgs`], [`run`]: the command.
//! - [`Dashboard`]: the state and the [`axum::Router`]; embed it in an application with
//!   [`Dashboard::router`].
//! - `api`: the JSON and server-sent-event handlers; `sampler`: what is watched in the
//!   background (heartbeats, the stream's size over time).
//! - `assets/`: the page (HTML, CSS, JavaScript), compiled in.

use std::net::SocketAddr;
use std::sync::Arc;

use aether_bus::{NatsBusConfig, NatsEventBus, DEFAULT_SUBJECT_PREFIX};
use aether_cluster::DEFAULT_CLUSTER_NAME;
use aether_projection::DEFAULT_PROJECTION_BUCKET;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::StreamArgs;

mod api;
mod sampler;

/// Where the dashboard listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8484";

/// The cookie that carries the access token once a page was opened with `?token=`.
const TOKEN_COOKIE: &str = "aether_ui_token";

/// Arguments of `aether ui`.
#[derive(Debug, Clone, Args)]
pub struct UiArgs {
    /// Address to serve on (loopback by default; `0.0.0.0:8484` serves every interface).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Access token: every request must carry it (`?token=` once, then a cookie; or an
    /// `Authorization: Bearer` header). Without one, anyone who reaches the address can look.
    #[arg(long = "ui-token", env = "AETHER_UI_TOKEN", hide_env_values = true)]
    pub ui_token: Option<String>,
    /// The cluster to show.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster: String,
    /// The key-value bucket holding the projections' state.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROJECTION_BUCKET)]
    pub bucket: String,
    /// Subject prefix of the bus (for the live tail).
    #[arg(long, value_name = "P", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub prefix: String,
    /// The event stream to show.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What a dashboard shows, and who may look.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The cluster's name.
    pub cluster: String,
    /// The event stream.
    pub stream: StreamArgs,
    /// The projections' bucket.
    pub bucket: String,
    /// The bus's subject prefix.
    pub prefix: String,
    /// The access token, if one is required.
    pub token: Option<String>,
    /// The metrics to serve on `/metrics` (the handle of the Prometheus recorder the process
    /// installed); `None` serves only a note that none is installed.
    pub metrics: Option<PrometheusHandle>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER_NAME.into(),
            stream: StreamArgs {
                namespace: None,
                stream: aether_store::DEFAULT_STREAM_NAME.into(),
            },
            bucket: DEFAULT_PROJECTION_BUCKET.into(),
            prefix: DEFAULT_SUBJECT_PREFIX.into(),
            token: None,
            metrics: None,
        }
    }
}

/// The dashboard: its connection, what it watches in the background, and its routes.
#[derive(Clone)]
pub struct Dashboard {
    state: Arc<api::Shared>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("cluster", &self.state.config.cluster)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard over `client`; it watches the cluster's heartbeats and samples the stream
    /// until `shutdown` is cancelled.
    ///
    /// # Errors
    /// A bad cluster name, prefix or namespace; the bus failing to start.
    pub async fn start(
        client: async_nats::Client,
        config: DashboardConfig,
        shutdown: CancellationToken,
    ) -> CliResult<Self> {
        aether_cluster::validate_name("cluster name", &config.cluster)?;
        let bus = NatsEventBus::new(
            client.clone(),
            NatsBusConfig::default().subject_prefix(config.prefix.clone()),
        )
        .await?;
        let state = Arc::new(api::Shared::new(client, config, bus));
        sampler::spawn(state.clone(), shutdown);
        Ok(Self { state })
    }

    /// The routes: the page and its assets, `/api/...`, `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(asset_index))
            .route("/app.js", get(asset_js))
            .route("/style.css", get(asset_css))
            .route("/api/cluster", get(api::cluster))
            .route("/api/stream", get(api::stream))
            .route("/api/actors/{id}", get(api::actor))
            .route("/api/tail", get(api::tail))
            .route("/api/projections", get(api::projections))
            .route("/metrics", get(api::metrics))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                authorize,
            ))
            .with_state(self.state.clone())
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// The server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Latency buckets of the histograms, in seconds: from 100 µs (an in-memory save) to 10 s (a
/// send waiting out a failover).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A Prometheus recorder builder with [`LATENCY_BUCKETS`] for every histogram: install it
/// (`.install_recorder()`) and hand its handle to [`DashboardConfig::metrics`].
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new())
}

/// Runs `aether ui` until Ctrl-C.
///
/// # Errors
/// Connection failures, an address in use, bad options.
pub async fn run(args: UiArgs) -> CliResult<()> {
    let metrics = prometheus_builder()
        .install_recorder()
        .map_err(|e| CliError::new(format!("installing the metrics recorder: {e}")))?;
    let client = args.connect.connect().await?;
    let shutdown = CancellationToken::new();
    let dashboard = Dashboard::start(
        client,
        DashboardConfig {
            cluster: args.cluster,
            stream: args.stream,
            bucket: args.bucket,
            prefix: args.prefix,
            token: args.ui_token.filter(|t| !t.is_empty()),
            metrics: Some(metrics),
        },
        shutdown.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::context(format!("listening on {}", args.listen), &e))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::context("reading the listening address", &e))?;
    println!("dashboard on http://{address}/ (Ctrl-C to stop)");
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.cancel();
            }
        });
    }
    serve(listener, dashboard.router(), shutdown)
        .await
        .map_err(|e| CliError::context("serving the dashboard", &e))
}

/// Lets a request through when no token is required, or when it carries the token (query,
/// cookie or bearer header); a `?token=` that matches sets the cookie for the page's own
/// requests.
async fn authorize(
    State(state): State<Arc<api::Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let from_query = request
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| v.to_string())
        })
        .filter(|v| same(v, token));
    let ok = from_query.is_some() || carries(request.headers(), token);
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "401: this dashboard needs its access token: open it with ?token=<token>\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    if from_query.is_some() {
        let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// Whether the headers carry `token` as a bearer token or in the cookie.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| same(v, token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == TOKEN_COOKIE && same(v, token));
    bearer || cookie
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Headers every page and asset carries: scripts and styles from this origin only.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn asset_index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn asset_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn asset_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404: no such page\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn the_token_is_found_in_a_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(!carries(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(carries(&h, "s3cret"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; aether_ui_token=s3cret"),
        );
        assert!(carries(&h, "s3cret"));
        assert!(!carries(&h, "other"));
    }
}
