//! Publishing one message with the expected last sequence of its subject, and how its
//! failures are told apart. The save path and transactions build on it, so
//! it sits below them.

use aether_core::Error;
use aether_nats::backend::{classify, has_api_code};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::ErrorCode;

use super::super::codec;
use super::StreamStore;

/// Why a publish stored nothing (as far as its answer tells).
pub(super) enum PublishFailure {
    /// The actor's last message is not the one the publish expected.
    WrongLastSequence,
    /// Anything else: refused, or unanswered (then it may be stored after all).
    Other(Error),
}

impl StreamStore {
    /// Publishes one message with the expected last sequence of its subject and waits for
    /// the server's acknowledgement: the stream sequence it was stored at.
    pub(super) async fn publish(
        &self,
        subject: &async_nats::Subject,
        payload: &bytes::Bytes,
        headers: &async_nats::HeaderMap,
        expected_seq: u64,
    ) -> std::result::Result<u64, PublishFailure> {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers.clone())
            .expected_last_subject_sequence(expected_seq);
        let context = || format!("publishing to {subject} on stream {}", self.stream_name);
        let result = match self.context.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => Ok(ack.sequence),
            Err(e) => Err(match e.kind() {
                PublishErrorKind::WrongLastSequence => PublishFailure::WrongLastSequence,
                // Clustered streams answer with the "constant" variant of the error (10164),
                // which the client does not sort as wrong-last-sequence.
                _ if has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
                    || has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) =>
                {
                    PublishFailure::WrongLastSequence
                }
                PublishErrorKind::StreamNotFound => {
                    return Err(PublishFailure::Other(
                        Box::pin(self.missing_or_unavailable(context(), "no stream answered"))
                            .await,
                    ));
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    PublishFailure::Other(Error::PayloadTooLarge {
                        size: codec::wire_size(headers, payload.len()),
                        limit: self.client.max_payload(),
                    })
                }
                PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::MaxAckPending => {
                    PublishFailure::Other(Error::unavailable(context(), e))
                }
                _ => PublishFailure::Other(classify(context(), e)),
            }),
        }
    }
}
