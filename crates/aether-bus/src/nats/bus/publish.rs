//! The publishing side: each message numbered per namespace and sent through core NATS or,
//! with a stream, JetStream with its acknowledgement. Apart from the bus's setup because the
//! numbering must stay atomic with the send, which is the subtle part.

use aether_core::{Error, Result};
use aether_nats::Operation;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::gaps::header_wire_len;
use super::{NatsEventBus, HEADER_PUBLISHER, HEADER_SEQUENCE};

impl NatsEventBus {
    pub(super) async fn send(
        &self,
        namespace: &str,
        subject: String,
        payload: Bytes,
    ) -> Result<()> {
        let inner = &self.inner;
        let slot = match inner.sequences.get(namespace) {
            Some(s) => s.clone(),
            None => inner
                .sequences
                .entry(namespace.to_string())
                .or_default()
                .clone(),
        };
        let mut last = slot.lock().await;
        let seq = *last + 1;
        let client = inner.connection.client();
        let limit = client.max_payload();
        let size = payload.len() + header_wire_len(&inner.ctx.publisher_id, seq);
        if limit > 0 && size > limit {
            return Err(Error::PayloadTooLarge { size, limit });
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_PUBLISHER, inner.ctx.publisher_id.as_str());
        headers.insert(HEADER_SEQUENCE, seq.to_string().as_str());
        let context = || format!("publishing to namespace {namespace:?}");
        match &inner.jetstream {
            None => {
                if let Err(e) = client.publish_with_headers(subject, headers, payload).await {
                    inner.ctx.metrics.record_transport_error();
                    return Err(map_publish_error(context(), e, size, limit));
                }
                *last = seq;
                Ok(())
            }
            Some(js) => {
                let context = context();
                let refused = subject.clone();
                // A refused publish gets no acknowledgement: without the guard it would wait
                // for the timeout and look like an unavailable server.
                let acked = inner
                    .connection
                    .permissions()
                    .guard(
                        || context.clone(),
                        |op, s| op == Operation::Publish && s == refused,
                        Some(inner.config.timeout()),
                        async {
                            let ack = js
                                .publish_with_headers(subject, headers, payload)
                                .await
                                .map_err(|e| Error::unavailable(&context, e))?;
                            // The message is on its way: the number is used even if the ack
                            // fails.
                            *last = seq;
                            drop(last);
                            ack.await
                                .map(drop)
                                .map_err(|e| Error::unavailable(&context, e))
                        },
                    )
                    .await;
                if let Err(e) = &acked {
                    if !matches!(e, Error::PermissionDenied { .. }) {
                        inner.ctx.metrics.record_transport_error();
                    }
                }
                acked
            }
        }
    }
}

fn map_publish_error(
    context: String,
    e: async_nats::client::PublishError,
    size: usize,
    limit: usize,
) -> Error {
    match e.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            Error::PayloadTooLarge { size, limit }
        }
        async_nats::client::PublishErrorKind::InvalidSubject => Error::invalid(e),
        _ => Error::unavailable(context, e),
    }
}
