//! Consumers on a real server: each kind reads its filter from its start, a read resumes right
//! after the last sequence handled, and a missing stream is `NotFound`.

use std::time::Duration;

use aether_core::Error;
use aether_nats::backend::{ConsumerSpec, StartAt};
use aether_testkit::NatsServer;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

/// A stream `S` holding `S.a` 1..=3 and `S.b` 1..=2, interleaved: sequences 1 a1, 2 b1, 3 a2,
/// 4 b2, 5 a3.
async fn stream_with_messages(js: &jetstream::Context) -> stream::Stream {
    let s = aether_nats::backend::ensure_stream(
        js,
        stream::Config {
            name: "S".into(),
            subjects: vec!["S.>".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for (subject, payload) in [
        ("S.a", "a1"),
        ("S.b", "b1"),
        ("S.a", "a2"),
        ("S.b", "b2"),
        ("S.a", "a3"),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    s
}

/// `(stream sequence, payload)` of the next `n` messages.
async fn take<S, E>(messages: &mut S, n: usize) -> Vec<(u64, String)>
where
    S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("a message in time")
            .expect("the consumer goes on")
            .expect("a message");
        let seq = msg.info().unwrap().stream_sequence;
        out.push((seq, String::from_utf8_lossy(&msg.payload).into_owned()));
    }
    out
}

#[tokio::test]
async fn each_kind_reads_its_filter_from_its_start_and_resumes() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = stream_with_messages(&js).await;

    // Ephemeral pull, from a sequence.
    let consumer = ConsumerSpec::new("S.a", StartAt::Sequence(2))
        .create_pull(&stream, Duration::from_secs(30), "paging")
        .await
        .unwrap();
    assert_eq!(consumer.cached_info().num_pending, 2);
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    assert_eq!(
        take(&mut batch, 2).await,
        [(3, "a2".into()), (5, "a3".into())]
    );

    // Ordered pull from the first message; then resumed after the one handled.
    let spec = ConsumerSpec::new("S.a", StartAt::First);
    let mut messages = spec.open_ordered_pull(&stream, "reading").await.unwrap();
    assert_eq!(take(&mut messages, 1).await, [(1, "a1".into())]);
    drop(messages);
    let resumed = ConsumerSpec {
        start: spec.start.resume_after(Some(1)),
        ..spec.clone()
    };
    let mut messages = resumed.open_ordered_pull(&stream, "reading").await.unwrap();
    assert_eq!(
        take(&mut messages, 2).await,
        [(3, "a2".into()), (5, "a3".into())]
    );

    // Ordered push, the last message of each subject, headers only.
    let spec = ConsumerSpec::new("S.*", StartAt::LastPerSubject)
        .description("test")
        .headers_only(true);
    let mut messages = spec
        .open_ordered_push(&stream, &client, "watching")
        .await
        .unwrap();
    assert_eq!(
        take(&mut messages, 2).await,
        [(4, String::new()), (5, String::new())]
    );
    // Then new messages.
    js.publish("S.b", "b3".into()).await.unwrap().await.unwrap();
    assert_eq!(take(&mut messages, 1).await, [(6, String::new())]);

    // Only what comes after the creation.
    let mut messages = ConsumerSpec::new("S.b", StartAt::New)
        .open_ordered_pull(&stream, "reading")
        .await
        .unwrap();
    js.publish("S.b", "b4".into()).await.unwrap().await.unwrap();
    assert_eq!(take(&mut messages, 1).await, [(7, "b4".into())]);
}

#[tokio::test]
async fn a_missing_stream_is_not_found() {
    let server = NatsServer::start().expect("nats-server");
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let missing = js.get_stream_no_info("MISSING").await.unwrap();
    let spec = ConsumerSpec::new("MISSING.>", StartAt::First);
    let err = spec
        .create_pull(&missing, Duration::from_secs(30), "paging MISSING")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("paging MISSING"), "{err}");
    let Err(err) = spec.open_ordered_pull(&missing, "reading MISSING").await else {
        panic!("a consumer on a missing stream")
    };
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let Err(err) = spec
        .open_ordered_push(&missing, &client, "watching MISSING")
        .await
    else {
        panic!("a consumer on a missing stream")
    };
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}
