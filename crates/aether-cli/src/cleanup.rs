//! Undoing what a command created when it fails or is interrupted: Ctrl-C as a future to race
//! the work against, and the removal of the streams the command created. `aether restore` and
//! `aether repartition` use both.

use std::time::Duration;

use aether_nats::backend::has_api_code;
use async_nats::jetstream::{Context, ErrorCode};

use crate::output::escape;

/// How long removing one created stream may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Returns when Ctrl-C is pressed; never, when the signal cannot be watched.
pub(crate) async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What [`remove_streams`] did, the names escaped for the terminal.
pub(crate) struct Removed {
    /// Deleted now.
    pub deleted: Vec<String>,
    /// Still there: deleting them failed or timed out.
    pub left: Vec<String>,
}

/// Deletes the streams `names`, each within a few seconds; a stream already gone counts as
/// neither deleted nor left.
pub(crate) async fn remove_streams(context: &Context, names: &[String]) -> Removed {
    let mut removed = Removed {
        deleted: Vec::new(),
        left: Vec::new(),
    };
    for name in names {
        match tokio::time::timeout(REMOVE_TIMEOUT, context.delete_stream(name)).await {
            Ok(Ok(_)) => removed.deleted.push(escape(name).into_owned()),
            Ok(Err(e)) if has_api_code(&e, ErrorCode::STREAM_NOT_FOUND) => {}
            _ => removed.left.push(escape(name).into_owned()),
        }
    }
    removed
}
