//! NATS permissions: a user the server denies a namespace gets typed permission errors naming
//! the refused subject, instead of publishes that vanish and subscriptions that stay silent.
#![cfg(feature = "nats")]

use std::time::{Duration, Instant};

use crate::nats_support::{next_event, DEADLINE};
use aether_bus::{BusStreamConfig, NatsBusConfig, NatsEventBus, StartFrom};
use aether_core::{Error, Event, EventBroadcaster, SubscriptionFilter};
use aether_nats::Operation;
use aether_testkit::NatsServer;

/// `tenant` may not publish or subscribe to the namespace `secret` (and below) on the default
/// prefix, `reader` may not create consumers on the bus stream; `admin` may do anything.
const USERS: &str = r#"
authorization {
  users = [
    { user: admin, password: admin }
    { user: tenant, password: tenant, permissions: {
        publish: { deny: ["aether.events.secret", "aether.events.secret.>"] }
        subscribe: { deny: ["aether.events.secret", "aether.events.secret.>"] }
    } }
    { user: reader, password: reader, permissions: {
        publish: { deny: ["$JS.API.CONSUMER.CREATE.AETHER_BUS", "$JS.API.CONSUMER.CREATE.AETHER_BUS.>"] }
    } }
  ]
}
"#;

/// Long enough that a refusal reported as a timeout would be obvious.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn server() -> NatsServer {
    NatsServer::builder().extra_config(USERS).start().unwrap()
}

async fn bus_as(server: &NatsServer, user: &str, config: NatsBusConfig) -> NatsEventBus {
    crate::nats_support::connect_with(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password(user.into(), user.into()),
        config.request_timeout(REQUEST_TIMEOUT),
    )
    .await
    .unwrap()
}

fn streamed() -> NatsBusConfig {
    NatsBusConfig::default()
        .jetstream(BusStreamConfig::default().storage(aether_core::StorageKind::Memory))
}

