//! `aether ui`: a read-only web dashboard of a running Aether deployment, served from this
//! binary (every asset embedded: no CDN, no network but NATS).
//!
//! Pages: the cluster (members with status and last heartbeat, the leader, the shard map
//! coloured by owner), the event stream (size, settings, event rate over the last minutes),
//! a live tail (server-sent events, with namespace, type and actor filters, saying when it
//! lagged), an actor's history (in pages), the projections with position and lag, and the
//! timers (pending, fired awaiting delivery, the next due, the reactor's backlog).
//! A partitioned store is read across its partitions: the stream page gives the totals and
//! each partition's stream, the actor page reads the actor's partition, the store tail
//! follows every partition, and each projection checkpoint lags behind its own log
//! partition's head.
//! `/metrics` serves the process's metrics in the Prometheus text format.
//!
//! It is built to face careless and hostile clients: it listens on loopback unless told
//! otherwise and refuses another address without an access token (unless
//! `--insecure-no-token`), checks `Host` when it has no token, keeps a session cookie derived
//! from the token rather than the token, bounds every answer's cost, and limits connections,
//! live tails and the time a client may hold a connection without using it.
//!
//! # Layout
//! - [`UiArgs`], [`AccessArgs`], [`run`]: the command and its access options (shared with
//!   `aether demo --ui`).
//! - [`Dashboard`]: the state and the [`axum::Router`]; embed it in an application with
//!   [`Dashboard::router`]; [`serve`] and [`serve_with_limits`] serve it within
//!   [`ServeLimits`].
//! - `access`: the token, the session cookie and the `Host` check; `api`: the JSON and
//!   server-sent-event handlers; `projections` and `timers`: those pages' data; `sampler`: what is watched in the background (the cluster,
//!   through an [`aether_cluster::ClusterObserver`]; the stream's size over time); `server`:
//!   the HTTP server and its limits.
//! - `assets/`: the page (HTML, CSS, JavaScript), compiled in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus, DEFAULT_SUBJECT_PREFIX};
use aether_cluster::DEFAULT_CLUSTER_NAME;
use aether_projection::DEFAULT_PROJECTION_BUCKET;
use aether_reactions::TimersConfig;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::{CliError, CliResult};
use crate::events::StreamArgs;

mod access;
mod api;
mod projections;
mod sampler;
mod server;
mod timers;

pub use access::{validate_token, MAX_TOKEN_LEN, MIN_TOKEN_LEN};
pub use api::{DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE};
pub use server::{serve, serve_with_limits, ServeLimits};
pub use timers::{DEFAULT_TIMERS_PAGE, MAX_TIMERS_PAGE};

/// Where the dashboard listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8484";

/// Live tails open at once unless [`DashboardConfig::max_tails`] says otherwise.
pub const DEFAULT_MAX_TAILS: usize = 16;
/// Events a live tail holds for a page that does not keep up, unless
/// [`DashboardConfig::tail_buffer`] says otherwise.
pub const DEFAULT_TAIL_BUFFER: usize = 256;
/// Nodes the cluster page remembers, unless [`DashboardConfig::max_heard_nodes`] says
/// otherwise.
pub const DEFAULT_MAX_HEARD_NODES: usize = 1024;
/// How long a node that stopped sending heartbeats stays on the cluster page (unless it is in
/// the shard table), unless [`DashboardConfig::forget_silent_after`] says otherwise: sixty of
/// the cluster's default heartbeat intervals.
pub const DEFAULT_FORGET_SILENT_AFTER: Duration = Duration::from_secs(60);

/// Who may reach the dashboard: the options `aether ui` and `aether demo --ui` share.
#[derive(Debug, Clone, Default, Args)]
pub struct AccessArgs {
    /// Access token: every request must carry it (`?token=` once, percent-encoded, then a
    /// session cookie; or an `Authorization: Bearer` header). 16 to 256 visible ASCII
    /// characters. Required to listen on anything but loopback.
    #[arg(
        long = "ui-token",
        env = "AETHER_UI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub ui_token: Option<String>,
    /// Serve a non-loopback address without an access token: anyone who reaches the address
    /// reads the cluster, every actor's history and the live events.
    #[arg(long)]
    pub insecure_no_token: bool,
}

