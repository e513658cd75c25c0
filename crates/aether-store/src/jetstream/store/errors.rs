//! Helpers that sort what the NATS client reports: which permission refusals doom an
//! operation, whether an error chain means "no responders", and a wrapper that lets the
//! client's boxed errors be classified. Shared by the open, read and replay paths.

use std::fmt;

use aether_nats::backend::JsSubject;

/// Wraps the client's boxed errors so they can be classified and kept as a source.
#[derive(Debug)]
pub(super) struct BoxedCause(pub(super) async_nats::Error);

impl fmt::Display for BoxedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BoxedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

pub(super) fn no_responders(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<async_nats::RequestError>() {
            if r.kind() == async_nats::RequestErrorKind::NoResponders {
                return true;
            }
        }
        current = err.source();
    }
    false
}

/// Whether the server refusing `subject` means an operation of this stream, on the actor with
/// the data subjects `own` (events, snapshots) or on the whole stream (`None`), can never be
/// answered: the actor's own subjects when the operation `writes` (a read never publishes to
/// them, so a concurrent refused save must not fail it), and JetStream API subjects naming the stream that are
/// either about the actor's subjects or about no data subject at all (stream info, message
/// gets, pulls). Deleting a replay consumer is best effort, so refusing it is not fatal.
pub(crate) fn dooms(
    subject: &str,
    stream_name: &str,
    own: Option<(&str, &str)>,
    writes: bool,
) -> bool {
    if let (true, Some((events, snapshots))) = (writes, own) {
        if subject == events || subject == snapshots {
            return true;
        }
    }
    let Some(api) = JsSubject::parse(subject) else {
        return false;
    };
    if !api.is_api() || !api.concerns_stream(stream_name) || api.is_consumer_delete() {
        return false;
    }
    match (api.subject, own) {
        (None, _) | (Some(_), None) => true,
        (Some(data), Some((events, snapshots))) => data == events || data == snapshots,
    }
}