/// The error and its sources, as one string.
fn chain(err: &Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(" / ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[track_caller]
fn assert_denied(result: Result<impl std::fmt::Debug, Error>, subject: &str) {
    match result {
        Err(e @ Error::PermissionDenied { .. }) => {
            assert!(!e.is_retryable());
            let text = chain(&e);
            assert!(text.contains(&format!("{subject:?}")), "{text}");
        }
        other => panic!("expected a permission error naming {subject}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_denied_subscription_fails_naming_its_subject() {
    let server = server();
    let tenant = bus_as(&server, "tenant", NatsBusConfig::default()).await;
    let subject = tenant.subject_for("secret").unwrap();
    assert_eq!(subject, "aether.events.secret");

    assert_denied(tenant.subscribe("secret").await, &subject);
    assert_denied(tenant.subscribe("secret.>").await, "aether.events.secret.>");
    assert_eq!(tenant.subscription_count(), 0);
    let m = tenant.metrics();
    assert_eq!(m.permission_errors, 2);
    assert_eq!(m.active_subscriptions, 0);
    assert_eq!(m.transport_errors, 0, "refusals are not transport errors");
    assert!(tenant
        .monitor()
        .permissions()
        .denied(Operation::Subscribe, &subject)
        .is_some());

    // Allowed subscriptions of the same connection are unaffected.
    let mut own = tenant.subscribe("mine").await.unwrap();
    let admin = bus_as(&server, "admin", NatsBusConfig::default()).await;
    admin
        .publish("mine", &Event::new("T", "a", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut own).await.actor_id, "a");
}

#[tokio::test]
async fn a_denied_publish_fails_once_the_server_reported_it_and_reaches_nobody() {
    let server = server();
    let admin = bus_as(&server, "admin", NatsBusConfig::default()).await;
    let tenant = bus_as(&server, "tenant", NatsBusConfig::default()).await;
    let subject = tenant.subject_for("secret").unwrap();
    let mut watched = admin.subscribe("secret").await.unwrap();

    // Fire-and-forget: the first publish cannot know yet.
    let first = tenant
        .publish("secret", &Event::new("T", "tenant", 1))
        .await;
    assert!(
        matches!(first, Ok(()) | Err(Error::PermissionDenied { .. })),
        "{first:?}"
    );
    tenant.client().flush().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while tenant
        .monitor()
        .permissions()
        .denied(Operation::Publish, &subject)
        .is_none()
    {
        assert!(Instant::now() < deadline, "the refusal was never reported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for version in 2..5 {
        assert_denied(
            tenant
                .publish("secret", &Event::new("T", "tenant", version))
                .await,
            &subject,
        );
    }
    let m = tenant.metrics();
    assert_eq!(m.permission_errors, 1, "refused once by the server");
    assert_eq!(m.transport_errors, 0);
    assert!(m.namespace("secret").published <= 1);

    // The admin's own event is the first thing its subscription gets: nothing of the tenant's
    // arrived.
    let marker = Event::new("Marker", "admin", 1);
    admin.publish("secret", &marker).await.unwrap();
    let got = next_event(&mut watched).await;
    assert_eq!(
        got.id, marker.id,
        "the tenant's refused event arrived: {got:?}"
    );
    assert!(watched.try_recv().is_none());

    // The tenant's own namespace works end to end, both ways.
    let mut tenant_sub = tenant.subscribe("mine").await.unwrap();
    let mut admin_sub = admin.subscribe("mine").await.unwrap();
    tenant
        .publish("mine", &Event::new("T", "t", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut admin_sub).await.actor_id, "t");
    admin
        .publish("mine", &Event::new("T", "a", 1))
        .await
        .unwrap();
    let got = next_event(&mut tenant_sub).await;
    // Its own event came first, locally.
    assert_eq!(got.actor_id, "t");
    assert_eq!(next_event(&mut tenant_sub).await.actor_id, "a");
    assert_eq!(tenant.metrics().permission_errors, 1);
}

#[tokio::test]
async fn an_acknowledged_publish_that_was_refused_is_a_permission_error_at_once() {
    let server = server();
    let admin = bus_as(&server, "admin", streamed()).await;
    let tenant = bus_as(&server, "tenant", streamed()).await;
    let subject = tenant.subject_for("secret").unwrap();

    // Even the first one: the bus waits for an acknowledgement that never comes, and the
    // refusal arrives long before the timeout.
    let started = Instant::now();
    assert_denied(
        tenant.publish("secret", &Event::new("T", "t", 1)).await,
        &subject,
    );
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "waited {:?} for a refusal",
        started.elapsed()
    );
    assert_denied(
        tenant.publish("secret", &Event::new("T", "t", 2)).await,
        &subject,
    );
    assert_eq!(tenant.metrics().permission_errors, 1);
    assert_eq!(tenant.metrics().transport_errors, 0);

    tenant
        .publish("mine", &Event::new("T", "t", 1))
        .await
        .unwrap();
    let mut stored = admin
        .subscribe_durable(">", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, stored.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.namespace, "mine", "a refused event was stored");
    assert_eq!(first.sequence, 1);
}

#[tokio::test]
async fn a_durable_subscription_on_a_denied_namespace_is_refused() {
    let server = server();
    let admin = bus_as(&server, "admin", streamed()).await;
    admin
        .publish("secret", &Event::new("T", "a", 1))
        .await
        .unwrap();
    admin
        .publish("mine", &Event::new("T", "a", 1))
        .await
        .unwrap();
    let tenant = bus_as(&server, "tenant", streamed()).await;

    let started = Instant::now();
    assert_denied(
        tenant
            .subscribe_durable("secret", StartFrom::Beginning, SubscriptionFilter::new())
            .await,
        "aether.events.secret",
    );
    assert!(started.elapsed() < REQUEST_TIMEOUT / 2);
    assert_eq!(tenant.metrics().active_subscriptions, 0);

    let mut own = tenant
        .subscribe_durable("mine", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, own.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.namespace, "mine");
}

#[tokio::test]
async fn a_refused_jetstream_request_is_a_permission_error_not_a_timeout() {
    let server = server();
    let admin = bus_as(&server, "admin", streamed()).await;
    admin
        .publish("mine", &Event::new("T", "a", 1))
        .await
        .unwrap();
    let reader = bus_as(&server, "reader", streamed()).await;

    // Live subscriptions and publishing are allowed; creating a consumer is not.
    let mut live = reader.subscribe("mine").await.unwrap();
    admin
        .publish("mine", &Event::new("T", "a", 2))
        .await
        .unwrap();
    assert_eq!(next_event(&mut live).await.version, 2);

    let started = Instant::now();
    let err = reader
        .subscribe_durable("mine", StartFrom::Beginning, SubscriptionFilter::new())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "waited {:?} for a refusal",
        started.elapsed()
    );
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let text = chain(&err);
    assert!(
        text.contains("\"$JS.API.CONSUMER.CREATE.AETHER_BUS"),
        "{text}"
    );
    assert!(reader.metrics().permission_errors >= 1);
    assert_eq!(
        reader.metrics().active_subscriptions,
        1,
        "the live one only"
    );
}
