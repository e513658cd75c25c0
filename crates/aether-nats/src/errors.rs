//! Sorting `async-nats` errors into typed [`aether_core::Error`] variants.
//!
//! The client has one error type per operation; what callers need to know is the same for all
//! of them: retry later ([`Error::Unavailable`]), fix permissions
//! ([`Error::PermissionDenied`]), a resource is missing ([`Error::NotFound`]) or something else
//! went wrong ([`Error::Backend`]). The cause is kept as the `source`.

use std::error::Error as StdError;
use std::fmt::Display;

use aether_core::Error;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::context::{
    ConsumerInfoError, ConsumerInfoErrorKind, RequestError as JsRequestError, RequestErrorKind,
};
use async_nats::jetstream::ErrorCode;

/// An operation that got no answer in time, as [`Error::Unavailable`] (retryable) with
/// `context`.
pub fn timeout_error(context: impl Into<String>) -> Error {
    Error::unavailable(
        context.into(),
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from NATS in time"),
    )
}

/// JetStream API error: stream not found.
const STREAM_NOT_FOUND: ErrorCode = ErrorCode::STREAM_NOT_FOUND;

/// Sorts any client error by walking its chain of causes.
pub fn classify<E>(context: impl Display, err: E) -> Error
where
    E: StdError + Send + Sync + 'static,
{
    let context = context.to_string();
    match kind_of(&err) {
        Kind::Unavailable => Error::unavailable(context, err),
        Kind::PermissionDenied => Error::PermissionDenied {
            context,
            source: Box::new(err),
        },
        Kind::StorageFull => Error::StorageFull {
            context,
            source: Box::new(err),
        },
        Kind::NotFound => Error::NotFound(format!("{context}: {err}")),
        Kind::Other => Error::backend(context, err),
    }
}

/// Like [`classify`], for client errors that carry the JetStream API error in their kind
/// rather than as a source.
pub fn classify_api<E>(
    context: impl Display,
    api: Option<&async_nats::jetstream::Error>,
    err: E,
) -> Error
where
    E: StdError + Send + Sync + 'static,
{
    let context = context.to_string();
    match api.map(api_error_kind) {
        Some(Kind::Unavailable) => Error::unavailable(context, err),
        Some(Kind::PermissionDenied) => Error::PermissionDenied {
            context,
            source: Box::new(err),
        },
        Some(Kind::StorageFull) => Error::StorageFull {
            context,
            source: Box::new(err),
        },
        Some(Kind::NotFound) => Error::NotFound(format!("{context}: {err}")),
        Some(Kind::Other) | None => classify(context, err),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unavailable,
    PermissionDenied,
    StorageFull,
    NotFound,
    Other,
}

fn kind_of(err: &(dyn StdError + 'static)) -> Kind {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(k) = kind_of_one(e) {
            return k;
        }
        current = e.source();
    }
    Kind::Other
}

fn kind_of_one(e: &(dyn StdError + 'static)) -> Option<Kind> {
    if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
        return Some(api_error_kind(api));
    }
    if let Some(req) = e.downcast_ref::<JsRequestError>() {
        return match req.kind() {
            RequestErrorKind::TimedOut | RequestErrorKind::NoResponders => Some(Kind::Unavailable),
            RequestErrorKind::InvalidSubject | RequestErrorKind::Other => None,
        };
    }
    if let Some(req) = e.downcast_ref::<async_nats::RequestError>() {
        return match req.kind() {
            async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders => {
                Some(Kind::Unavailable)
            }
            _ => None,
        };
    }
    if let Some(m) = e.downcast_ref::<pull::MessagesError>() {
        // The replay consumer went away with the server holding it, or the stream has no
        // leader for the moment: a new consumer on a live server will do.
        return match m.kind() {
            MessagesErrorKind::MissingHeartbeat
            | MessagesErrorKind::ConsumerDeleted
            | MessagesErrorKind::NoResponders
            | MessagesErrorKind::Pull => Some(Kind::Unavailable),
            _ => None,
        };
    }
    if let Some(c) = e.downcast_ref::<ConsumerInfoError>() {
        // The client turns the server's answer into a kind and drops it: sort by the kind. A
        // consumer that is gone or offline went with the server that held it (Aether's
        // consumers are short-lived or recreated on demand): a new one on a live server will
        // do. A missing stream is missing.
        return match c.kind() {
            ConsumerInfoErrorKind::NotFound
            | ConsumerInfoErrorKind::Offline
            | ConsumerInfoErrorKind::TimedOut
            | ConsumerInfoErrorKind::NoResponders => Some(Kind::Unavailable),
            ConsumerInfoErrorKind::StreamNotFound => Some(Kind::NotFound),
            ConsumerInfoErrorKind::JetStream(api) => Some(api_error_kind(&api)),
            ConsumerInfoErrorKind::InvalidName | ConsumerInfoErrorKind::Request => None,
        };
    }
    if e.is::<std::io::Error>() || e.is::<tokio::time::error::Elapsed>() {
        return Some(Kind::Unavailable);
    }
    // The per-operation error kinds all print a "timed out" kind for timeouts; errors without a
    // typed cause are sorted by that wording as a last resort.
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("timed out") || text.contains("broken pipe") || text.contains("disconnected") {
        return Some(Kind::Unavailable);
    }
    if text.contains("permission") || text.contains("authorization") {
        return Some(Kind::PermissionDenied);
    }
    None
}

