//! Servers that require credentials: the JetStream store connects with the right ones,
//! fail clearly with wrong ones, and a user whose permissions deny a namespace's subjects can
//! neither read nor write that namespace through Aether.
#![cfg(feature = "nats")]

use std::time::Duration;

use aether_core::{Error, Event, EventStore, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;

/// Walks an error's sources into one line, for assertions on the cause.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" <- ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out.to_lowercase()
}

async fn connect(
    url: &str,
    options: async_nats::ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    options.connect(url).await
}

async fn store_with(
    client: async_nats::Client,
    namespace: &str,
) -> Result<JetStreamEventStore, Error> {
    JetStreamEventStore::new(
        client,
        JetStreamConfig::default()
            .namespace(namespace)
            .request_timeout(Duration::from_secs(2)),
    )
    .await
}

#[tokio::test]
async fn user_and_password_are_required_and_checked() {
    let server = NatsServer::builder()
        .user_password("aether", "s3cret")
        .start()
        .unwrap();
    let url = server.url();

    // Right credentials: the store works.
    let client = connect(
        &url,
        async_nats::ConnectOptions::with_user_and_password("aether".into(), "s3cret".into()),
    )
    .await
    .unwrap();
    let store = store_with(client, "authed").await.unwrap();
    store.save_event(&Event::new("T", "a", 1)).await.unwrap();
    assert_eq!(store.get_latest_version("a").await.unwrap(), 1);

    // Wrong password, no credentials: the connection is refused with an authorization error.
    for options in [
        async_nats::ConnectOptions::with_user_and_password("aether".into(), "wrong".into()),
        async_nats::ConnectOptions::new(),
    ] {
        let err = connect(&url, options).await.unwrap_err();
        assert_eq!(
            err.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{err}"
        );
    }
    // The store's own `connect` (no credentials) says why it failed.
    let err = JetStreamEventStore::connect(&url, JetStreamConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied { .. }) && !err.is_retryable(),
        "refused credentials must be a permission error: {err:?}"
    );
    assert!(
        chain(&err).contains("authorization"),
        "the error does not say why: {err:?}"
    );
}

#[tokio::test]
async fn token_is_required_and_checked() {
    let server = NatsServer::builder().token("t0ken").start().unwrap();
    let url = server.url();
    let client = connect(&url, async_nats::ConnectOptions::with_token("t0ken".into()))
        .await
        .unwrap();
    let store = store_with(client, "tok").await.unwrap();
    store.save_event(&Event::new("T", "a", 1)).await.unwrap();
    assert_eq!(store.get_events("a", 0).await.unwrap().len(), 1);

    for options in [
        async_nats::ConnectOptions::with_token("nope".into()),
        async_nats::ConnectOptions::new(),
    ] {
        let err = connect(&url, options).await.unwrap_err();
        assert_eq!(
            err.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{err}"
        );
    }
}

/// `admin` may do anything; `tenant` may not touch the `secret` namespace: neither its stream's
/// subjects nor the JetStream API for its stream. `reader` may read the `secret` namespace but
/// not publish to its subjects.
fn permissions_config() -> String {
    let stream = secret_stream();
    format!(
        r#"
authorization {{
  users = [
    {{ user: admin, password: admin }}
    {{ user: tenant, password: tenant, permissions: {{
        publish: {{ deny: ["{stream}.>", "$JS.API.*.*.{stream}", "$JS.API.*.*.{stream}.>", "$JS.API.DIRECT.GET.{stream}", "$JS.API.DIRECT.GET.{stream}.>"] }}
        subscribe: {{ deny: ["{stream}.>"] }}
    }} }}
    {{ user: reader, password: reader, permissions: {{
        publish: {{ deny: ["{stream}.>"] }}
    }} }}
  ]
}}
"#
    )
}

/// The JetStream request timeout of a store opened with `connect_as`: an error that
/// comes sooner was not a timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn secret_stream() -> String {
    JetStreamEventStore::stream_name_for(&JetStreamConfig::default().namespace("secret"))
}

