//! The publishing side: each message numbered per namespace and sent through core NATS or,
//! with a stream, JetStream with its acknowledgement. Apart from the bus's setup because the
//! numbering must stay atomic with the send, which is the subtle part.

use aether_core::{Error, Event, Result};
use aether_nats::Operation;
use bytes::Bytes;

use super::super::config::WireFormat;
use super::frame;
use super::{NamespaceSlot, NatsEventBus};

/// An event encoded for the wire, before its sequence number is known.
pub(super) enum Body {
    /// A frame whose sequence number is still to be set.
    Frame(Vec<u8>),
    /// The event's JSON; the number goes into headers.
    Json(Bytes),
}

impl NatsEventBus {
    /// Encodes `event` in the bus's wire format. Done before the namespace's number is taken,
    /// so that encoding does not hold up other publishers to the namespace.
    pub(super) fn encode(&self, event: &Event) -> Result<Body> {
        match self.inner.config.wire_format {
            WireFormat::Framed => Ok(Body::Frame(frame::encode(
                &self.inner.ctx.publisher_id,
                0,
                event,
            )?)),
            WireFormat::Headers => Ok(Body::Json(Bytes::from(event.to_json_bytes()?))),
        }
    }

    pub(super) async fn send(
        &self,
        namespace: &str,
        slot: &NamespaceSlot,
        body: Body,
    ) -> Result<()> {
        let inner = &self.inner;
        let subject = slot.subject.clone();
        let mut last = slot.last.lock().await;
        let seq = *last + 1;
        let client = inner.connection.client();
        let limit = client.max_payload();
        let publisher = inner.ctx.publisher_id.as_str();
        let (payload, headers, size) = match body {
            Body::Frame(mut frame) => {
                frame::set_seq(&mut frame, publisher.len(), seq);
                let size = frame.len();
                (Bytes::from(frame), None, size)
            }
            Body::Json(json) => {
                let size = json.len() + frame::header_wire_len(publisher, seq);
                (json, Some(frame::headers(publisher, seq)), size)
            }
        };
        if limit > 0 && size > limit {
            return Err(Error::PayloadTooLarge { size, limit });
        }
        let context = || format!("publishing to namespace {namespace:?}");
        match &inner.jetstream {
            None => {
                let sent = match headers {
                    None => client.publish(subject, payload).await,
                    Some(h) => client.publish_with_headers(subject, h, payload).await,
                };
                if let Err(e) = sent {
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
                        |op, s| op == Operation::Publish && s == refused.as_str(),
                        Some(inner.config.timeout()),
                        async {
                            let ack = match headers {
                                None => js.publish(subject, payload).await,
                                Some(h) => js.publish_with_headers(subject, h, payload).await,
                            }
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