impl AccessArgs {
    /// The token to require when serving `listen`, checked before anything starts.
    ///
    /// # Errors
    /// An empty or malformed token (see [`validate_token`]); a non-loopback `listen` without a
    /// token or `--insecure-no-token`.
    pub fn token_for(&self, listen: SocketAddr) -> CliResult<Option<String>> {
        match &self.ui_token {
            Some(token) => {
                validate_token(token)?;
                Ok(Some(token.clone()))
            }
            None if listen.ip().is_loopback() => Ok(None),
            None if self.insecure_no_token => {
                tracing::warn!(%listen, "dashboard served without an access token");
                eprintln!(
                    "warning: the dashboard on {listen} has no access token \
                     (--insecure-no-token): anyone who reaches it reads the cluster, every \
                     actor's history and the live events"
                );
                Ok(None)
            }
            None => Err(CliError::new(format!(
                "refusing to serve the dashboard on {listen} without an access token: anyone \
                 who reaches it would read the cluster, every actor's history and the live \
                 events. Set --ui-token (or AETHER_UI_TOKEN), listen on 127.0.0.1, or pass \
                 --insecure-no-token to accept that"
            ))),
        }
    }
}

/// Arguments of `aether ui`.
#[derive(Debug, Clone, Args)]
pub struct UiArgs {
    /// Address to serve on (loopback by default; any other needs --ui-token or
    /// --insecure-no-token).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Who may look.
    #[command(flatten)]
    pub access: AccessArgs,
    /// The cluster to show.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster: String,
    /// The key-value bucket holding the projections' state.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROJECTION_BUCKET)]
    pub bucket: String,
    /// Subject prefix of the bus (for the live tail).
    #[arg(long, value_name = "P", default_value = DEFAULT_SUBJECT_PREFIX)]
    pub prefix: String,
    /// The timers stream (for the timers page).
    #[arg(long, value_name = "NAME", default_value_t = TimersConfig::default().stream)]
    pub timers_stream: String,
    /// Subject prefix of the timers stream.
    #[arg(long, value_name = "P", default_value_t = TimersConfig::default().prefix)]
    pub timers_prefix: String,
    /// The reactor's projection name (its backlog, on the timers page).
    #[arg(long, value_name = "NAME", default_value_t = crate::timers::default_reactor())]
    pub reactor: String,
    /// The event stream to show.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What a dashboard shows, who may look, and how much it holds for them.
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
    /// The timers stream (its `stream` and `prefix`; the dispatchers' `consumer`).
    pub timers: TimersConfig,
    /// The reactor's projection name, whose backlog the timers page shows.
    pub reactor: String,
    /// The access token, if one is required (see [`validate_token`]). Without one, only
    /// requests for a loopback name or the connection's own address get an answer.
    pub token: Option<String>,
    /// The metrics to serve on `/metrics` (the handle of the Prometheus recorder the process
    /// installed); `None` serves only a note that none is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Live tails open at once; more are refused with a 503.
    pub max_tails: usize,
    /// Events a live tail holds for a page that does not read them; beyond, the newest are
    /// dropped and the page told how many.
    pub tail_buffer: usize,
    /// Nodes the cluster page remembers from their heartbeats (the observer's
    /// [`max_members`](aether_cluster::ObserverConfig::max_members)); when full, those heard
    /// longest ago make room, never the members of the shard table.
    pub max_heard_nodes: usize,
    /// How long a node that stopped sending heartbeats is remembered.
    pub forget_silent_after: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER_NAME.into(),
            stream: StreamArgs::default(),
            bucket: DEFAULT_PROJECTION_BUCKET.into(),
            prefix: DEFAULT_SUBJECT_PREFIX.into(),
            timers: TimersConfig::default(),
            reactor: crate::timers::default_reactor(),
            token: None,
            metrics: None,
            max_tails: DEFAULT_MAX_TAILS,
            tail_buffer: DEFAULT_TAIL_BUFFER,
            max_heard_nodes: DEFAULT_MAX_HEARD_NODES,
            forget_silent_after: DEFAULT_FORGET_SILENT_AFTER,
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
    /// until `shutdown` is cancelled, which also ends its live tails.
    ///
    /// # Errors
    /// A bad cluster name, prefix, namespace or token; the bus failing to start.
    pub async fn start(
        client: async_nats::Client,
        config: DashboardConfig,
        shutdown: CancellationToken,
    ) -> CliResult<Self> {
        aether_placement::validate_name("cluster name", &config.cluster)?;
        let access = access::Access::new(config.token.clone())?;
        let bus = NatsEventBus::new(
            client.clone(),
            NatsBusConfig::default().subject_prefix(config.prefix.clone()),
        )
        .await?;
        let state = Arc::new(api::Shared::new(
            client,
            config,
            access,
            bus,
            shutdown.clone(),
        ));
        sampler::spawn(state.clone(), shutdown);
        Ok(Self { state })
    }