/// JetStream API errors that say the server has no room for the write: account resources
/// exceeded (10002), insufficient resources (10023), insufficient storage (10047) and memory
/// (10028).
const STORAGE_FULL: [ErrorCode; 4] = [
    ErrorCode(10002),
    ErrorCode(10023),
    ErrorCode(10047),
    ErrorCode(10028),
];

fn api_error_kind(api: &async_nats::jetstream::Error) -> Kind {
    let code = api.error_code();
    if STORAGE_FULL.contains(&code) {
        // Checked first: "insufficient resources" comes with status 503, yet retrying does
        // not help until space is freed.
        Kind::StorageFull
    } else if code == STREAM_NOT_FOUND || api.code() == 404 {
        Kind::NotFound
    } else if api.code() == 503
        // A cluster that is still forming or has lost peers: worth retrying.
        || code == ErrorCode::CLUSTER_NOT_AVAILABLE
        || code == ErrorCode::CLUSTER_NO_PEERS
    {
        Kind::Unavailable
    } else if api.code() == 403 {
        Kind::PermissionDenied
    } else {
        Kind::Other
    }
}

/// Whether the error is a JetStream API error with `code`.
pub fn has_api_code(err: &(dyn StdError + 'static), code: ErrorCode) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            if api.error_code() == code {
                return true;
            }
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_no_responders_are_unavailable() {
        let e = classify("reading", JsRequestError::new(RequestErrorKind::TimedOut));
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("reading"));
        let e = classify("x", JsRequestError::new(RequestErrorKind::NoResponders));
        assert!(matches!(e, Error::Unavailable { .. }));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(matches!(classify("x", io), Error::Unavailable { .. }));
    }

    #[test]
    fn a_lost_replay_consumer_is_unavailable() {
        for kind in [
            MessagesErrorKind::MissingHeartbeat,
            MessagesErrorKind::ConsumerDeleted,
            MessagesErrorKind::NoResponders,
        ] {
            let e = classify("replaying", pull::MessagesError::new(kind));
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        }
        let e = classify(
            "replaying",
            pull::MessagesError::new(MessagesErrorKind::PushBasedConsumer),
        );
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    }

    #[test]
    fn a_replay_consumer_gone_with_its_server_is_unavailable() {
        // After a server restart, the consumer a replay was reading no longer exists; asking
        // for its info answers "consumer not found", which is a reason to read again.
        for kind in [
            ConsumerInfoErrorKind::NotFound,
            ConsumerInfoErrorKind::Offline,
            ConsumerInfoErrorKind::TimedOut,
        ] {
            let e = classify("replaying", ConsumerInfoError::new(kind));
            assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
            assert!(e.is_retryable());
        }
        let e = classify(
            "replaying",
            ConsumerInfoError::new(ConsumerInfoErrorKind::StreamNotFound),
        );
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    }

    #[test]
    fn wrapped_causes_are_found() {
        let inner = JsRequestError::new(RequestErrorKind::TimedOut);
        let outer = async_nats::jetstream::context::PublishError::with_source(
            async_nats::jetstream::context::PublishErrorKind::Other,
            inner,
        );
        assert!(matches!(classify("x", outer), Error::Unavailable { .. }));
        let other = async_nats::jetstream::context::PublishError::new(
            async_nats::jetstream::context::PublishErrorKind::Other,
        );
        let e = classify("publishing", other);
        assert!(matches!(e, Error::Backend { .. }));
        assert!(std::error::Error::source(&e).is_some());
    }
}
