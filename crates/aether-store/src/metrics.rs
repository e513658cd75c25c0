//! The stores' metrics, through the `metrics` facade: an application exports them with the
//! exporter it installs (Prometheus, StatsD...); without one they cost a few nanoseconds.
//!
//! - `aether_store_operations_total{store, op, outcome}`: every operation, `outcome` one of
//!   `ok`, `conflict` (a version or transaction conflict) or `error`.
//! - `aether_store_errors_total{store, op, kind}`: failed operations by error kind
//!   ([`aether_core::Error::kind`]), conflicts included.
//! - `aether_store_events_saved_total{store}`: events appended (saves, batches, commits).
//! - `aether_store_operation_seconds{store, op}`: latency histogram of every operation.

use std::time::Instant;

use aether_core::{Error, Result};

/// Records one finished operation of `store` (`memory`, `jetstream`): its outcome and its
/// latency since `started`.
pub(crate) fn record<T>(
    store: &'static str,
    op: &'static str,
    started: Instant,
    result: &Result<T>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(Error::VersionConflict(_) | Error::TransactionConflict(_)) => "conflict",
        Err(_) => "error",
    };
    metrics::counter!("aether_store_operations_total", "store" => store, "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("aether_store_operation_seconds", "store" => store, "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = result {
        metrics::counter!("aether_store_errors_total", "store" => store, "op" => op, "kind" => e.kind())
            .increment(1);
    }
}

/// Records `result` of an operation that saved `events` when it succeeded.
pub(crate) fn saved<T>(store: &'static str, events: usize, result: &Result<T>) {
    if result.is_ok() && events > 0 {
        metrics::counter!("aether_store_events_saved_total", "store" => store)
            .increment(events as u64);
    }
}

/// Runs `op` and records it (see [`record`]). Only the JetStream store's operations are
/// futures worth timing this way; the in-memory store records its own.
#[cfg(feature = "nats")]
pub(crate) async fn timed<T>(
    store: &'static str,
    name: &'static str,
    op: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = op.await;
    record(store, name, started, &result);
    result
}
