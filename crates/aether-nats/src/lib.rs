//! NATS connection glue shared by Aether's NATS backends (the JetStream event store in
//! `aether-store` and the NATS bus in `aether-bus`).
//!
//! Two things every NATS-backed layer needs and the client does not give directly:
//! - [`connect_error`]: a failed connection sorted into a typed [`aether_core::Error`]; refused
//!   credentials are [`aether_core::Error::PermissionDenied`] (retrying cannot help), anything
//!   else [`aether_core::Error::Unavailable`].
//! - [`PermissionWatch`]: NATS does not answer a denied publish or subscription; the server
//!   drops it and reports a "Permissions Violation" asynchronously, to the connection's event
//!   callback only. Requests to a denied subject therefore just time out. The watch collects
//!   those reports so a backend can tell "denied" from "slow" and say which subject was refused.
//!
//! # Example
//! ```no_run
//! use aether_nats::PermissionWatch;
//!
//! # async fn run() -> Result<(), async_nats::ConnectError> {
//! let watch = PermissionWatch::new();
//! let client = watch
//!     .install(async_nats::ConnectOptions::new())
//!     .connect("nats://127.0.0.1:4222")
//!     .await?;
//! // ... later, after a request to `orders.new` timed out:
//! if let Some(v) = watch.denied(aether_nats::Operation::Publish, "orders.new") {
//!     eprintln!("not a timeout: {v}");
//! }
//! # drop(client);
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod connect;
mod permission;

pub use connect::connect_error;
pub use permission::{Operation, PermissionViolation, PermissionWatch};
