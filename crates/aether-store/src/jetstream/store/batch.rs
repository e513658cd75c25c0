//! Sending one atomic batch (nats-server 2.12+): every message but the last published without
//! waiting, the last carrying the commit and waiting for the server's single acknowledgement.
//! Transactions send their messages through here.

use std::sync::atomic::Ordering;

use aether_core::Error;
use aether_nats::backend::has_api_code;
use async_nats::header::{HeaderMap, NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID};
use async_nats::header::{NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::ErrorCode;
use async_nats::Subject;
use bytes::Bytes;

use super::publish::PublishFailure;
use super::StreamStore;

/// What the server acknowledged for a committed batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ack {
    /// The stream sequence of the batch's last message.
    pub(super) sequence: u64,
    /// How many messages the batch stored, as the server reports it.
    pub(super) count: Option<u64>,
}

impl Ack {
    /// The stream sequence of the first of `count` messages, when the acknowledgement confirms
    /// that the batch was stored as `count` consecutive messages.
    pub(super) fn first_sequence(&self, count: usize) -> Option<u64> {
        let count = count as u64;
        (self.count == Some(count) && self.sequence >= count).then(|| self.sequence + 1 - count)
    }
}

/// One message of a batch.
pub(super) struct BatchMessage {
    pub(super) subject: Subject,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
    /// The expected last sequence of the message's subject, when the message carries the
    /// check (only the first message of each subject may).
    pub(super) expected_seq: Option<u64>,
}

impl StreamStore {
    /// Publishes `messages` as the atomic batch `batch_id` and waits for the commit's
    /// acknowledgement. `operation` names what is committed, for errors.
    pub(super) async fn send_batch(
        &self,
        batch_id: &str,
        messages: Vec<BatchMessage>,
        operation: &(dyn Fn() -> String + Sync),
    ) -> Result<Ack, PublishFailure> {
        let context = || format!("{} on stream {}", operation(), self.stream_name);
        let count = messages.len();
        for (n, message) in messages.into_iter().enumerate() {
            let BatchMessage {
                subject,
                mut headers,
                payload,
                expected_seq,
            } = message;
            headers.insert(NATS_BATCH_ID, batch_id);
            headers.insert(NATS_BATCH_SEQUENCE, (n + 1).to_string().as_str());
            if let Some(seq) = expected_seq {
                headers.insert(
                    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    seq.to_string().as_str(),
                );
            }
            if n + 1 < count {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| PublishFailure::Other(Error::unavailable(context(), e)))?;
                continue;
            }
            headers.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
            let message = PublishMessage::build().payload(payload).headers(headers);
            let result = match self.context.send_publish(subject, message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            return match result {
                Ok(ack) => Ok(Ack {
                    sequence: ack.sequence,
                    count: ack.batch_size,
                }),
                // No stream answered: gone, or (replicated) electing a leader.
                Err(e) if matches!(e.kind(), PublishErrorKind::StreamNotFound) => {
                    Err(PublishFailure::Other(
                        self.missing_or_unavailable(context(), "no stream answered")
                            .await,
                    ))
                }
                Err(e) => Err(self.sort_batch_error(e, context(), operation)),
            };
        }
        Err(PublishFailure::Other(Error::invalid(format!(
            "{} has no events",
            operation()
        ))))
    }

    fn sort_batch_error(
        &self,
        e: async_nats::jetstream::context::PublishError,
        context: String,
        operation: &(dyn Fn() -> String + Sync),
    ) -> PublishFailure {
        use async_nats::jetstream::context::PublishErrorKind as Kind;
        if matches!(e.kind(), Kind::WrongLastSequence)
            || has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE)
            || has_api_code(&e, ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT)
        {
            return PublishFailure::WrongLastSequence;
        }
        if has_api_code(&e, ErrorCode::ATOMIC_PUBLISH_DISABLED) {
            self.atomic.store(false, Ordering::Release);
            return PublishFailure::Other(Error::unsupported(
                operation(),
                format!("stream {} does not allow atomic publish", self.stream_name),
            ));
        }
        if has_api_code(&e, ErrorCode::ATOMIC_PUBLISH_TOO_LARGE_BATCH) {
            return PublishFailure::Other(Error::invalid(format!(
                "{} has more events than the server allows in one atomic batch",
                operation()
            )));
        }
        match e.kind() {
            Kind::TimedOut | Kind::BrokenPipe | Kind::MaxAckPending => {
                PublishFailure::Other(Error::unavailable(context, e))
            }
            _ => PublishFailure::Other(aether_nats::backend::classify(context, e)),
        }
    }
}
