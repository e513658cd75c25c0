//! Servers that require credentials: the JetStream store connects with the right ones,
//! fail clearly with wrong ones, and a user whose permissions deny a namespace's subjects can
//! neither read nor write that namespace through Aether.
#![cfg(feature = "jetstream")]

use std::time::Duration;

use aether_core::{Error, Event, EventStore, JetStreamConfig, SnapshotStore};
use aether_store::JetStreamEventStore;
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
    let context = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client);
    JetStreamEventStore::from_context(context, JetStreamConfig::default().namespace(namespace))
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
/// subjects nor the JetStream API for its stream.
fn permissions_config() -> String {
    let stream =
        JetStreamEventStore::stream_name_for(&JetStreamConfig::default().namespace("secret"));
    format!(
        r#"
authorization {{
  users = [
    {{ user: admin, password: admin }}
    {{ user: tenant, password: tenant, permissions: {{
        publish: {{ deny: ["{stream}.>", "$JS.API.*.*.{stream}", "$JS.API.*.*.{stream}.>", "$JS.API.DIRECT.GET.{stream}", "$JS.API.DIRECT.GET.{stream}.>"] }}
        subscribe: {{ deny: ["{stream}.>"] }}
    }} }}
  ]
}}
"#
    )
}

#[tokio::test]
async fn denied_namespace_cannot_be_read_or_written() {
    let server = NatsServer::builder()
        .extra_config(permissions_config())
        .start()
        .unwrap();
    let url = server.url();
    let admin = connect(
        &url,
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into()),
    )
    .await
    .unwrap();
    let secret = store_with(admin.clone(), "secret").await.unwrap();
    secret
        .save_event(&Event::new("T", "vault", 1).with_field("pin", 1234))
        .await
        .unwrap();
    let tenant = connect(
        &url,
        async_nats::ConnectOptions::with_user_and_password("tenant".into(), "tenant".into()),
    )
    .await
    .unwrap();

    // The tenant's own namespace works.
    let own = store_with(tenant.clone(), "mine").await.unwrap();
    own.save_event(&Event::new("T", "vault", 1)).await.unwrap();
    assert_eq!(own.get_events("vault", 0).await.unwrap().len(), 1);

    // Opening the denied namespace fails with an error, not a store.
    let started = std::time::Instant::now();
    let err = store_with(tenant.clone(), "secret").await.unwrap_err();
    eprintln!(
        "opening a denied namespace: {err} / {err:?} after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::PermissionDenied { .. } | Error::Unavailable { .. } | Error::Backend { .. }
        ),
        "{err:?}"
    );

    // Nothing of it leaked and nothing was written: the admin still sees exactly one event.
    assert_eq!(secret.get_events("vault", 0).await.unwrap().len(), 1);
    assert_eq!(secret.stream_info().await.unwrap().state.messages, 1);

    let _ = SnapshotStore::get_latest_snapshot(&secret, "vault")
        .await
        .unwrap();
}