    /// The routes: the page and its assets, `/api/...`, `/metrics`, behind the access check.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(asset_index))
            .route("/app.js", get(asset_js))
            .route("/style.css", get(asset_css))
            .route("/api/cluster", get(api::cluster))
            .route("/api/stream", get(api::stream))
            .route("/api/actors/{id}", get(api::actor))
            .route("/api/tail", get(api::tail))
            .route("/api/projections", get(projections::projections))
            .route("/api/timers", get(timers::timers))
            .route("/metrics", get(api::metrics))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                access::authorize,
            ))
            .with_state(self.state.clone())
    }
}

/// Serves a dashboard over `client` on `listen` until Ctrl-C, saying where on stdout: what
/// `aether ui` and `aether demo --ui` do once connected.
///
/// # Errors
/// A refused or malformed token (see [`AccessArgs::token_for`]), an address in use, the
/// dashboard failing to start.
pub async fn serve_until_ctrl_c(
    client: async_nats::Client,
    config: DashboardConfig,
    listen: SocketAddr,
    what: &str,
) -> CliResult<()> {
    let shutdown = CancellationToken::new();
    let dashboard = Dashboard::start(client, config, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::context(format!("listening on {listen}"), &e))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::context("reading the listening address", &e))?;
    println!("dashboard on http://{address}/{what}");
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

/// How many messages each of the dashboard's subscriptions buffers in the NATS client before
/// dropping (the client's default is 65 536). Live tails fall behind when their readers stall;
/// with the default, a burst of large events could hold hundreds of MiB there before the
/// tail's own small buffer sees them. Drops show as lag on the tail.
pub const SUBSCRIPTION_CAPACITY: usize = 1024;

/// Runs `aether ui` until Ctrl-C.
///
/// # Errors
/// A refused or malformed token (checked before connecting), connection failures, an address
/// in use, bad options.
pub async fn run(args: UiArgs) -> CliResult<()> {
    let token = args.access.token_for(args.listen)?;
    let metrics = prometheus_builder()
        .install_recorder()
        .map_err(|e| CliError::new(format!("installing the metrics recorder: {e}")))?;
    let client = args
        .connect
        .connect_with_capacity(SUBSCRIPTION_CAPACITY)
        .await?;
    // A --partitions that disagrees with the streams is a mistake to say at once, not on
    // every page; a store that does not exist yet may come.
    if args.stream.partitions.is_some() {
        let context = async_nats::jetstream::new(client.clone());
        if let Err(aether_core::Error::InvalidInput(m)) = args.stream.find(&context).await {
            return Err(CliError::new(m));
        }
    }
    let config = DashboardConfig {
        cluster: args.cluster,
        stream: args.stream,
        bucket: args.bucket,
        prefix: args.prefix,
        timers: TimersConfig {
            stream: args.timers_stream,
            prefix: args.timers_prefix,
            ..TimersConfig::default()
        },
        reactor: args.reactor,
        token,
        metrics: Some(metrics),
        ..DashboardConfig::default()
    };
    serve_until_ctrl_c(client, config, args.listen, " (Ctrl-C to stop)").await
}

/// Headers every page and asset carries: scripts and styles from this origin only, no
/// framing, no `Referer` to anyone.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                 frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
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