/// Opens a store on its own connection with `options`, as applications with credentials do.
async fn connect_as(
    url: &str,
    options: async_nats::ConnectOptions,
    config: JetStreamConfig,
) -> aether_core::Result<JetStreamEventStore> {
    let connection = aether_nats::Connection::connect(url, options).await?;
    JetStreamEventStore::open(&connection, config).await
}

fn as_user(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(name.into(), name.into())
}

/// Asserts `err` is a permission error that names a subject of the secret stream, and that it
/// came after `took`, sooner than a request timeout: reported when the server refused, not when
/// the request gave up.
fn assert_denied(err: &Error, took: Duration, what: &str) {
    eprintln!("{what}: {err:?} after {took:?}");
    assert!(
        took < REQUEST_TIMEOUT,
        "{what} waited for its timeout ({took:?})"
    );
    assert!(
        matches!(err, Error::PermissionDenied { .. }) && !err.is_retryable(),
        "{what}: expected PermissionDenied, got {err:?}"
    );
    let text = chain(err);
    assert!(
        text.contains(&secret_stream().to_lowercase()) && text.contains("permissions violation"),
        "{what}: the error does not name the refused subject: {text}"
    );
}

#[tokio::test]
async fn denied_namespace_cannot_be_read_or_written() {
    let server = NatsServer::builder()
        .extra_config(permissions_config())
        .start()
        .unwrap();
    let url = server.url();
    let secret = connect_as(
        &url,
        as_user("admin"),
        JetStreamConfig::default().namespace("secret"),
    )
    .await
    .unwrap();
    secret
        .save_event(&Event::new("T", "vault", 1).with_field("pin", 1234))
        .await
        .unwrap();

    // The tenant's own namespace works.
    let own = connect_as(
        &url,
        as_user("tenant"),
        JetStreamConfig::default().namespace("mine"),
    )
    .await
    .unwrap();
    own.save_event(&Event::new("T", "vault", 1)).await.unwrap();
    assert_eq!(own.get_events("vault", 0).await.unwrap().len(), 1);

    // Opening the denied namespace is refused, as a permission error naming the subject.
    let started = std::time::Instant::now();
    let err = connect_as(
        &url,
        as_user("tenant"),
        JetStreamConfig::default().namespace("secret"),
    )
    .await
    .unwrap_err();
    assert_denied(&err, started.elapsed(), "opening the denied namespace");

    // A reader may read the namespace, and its writes are refused as permission errors.
    let reader = connect_as(
        &url,
        as_user("reader"),
        JetStreamConfig::default().namespace("secret"),
    )
    .await
    .unwrap();
    assert_eq!(reader.get_events("vault", 0).await.unwrap().len(), 1);
    assert_eq!(reader.get_latest_version("vault").await.unwrap(), 1);
    // Reads of the same actor running while the save is refused are not failed by it.
    let reader = std::sync::Arc::new(reader);
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let reader = reader.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    assert_eq!(reader.get_events("vault", 0).await.unwrap().len(), 1);
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let err = reader
        .save_event(&Event::new("T", "vault", 2))
        .await
        .unwrap_err();
    assert_denied(&err, started.elapsed(), "saving to the denied namespace");
    for r in reads {
        r.await.unwrap();
    }
    let started = std::time::Instant::now();
    let err = reader
        .save_snapshot(&aether_core::Snapshot::new("vault", 1, Default::default()))
        .await
        .unwrap_err();
    assert_denied(
        &err,
        started.elapsed(),
        "saving a snapshot to the denied namespace",
    );

    // Nothing of it leaked and nothing was written: the admin still sees exactly one event.
    assert_eq!(secret.get_events("vault", 0).await.unwrap().len(), 1);
    assert_eq!(secret.stream_info().await.unwrap().state.messages, 1);
    assert!(SnapshotStore::get_latest_snapshot(&secret, "vault")
        .await
        .unwrap()
        .is_none());
}
